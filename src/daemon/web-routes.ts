// API routes the web manager added: its own administration (listener and
// tokens — on the unix socket only, so a token can never mint tokens or move
// the listener), a dry-run of a domain configuration (the create form
// validates as you type with the very rules `xvm create` applies), and a
// websocket of stats samples for the graphs. Registered by server.ts on both
// the unix socket app and the TCP app (remote=true).
import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import { ConfigError, parseDomainConfigText, validateDomainConfig, type ConfigIssue } from '../config/index.js';
import type { DomainManager } from './domains.js';
import { collectStats } from './metrics.js';
import { parseInput } from './server.js';
import type { WebService } from './web.js';
import { statsStreamQuery, validateDomainBody, webEnableBody, webTokenBody } from '../api/web-types.js';

export interface WebRouteDeps {
  domains: DomainManager;
  web?: WebService;
  remote: boolean;
}

export function registerWebRoutes(app: FastifyInstance, deps: WebRouteDeps): void {
  const { domains } = deps;

  // ---- administration: unix socket only (over TCP: 403)
  const adminRoutes: [('get' | 'put' | 'post' | 'delete'), string][] = [['get', '/v1/web'], ['put', '/v1/web'], ['get', '/v1/web/tokens'], ['post', '/v1/web/tokens'], ['delete', '/v1/web/tokens/:name']];
  if (deps.remote || !deps.web) {
    for (const [method, url] of adminRoutes) {
      app[method](url, async (_req, reply) =>
        deps.remote
          ? reply.code(403).send({ error: { code: 'forbidden', message: "the web manager's listener and tokens are managed on the host only ('xvm web …' over the unix socket)" } })
          : reply.code(503).send({ error: { code: 'unavailable', message: 'this xvmd has no web manager' } }),
      );
    }
  } else {
    const web = deps.web;
    app.get('/v1/web', async () => web.status());
    app.put('/v1/web', async (req) => web.configure(parseInput(webEnableBody, req.body, 'request body')));
    app.get('/v1/web/tokens', async () => web.tokens.list());
    app.post('/v1/web/tokens', async (req) => web.createToken(parseInput(webTokenBody, req.body, 'request body').name));
    app.delete('/v1/web/tokens/:name', async (req) => {
      const { name } = parseInput(z.object({ name: z.string().min(1).max(64) }), req.params, 'token name');
      return { revoked: web.revokeToken(name) };
    });
  }

  // ---- dry run of a domain configuration: 200 with {valid, issues, config}
  app.post('/v1/domains/validate', async (req) => {
    const body = parseInput(validateDomainBody, req.body, 'request body');
    let issues: ConfigIssue[] = [];
    let config: Record<string, unknown> | null = null;
    try {
      const c = body.configText !== undefined ? parseDomainConfigText(body.configText, body.file) : validateDomainConfig(body.config ?? {}, body.file);
      config = c as unknown as Record<string, unknown>;
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      issues = e.issues;
    }
    const name = typeof config?.name === 'string' ? config.name : null;
    if (name && domains.list().some((d) => d.name === name)) issues.push({ key: 'name', message: `a domain named "${name}" exists` });
    return { valid: issues.length === 0, issues, config };
  });

  // ---- stats samples pushed every interval ms while the socket is open
  app.get('/v1/stats/stream', { websocket: true }, (socket: WebSocket, req) => {
    const q = parseInput(statsStreamQuery, req.query, 'query');
    const push = () => {
      void collectStats(domains).then((st) => {
        if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(st));
      });
    };
    push();
    const timer = setInterval(push, q.interval);
    socket.on('close', () => clearInterval(timer));
    socket.on('error', () => clearInterval(timer));
  });
}
