// The web manager's listener: HTTPS on a TCP port, off unless <lib>/xvmd.json
// says otherwise (`xvm web enable`). It serves the same REST API and
// websockets as the unix socket (a second app from buildServer), the front
// end from dist/web, and admits nobody without a valid access token: either
// `Authorization: Bearer <token>` or the session cookie that
// POST /v1/web/login hands out for a token. Revoking a token ends its sessions.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errorMessage, XvmError } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';
import type { WebStatus } from '../api/web-types.js';
import type { Logger } from './log.js';
import { buildServer, type ServerDeps } from './server.js';
import { TokenStore, type TokenSummary } from './tokens.js';
import { readWebConfig, writeWebConfig, type WebConfig } from './web-config.js';
import { registerStaticFiles, isStaticPath } from './web-static.js';

export const SESSION_COOKIE = 'xvm_session';
const SESSION_TTL_MS = 12 * 3600 * 1000;


interface Session {
  tokenId: string;
  tokenName: string;
  expires: number;
}

export class WebService {
  readonly tokens: TokenStore;
  private config: WebConfig;
  private app: FastifyInstance | undefined;
  private deps: ServerDeps | undefined;
  private sessions = new Map<string, Session>();
  /** Open websockets by token id: revoking a token closes them. */
  private sockets = new Map<string, Set<import('node:net').Socket>>();
  private lastError: string | null = null;
  private certInfo: WebStatus['cert'];

  constructor(private readonly opts: { paths: StatePaths; log: Logger }) {
    this.tokens = new TokenStore(path.join(opts.paths.lib, 'web-tokens.json'));
    try {
      this.config = readWebConfig(opts.paths);
    } catch (e) {
      // A broken xvmd.json keeps the web manager off; xvmd itself still starts.
      this.config = { enabled: false, port: 0, listen: '0.0.0.0' };
      this.lastError = errorMessage(e);
      opts.log.error('web manager off: bad configuration', { error: this.lastError });
    }
    this.certInfo = this.certFiles(this.config);
  }

