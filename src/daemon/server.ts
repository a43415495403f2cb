// xvmd's REST/JSON API (fastify) on a unix socket, plus websockets for the
// consoles and for state-change events. Routes only translate HTTP to the
// domain manager and back; the OpenAPI document lists them (src/api/openapi.ts).
import fs from 'node:fs';
import os from 'node:os';
import { spawnSync } from 'node:child_process';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import websocket from '@fastify/websocket';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import { XvmError } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';
import * as s from '../api/schema.js';
import { openApiDocument } from '../api/openapi.js';
import { ConfigError } from '../config/index.js';
import { detectAccel } from '../engine/accel.js';
import { QEMU_BINARY } from '../engine/qemu-args.js';
import type { DomainManager } from './domains.js';
import type { Logger } from './log.js';
import { VERSION } from './version.js';
import { registerOpsRoutes } from './ops-routes.js';
import { registerStorageRoutes } from './storage-routes.js';
import { registerHvmRoutes } from './hvm-routes.js';
import { registerNetRoutes } from './net-routes.js';
import { shutdownAll } from './autostart.js';
import { registerMigrateRoutes } from '../migrate/routes.js';
import { registerSavesRoutes } from './saves-routes.js';
import { saveAll } from '../migrate/service.js';
import { deviceEvent } from './device-log.js';
import { registerWebRoutes } from './web-routes.js';
import type { WebService } from './web.js';

export interface ServerDeps {
  paths: StatePaths;
  domains: DomainManager;
  log: Logger;
  startedAt: Date;
  /** The store's xs_wire socket (XENSTORED_PATH for xenstore-utils). */
  storeSocket: string;
  /** Called when a client asks the daemon to stop. */
  onStop: () => void;
  /** The web manager (its listener and tokens: src/daemon/web.ts). */
  web?: WebService;
}

export interface BuildOptions {
  /** Serve HTTPS with this certificate (the web manager's TCP listener). */
  https?: { cert: string; key: string };
  /** The app answers over TCP (web manager): web administration routes refuse. */
  remote?: boolean;
}

/** Validates `value` with a zod schema; failures become a 400 that says what is wrong where. */
export function parseInput<T extends z.ZodType>(schema: T, value: unknown, what: string): z.infer<T> {
  const r = schema.safeParse(value ?? {});
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => {
    const where = i.path.length ? i.path.join('.') : '';
    if (i.code === 'unrecognized_keys') return `unknown field(s) ${i.keys.map((k) => `"${k}"`).join(', ')}`;
    return where ? `${where}: ${i.message}` : i.message;
  });
  throw new XvmError('invalid', `invalid ${what}: ${problems.join('; ')}`, { issues: r.error.issues });
}

let qemuVersionCache: string | null | undefined;
function qemuVersion(): string | null {
  if (qemuVersionCache !== undefined) return qemuVersionCache;
  const r = spawnSync(QEMU_BINARY, ['--version'], { encoding: 'utf8' });
  const m = /version\s+(\S+)/.exec(r.stdout ?? '');
  qemuVersionCache = m ? m[1]! : null;
  return qemuVersionCache;
}

export async function buildServer(deps: ServerDeps, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const { domains, paths, log } = deps;
  const app = Fastify({ logger: false, bodyLimit: 2 << 20, requestIdHeader: 'x-request-id', genReqId: () => Math.random().toString(36).slice(2, 10), ...(opts.https ? { https: opts.https } : {}) }) as unknown as FastifyInstance;
  await app.register(websocket, { options: { maxPayload: 1 << 20 } });

  app.addHook('onResponse', async (req, reply) => {
    log.info('api', { reqId: req.id, method: req.method, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) });
  });

  app.setErrorHandler((err: unknown, req: FastifyRequest, reply: FastifyReply) => {
    let status = 500;
    let body: { code: string; message: string; details?: unknown };
    if (err instanceof XvmError) {
      status = err.status;
      body = { code: err.code, message: err.message };
    } else if (err instanceof ConfigError) {
      status = 400;
      body = { code: 'invalid', message: err.message, details: { issues: err.issues } };
    } else {
      const e = err as { statusCode?: number; code?: string; message?: string };
      if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
        status = e.statusCode;
        const msg = e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || /JSON/.test(e.message ?? '')
          ? `request body is not valid JSON: ${e.message}`
          : e.message ?? 'bad request';
        body = { code: status === 404 ? 'not_found' : 'invalid', message: msg };
      } else {
        body = { code: 'internal', message: e.message ?? String(err) };
        log.error('request failed', { reqId: req.id, url: req.url, error: e.message });
      }
    }
    reply.status(status).send({ error: body });
  });

  app.setNotFoundHandler((req, reply) => {
    reply.status(404).send({ error: { code: 'not_found', message: `no API route ${req.method} ${req.url.split('?')[0]} (see GET /v1/openapi.json)` } });
  });

  const name = (req: FastifyRequest) => parseInput(s.nameParams, req.params, 'domain name').name;

  // Operations and debugging: sysrq, dump-core, gdbstub, autostart, stats, logs, /metrics.
  registerOpsRoutes(app, { paths, domains, log, startedAt: deps.startedAt });
  registerStorageRoutes(app, { paths, domains, log });
  registerHvmRoutes(app, { paths, domains, log });
  registerMigrateRoutes(app, { domains, log, paths });
  registerSavesRoutes(app, { paths });
  registerWebRoutes(app, { domains, web: deps.web, remote: opts.remote ?? false });
  registerNetRoutes(app, { paths, domains, log });

  app.get('/v1/openapi.json', async () => openApiDocument(VERSION));

  app.get('/v1/host', async () => {
    const list = domains.list();
    return {
      version: VERSION,
      hostname: os.hostname(),
      cpus: os.cpus().length,
      memoryMiB: Math.round(os.totalmem() / 1048576),
      freeMemoryMiB: Math.round(os.freemem() / 1048576),
      accel: detectAccel(),
      qemu: { binary: QEMU_BINARY, version: qemuVersion() },
      daemon: {
        pid: process.pid,
        startedAt: deps.startedAt.toISOString(),
        uptimeSec: Math.round((Date.now() - deps.startedAt.getTime()) / 1000),
      },
      paths: { lib: paths.lib, run: paths.run, log: paths.log, apiSocket: paths.apiSocket, images: paths.images },
      domains: { total: list.length, running: list.filter((d) => d.domid !== null).length },
      store: { socket: deps.storeSocket },
    } satisfies s.HostInfo;
  });

  app.get('/v1/domains', async () => domains.list());

  app.post('/v1/domains', async (req) => {
    const body = parseInput(s.createDomainBody, req.body, 'request body');
    let config: unknown = body.config;
    if (body.configText !== undefined) {
      const { parseDomainConfigText } = await import('../config/index.js');
      config = parseDomainConfigText(body.configText, body.file);
    }
    const info = domains.define(config, body.file);
    if (!body.start) return info;
    try {
      return await domains.start(info.name, { paused: body.paused });
    } catch (e) {
      // xm create of a domain that cannot start leaves nothing behind.
      try {
        domains.undefine(info.name);
      } catch {
        /* keep the definition if it cannot go */
      }
      throw e;
    }
  });

  app.get('/v1/domains/:name', async (req) => domains.info(name(req)));

  app.delete('/v1/domains/:name', async (req) => {
    const n = name(req);
    domains.undefine(n);
    return { undefined: n };
  });

  app.post('/v1/domains/:name/start', async (req) => {
    const body = parseInput(s.startBody, req.body, 'request body');
    return domains.start(name(req), { paused: body.paused });
  });
  app.post('/v1/domains/:name/shutdown', async (req) => {
    const body = parseInput(s.shutdownBody, req.body, 'request body');
    return domains.shutdown(name(req), { wait: body.wait, timeoutSec: body.timeout });
  });
  app.post('/v1/domains/:name/reboot', async (req) => {
    const body = parseInput(s.rebootBody, req.body, 'request body');
    return domains.reboot(name(req), { force: body.force, wait: body.wait, timeoutSec: body.timeout });
  });
  for (const verb of ['destroy', 'pause', 'unpause'] as const) {
    app.post(`/v1/domains/:name/${verb}`, async (req) => {
      parseInput(s.emptyBody, req.body, 'request body');
      return domains[verb](name(req));
    });
  }

  app.get('/v1/domains/:name/log', async (req, reply) => {
    const q = parseInput(s.logQuery, req.query, 'query');
    const con = domains.consoleOf(name(req));
    reply.type('text/plain; charset=utf-8');
    return con.tail(q.bytes);
  });

  // Console websocket: binary frames of raw console bytes, both directions.
  app.get(
    '/v1/domains/:name/console',
    {
      websocket: true,
      // Refuse unknown domains with a plain HTTP error before the upgrade.
      preValidation: async (req) => {
        domains.consoleOf(name(req));
        parseInput(s.consoleQuery, req.query, 'query');
      },
    },
    (socket: WebSocket, req: FastifyRequest) => {
      const n = name(req);
      const q = parseInput(s.consoleQuery, req.query, 'query');
      const con = domains.consoleOf(n);
      if (q.history > 0) socket.send(con.tail(q.history));
      const onData = (chunk: Buffer) => {
        if (socket.readyState === socket.OPEN) socket.send(chunk);
      };
      con.on('data', onData);
      socket.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
        const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
        if (!con.write(buf)) {
          socket.send(Buffer.from(`\r\n[xvm] domain ${n} is not running: input dropped\r\n`));
        }
      });
      socket.on('close', () => con.off('data', onData));
      socket.on('error', () => con.off('data', onData));
      log.info('console client attached', { domain: n, reqId: req.id });
      deviceEvent('console-attach', { domain: n, reqId: req.id });
      socket.once('close', () => deviceEvent('console-detach', { domain: n, reqId: req.id }));
    },
  );

  app.get('/v1/events', { websocket: true }, (socket: WebSocket) => {
    const onChange = (info: unknown) => socket.send(JSON.stringify({ type: 'domain', domain: info }));
    const onRemoved = (n: string) => socket.send(JSON.stringify({ type: 'removed', name: n }));
    domains.on('change', onChange);
    domains.on('removed', onRemoved);
    const off = () => {
      domains.off('change', onChange);
      domains.off('removed', onRemoved);
    };
    socket.on('close', off);
    socket.on('error', off);
  });

  app.get('/v1/images/default', async () => {
    const img = await domains.images.get();
    if (!img) throw new XvmError('not_found', "the default guest image is not built yet (run 'xvm image fetch')");
    return img;
  });

  // Builds the image, streaming progress as NDJSON so the CLI can draw a bar.
  app.post('/v1/images/default', async (req, reply) => {
    const q = parseInput(z.object({ force: z.coerce.boolean().default(false) }), req.query, 'query');
    reply.hijack();
    const out = reply.raw;
    out.writeHead(200, { 'content-type': 'application/x-ndjson' });
    try {
      const image = await domains.images.fetch({
        force: q.force,
        onProgress: (p) => out.write(JSON.stringify({ progress: p }) + '\n'),
      });
      out.end(JSON.stringify({ done: true, image }) + '\n');
    } catch (e) {
      const err = e instanceof XvmError ? { code: e.code, message: e.message } : { code: 'internal', message: (e as Error).message };
      out.end(JSON.stringify({ error: err }) + '\n');
    }
  });

  app.post('/v1/daemon/stop', async (req, reply) => {
    const body = parseInput(s.daemonStopBody, req.body, 'request body');
    // --domains=shutdown: every running guest gets the power button, in parallel, with a bounded wait.
    const shutdown = body.domains === 'shutdown' ? await shutdownAll(domains, log, body.timeout) : undefined;
    // --domains=save: every running guest is saved into <lib>/save, in parallel; the next start restores them.
    const saved = body.domains === 'save' ? await saveAll(domains, paths, log, body.timeout) : undefined;
    // Stop once the answer is out: a connection still busy when the server
    // closes would hold xvmd for the keep-alive timeout (5 s).
    reply.raw.once('finish', () => setImmediate(deps.onStop));
    return { stopping: true, pid: process.pid, ...(shutdown ? { shutdown } : {}), ...(saved ? { saved } : {}) };
  });

  return app;
}

/** Listens on the unix socket, readable and writable by the daemon's user only. */
export async function listenUnix(app: FastifyInstance, socketPath: string): Promise<void> {
  fs.rmSync(socketPath, { force: true });
  const old = process.umask(0o177);
  try {
    await app.listen({ path: socketPath });
  } finally {
    process.umask(old);
  }
  fs.chmodSync(socketPath, 0o600);
}