  private certFiles(c: WebConfig): WebStatus['cert'] {
    const dir = path.join(this.opts.paths.lib, 'web');
    return c.cert && c.key
      ? { file: c.cert, key: c.key, selfSigned: false, fingerprint: null }
      : { file: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem'), selfSigned: true, fingerprint: null };
  }

  /** Starts the listener if the configuration enables it. Failures are logged and shown by status, never fatal. */
  async start(deps: ServerDeps): Promise<void> {
    this.deps = deps;
    if (this.config.enabled) await this.listen().catch(() => undefined);
  }

  status(): WebStatus {
    const addr = this.app?.server.address() as AddressInfo | null | undefined;
    const port = addr?.port ?? this.config.port;
    const host = this.config.listen === '0.0.0.0' || this.config.listen === '::' ? os.hostname() : this.config.listen;
    return {
      enabled: this.config.enabled,
      listening: Boolean(addr),
      listen: this.config.listen,
      port,
      url: addr ? `https://${host.includes(':') ? `[${host}]` : host}:${port}/` : null,
      cert: this.certInfo,
      tokens: this.tokens.list().length,
      sessions: this.liveSessions(),
      error: this.lastError,
    };
  }

  /** Writes the configuration and applies it now (listener started, moved or stopped). */
  async configure(input: Partial<WebConfig>): Promise<WebStatus> {
    const next = writeWebConfig(this.opts.paths, { ...this.config, ...input });
    this.config = next;
    this.certInfo = this.certFiles(next);
    await this.close();
    if (next.enabled) {
      try {
        await this.listen();
      } catch (e) {
        throw new XvmError('unavailable', `web manager enabled in the configuration but not listening: ${errorMessage(e)}`);
      }
    }
    return this.status();
  }

  async close(): Promise<void> {
    const app = this.app;
    this.app = undefined;
    if (app) await app.close().catch(() => undefined);
  }

  createToken(name: string): { token: string; entry: TokenSummary } {
    return this.tokens.create(name);
  }

  revokeToken(nameOrId: string): TokenSummary {
    const gone = this.tokens.revoke(nameOrId);
    for (const [id, s] of this.sessions) if (s.tokenId === gone.id) this.sessions.delete(id);
    for (const sock of this.sockets.get(gone.id) ?? []) sock.destroy();
    this.sockets.delete(gone.id);
    return gone;
  }

  private liveSessions(): number {
    const now = Date.now();
    for (const [id, s] of this.sessions) if (s.expires < now || !this.tokens.has(s.tokenId)) this.sessions.delete(id);
    return this.sessions.size;
  }

  private async listen(): Promise<void> {
    if (!this.deps) throw new Error('web service not started');
    this.lastError = null;
    try {
      const tls = await this.loadOrMakeCert();
      const app = await buildServer(this.deps, { https: tls, remote: true });
      this.installAuth(app);
      registerStaticFiles(app);
      const domains = this.deps.domains;
      app.addHook('onSend', async () => {
        await domains.flushStore();
      });
      await app.listen({ host: this.config.listen, port: this.config.port });
      this.app = app;
      this.opts.log.info('web manager listening', { url: this.status().url, cert: this.certInfo.file });
    } catch (e) {
      this.lastError = errorMessage(e);
      this.opts.log.error('web manager cannot listen', { listen: this.config.listen, port: this.config.port, error: this.lastError });
      throw e;
    }
  }

  /** The given certificate, or the self-signed one in <lib>/web (made on first use, kept). */
  private async loadOrMakeCert(): Promise<{ cert: string; key: string }> {
    const c = this.certInfo;
    if (!c.selfSigned || (fs.existsSync(c.file) && fs.existsSync(c.key))) {
      const pair = { cert: fs.readFileSync(c.file, 'utf8'), key: fs.readFileSync(c.key, 'utf8') };
      c.fingerprint = new crypto.X509Certificate(pair.cert).fingerprint256;
      return pair;
    }
    const { generate } = await import('selfsigned');
    const host = os.hostname();
    const altNames: { type: 2 | 7; value?: string; ip?: string }[] = [
      { type: 2, value: host },
      { type: 2, value: 'localhost' },
      { type: 7, ip: '127.0.0.1' },
      { type: 7, ip: '::1' },
    ];
    if (this.config.listen !== '0.0.0.0' && this.config.listen !== '::' && !altNames.some((a) => a.ip === this.config.listen)) altNames.push({ type: 7, ip: this.config.listen });
    const notAfter = new Date();
    notAfter.setFullYear(notAfter.getFullYear() + 5);
    const pems = await generate([{ name: 'commonName', value: host }, { name: 'organizationName', value: 'xvm web manager (self-signed)' }], {
      keySize: 2048,
      notAfterDate: notAfter,
      extensions: [
        { name: 'basicConstraints', cA: false, critical: true },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames },
      ],
    });
    fs.mkdirSync(path.dirname(c.file), { recursive: true, mode: 0o700 });
    fs.writeFileSync(c.key, pems.private, { mode: 0o600 });
    fs.writeFileSync(c.file, pems.cert, { mode: 0o644 });
    c.fingerprint = new crypto.X509Certificate(pems.cert).fingerprint256;
    this.opts.log.info('web manager: made a self-signed certificate', { cert: c.file, fingerprint: c.fingerprint });
    return { cert: pems.cert, key: pems.private };
  }

  /** Who a request is: by bearer token or session cookie; null when neither is valid. */
  private identify(req: FastifyRequest): { tokenId: string; name: string; by: 'bearer' | 'cookie' } | null {
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
      const t = m ? this.tokens.verify(m[1]!) : null;
      return t ? { tokenId: t.id, name: t.name, by: 'bearer' } : null;
    }
    const sid = cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (!sid) return null;
    const s = this.sessions.get(sid);
    if (!s) return null;
    if (s.expires < Date.now() || !this.tokens.has(s.tokenId)) {
      this.sessions.delete(sid);
      return null;
    }
    return { tokenId: s.tokenId, name: s.tokenName, by: 'cookie' };
  }

  private installAuth(app: FastifyInstance): void {
    const refuse = (reply: FastifyReply, status: number, message: string) => {
      const body = JSON.stringify({ error: { code: status === 401 ? 'unauthorized' : 'forbidden', message } });
      if (reply.request.headers.upgrade) {
        // A websocket upgrade: answer on the raw socket and end it gracefully
        // (a reply through fastify would be cut off when the upgrade socket is
        // destroyed, before TLS has flushed it).
        reply.hijack();
        reply.request.raw.socket.end(
          `HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : 'Forbidden'}\r\ncontent-type: application/json; charset=utf-8\r\n` +
            `www-authenticate: Bearer realm="xvm"\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
        );
        return reply;
      }
      return reply.code(status).header('www-authenticate', 'Bearer realm="xvm"').type('application/json; charset=utf-8').send(body);
    };

    app.addHook('onRequest', async (req, reply) => {
      reply.header('x-content-type-options', 'nosniff');
      reply.header('referrer-policy', 'no-referrer');
      reply.header('x-frame-options', 'DENY');
      const url = req.url.split('?')[0]!;
      if ((req.method === 'GET' || req.method === 'HEAD') && isStaticPath(url)) return;
      if (req.method === 'POST' && (url === '/v1/web/login' || url === '/v1/web/logout')) return;
      const who = this.identify(req);
      if (!who) return refuse(reply, 401, req.headers.authorization !== undefined ? 'invalid or revoked access token' : "an access token is needed: log in, or send 'Authorization: Bearer <token>' (make one with 'xvm web token')");
      // A cookie rides along with any request the browser makes; a websocket
      // from another site's page must not get to use it.
      if (who.by === 'cookie' && req.headers.upgrade) {
        const origin = req.headers.origin;
        if (origin !== undefined && origin !== `https://${req.headers.host}`) return refuse(reply, 403, `websocket from origin ${origin} refused`);
      }
      (req as FastifyRequest & { webUser?: string }).webUser = who.name;
      if (req.headers.upgrade) {
        const sock = req.raw.socket;
        let set = this.sockets.get(who.tokenId);
        if (!set) this.sockets.set(who.tokenId, (set = new Set()));
        set.add(sock);
        sock.once('close', () => {
          set.delete(sock);
          if (set.size === 0 && this.sockets.get(who.tokenId) === set) this.sockets.delete(who.tokenId);
        });
      }
    });

    app.post('/v1/web/login', async (req, reply) => {
      const body = (req.body ?? {}) as { token?: unknown };
      const token = typeof body.token === 'string' ? body.token.trim() : '';
      const t = token ? this.tokens.verify(token) : null;
      if (!t) {
        this.opts.log.warn('web login refused', { ip: req.ip });
        return refuse(reply, 401, 'invalid or revoked access token');
      }
      this.liveSessions(); // drops expired and revoked ones
      const sid = crypto.randomBytes(32).toString('base64url');
      this.sessions.set(sid, { tokenId: t.id, tokenName: t.name, expires: Date.now() + SESSION_TTL_MS });
      this.opts.log.info('web login', { token: t.name, ip: req.ip });
      reply.header('set-cookie', `${SESSION_COOKIE}=${sid}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${SESSION_TTL_MS / 1000}`);
      return { token: { id: t.id, name: t.name }, expiresInSec: SESSION_TTL_MS / 1000 };
    });

    app.post('/v1/web/logout', async (req, reply) => {
      const sid = cookieValue(req.headers.cookie, SESSION_COOKIE);
      if (sid) this.sessions.delete(sid);
      reply.header('set-cookie', `${SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0`);
      return { loggedOut: true };
    });

    app.get('/v1/web/whoami', async (req) => ({ token: (req as FastifyRequest & { webUser?: string }).webUser ?? null }));
  }
}

export function cookieValue(header: string | undefined, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim() || null;
  }
  return null;
}
