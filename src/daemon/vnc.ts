// The graphics console of HVM domains. QEMU exports each domain's screen as
// VNC on a unix socket in the domain's runtime folder, with no
// authentication: only xvmd can reach it. xvmd puts it on the network:
//
//   VNC client ──TCP──▶ xvmd (RFB server: VNC Authentication with the
//                        domain's password) ──unix──▶ QEMU (RFB, None auth)
//   browser (noVNC) ──websocket + short-lived token──▶ xvmd ──unix──▶ QEMU
//
// xvmd does the version and security handshake with the client itself and
// the None handshake with QEMU, answers the client's security result, then
// splices the two byte streams: from ClientInit on, the client talks to QEMU.
// The TCP listener is on loopback unless the domain's `vnclisten` says
// otherwise; its port is the first free one from 5900 (as xl's vncunused),
// kept with the password in the runtime folder so an xvmd restart gives
// the same address back.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import crypto from 'node:crypto';
import { XvmError, errorMessage } from '../common/errors.js';
import type { Logger } from './log.js';
import { vncAuthCheck } from './vnc-auth.js';
import { deviceEvent } from './device-log.js';

export const VNC_BASE_PORT = 5900;
const PORT_RANGE = 100;
const HANDSHAKE_TIMEOUT_MS = 15_000;
/** A wrong password costs the client this long before the answer (slows guessing). */
const FAILURE_DELAY_MS = 1000;
const MAX_HANDSHAKES = 16;
const TOKEN_TTL_MS = 60_000;

export interface VncEndpoint {
  listen: string;
  port: number;
  password: string;
}

/** What `xvm vnc` shows: where to connect and with which password. */
export interface VncInfo extends VncEndpoint {
  domain: string;
  /** VNC display number (port - 5900) when the port is in the 5900 range. */
  display: number | null;
  /** host:display as VNC viewers take it. */
  address: string;
  /** The websocket route for noVNC (needs a token from POST .../vnc/token). */
  websocket: string;
}

export interface VncToken {
  token: string;
  expiresAt: string;
  /** The websocket path with the token, ready for noVNC. */
  path: string;
}

export function vncFiles(runDir: string): { socket: string; state: string } {
  return { socket: path.join(runDir, 'vnc.sock'), state: path.join(runDir, 'vnc.json') };
}

/** Buffered exact reads from a socket, for the handshakes; hands the rest over when done. */
class Reader {
  private buf = Buffer.alloc(0);
  private want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private ended: Error | undefined;
  private readonly onData = (c: Buffer) => {
    this.buf = Buffer.concat([this.buf, c]);
    if (this.buf.length > 4096) this.fail(new Error('client sent too much during the handshake'));
    this.pump();
  };
  private readonly onEnd = () => this.fail(new Error('connection closed during the handshake'));

  constructor(private readonly sock: net.Socket) {
    sock.on('data', this.onData);
    sock.on('end', this.onEnd);
    sock.on('close', this.onEnd);
    sock.on('error', (e) => this.fail(e));
  }
  private fail(e: Error): void {
    this.ended ??= e;
    const w = this.want;
    this.want = undefined;
    w?.reject(this.ended);
  }
  private pump(): void {
    if (this.want && this.buf.length >= this.want.n) {
      const w = this.want;
      this.want = undefined;
      const out = this.buf.subarray(0, w.n);
      this.buf = this.buf.subarray(w.n);
      w.resolve(Buffer.from(out));
    }
  }
  read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.ended && this.buf.length < n) return reject(this.ended);
      this.want = { n, resolve, reject };
      this.pump();
    });
  }
  /** Stops reading for the handshake; returns what arrived beyond it. */
  detach(): Buffer {
    this.sock.off('data', this.onData);
    this.sock.off('end', this.onEnd);
    this.sock.off('close', this.onEnd);
    return this.buf;
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function reasonMsg(text: string): Buffer {
  const t = Buffer.from(text, 'utf8');
  return Buffer.concat([u32(t.length), t]);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Connects to QEMU's VNC socket and does the client side of its None-auth handshake. */
export async function connectQemuVnc(socketPath: string): Promise<{ sock: net.Socket; rest: Buffer }> {
  const sock = net.connect(socketPath);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const r = new Reader(sock);
  try {
    const version = (await r.read(12)).toString('latin1');
    if (!/^RFB 003\.00[3-8]\n$/.test(version)) throw new Error(`QEMU sent an unexpected RFB version ${JSON.stringify(version)}`);
    sock.write('RFB 003.008\n');
    const n = (await r.read(1))[0]!;
    if (n === 0) {
      const len = (await r.read(4)).readUInt32BE();
      throw new Error(`QEMU refused the connection: ${(await r.read(Math.min(len, 1024))).toString('utf8')}`);
    }
    const types = [...(await r.read(n))];
    if (!types.includes(1)) throw new Error(`QEMU's VNC server wants authentication (types ${types.join(',')}); it should offer None on its private socket`);
    sock.write(Buffer.from([1]));
    const result = (await r.read(4)).readUInt32BE();
    if (result !== 0) throw new Error('QEMU refused the None security type');
    return { sock, rest: r.detach() };
  } catch (e) {
    sock.destroy();
    throw e;
  }
}

/** One domain's TCP VNC server. */
class VncServer {
  private handshakes = 0;
  readonly clients = new Set<net.Socket>();

  constructor(
    readonly domain: string,
    readonly endpoint: VncEndpoint,
    private readonly server: net.Server,
    private readonly qemuSocket: string,
    private readonly log: Logger,
  ) {
    server.on('connection', (c) => this.onConnection(c));
  }

  close(): Promise<void> {
    for (const c of this.clients) c.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }

  private onConnection(client: net.Socket): void {
    client.setNoDelay(true);
    this.clients.add(client);
    client.once('close', () => this.clients.delete(client));
    client.on('error', () => undefined);
    if (this.handshakes >= MAX_HANDSHAKES) {
      client.end(Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([0]), reasonMsg('too many connections are authenticating; try again')]));
      return;
    }
    this.handshakes++;
    const timer = setTimeout(() => client.destroy(), HANDSHAKE_TIMEOUT_MS);
    this.handshake(client)
      .catch((e) => {
        this.log.info('vnc client refused', { domain: this.domain, peer: client.remoteAddress, reason: errorMessage(e) });
        client.destroy();
      })
      .finally(() => {
        clearTimeout(timer);
        this.handshakes--;
      });
  }

  private async handshake(client: net.Socket): Promise<void> {
    const r = new Reader(client);
    client.write('RFB 003.008\n');
    const v = /^RFB (\d{3})\.(\d{3})\n$/.exec((await r.read(12)).toString('latin1'));
    if (!v || Number(v[1]) < 3) throw new Error('not an RFB client');
    const minor = Number(v[1]) > 3 ? 8 : Number(v[2]);
    if (minor < 3) throw new Error('RFB versions before 3.3 are not supported');
    const v38 = minor >= 8;
    if (minor >= 7) {
      client.write(Buffer.from([1, 2])); // one security type: VNC Authentication
      const chosen = (await r.read(1))[0];
      if (chosen !== 2) {
        if (v38) client.write(Buffer.concat([u32(1), reasonMsg('this server requires VNC authentication')]));
        throw new Error(`client chose security type ${chosen}`);
      }
    } else {
      client.write(u32(2)); // RFB 3.3: the server decides
    }
    const challenge = crypto.randomBytes(16);
    client.write(challenge);
    const response = await r.read(16);
    if (!vncAuthCheck(this.endpoint.password, challenge, response)) {
      deviceEvent('vnc-auth-failed', { domain: this.domain, peer: client.remoteAddress });
      await sleep(FAILURE_DELAY_MS);
      client.end(Buffer.concat([u32(1), v38 ? reasonMsg('authentication failed') : Buffer.alloc(0)]));
      throw new Error('wrong password');
    }
    let qemu: { sock: net.Socket; rest: Buffer };
    try {
      qemu = await connectQemuVnc(this.qemuSocket);
    } catch (e) {
      client.end(Buffer.concat([u32(1), v38 ? reasonMsg('the domain has no screen right now') : Buffer.alloc(0)]));
      throw e;
    }
    client.write(u32(0));
    const early = r.detach();
    splice(client, qemu.sock, early, qemu.rest);
    this.log.info('vnc client connected', { domain: this.domain, peer: client.remoteAddress });
    deviceEvent('vnc-attach', { domain: this.domain, peer: client.remoteAddress });
  }
}

/** Joins two sockets, first delivering what each side's handshake reader had already buffered. */
function splice(client: net.Socket, qemu: net.Socket, fromClient: Buffer, fromQemu: Buffer): void {
  if (fromClient.length) qemu.write(fromClient);
  if (fromQemu.length) client.write(fromQemu);
  client.pipe(qemu);
  qemu.pipe(client);
  qemu.on('error', () => client.destroy());
  client.on('error', () => qemu.destroy());
  // end, not destroy: what one side sent last (a key release) still reaches the other.
  qemu.on('close', () => client.end());
  client.on('close', () => qemu.end());
}

async function listenOn(host: string, port: number): Promise<net.Server> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/** The VNC servers of every running HVM domain, and the websocket tokens. */
export class VncService {
  private servers = new Map<string, VncServer>();
  private tokens = new Map<string, { domain: string; expires: number }>();

  constructor(private readonly log: Logger) {}

  /**
   * Starts (or, after an xvmd restart, restarts on the same port) the VNC
   * server of a domain. `want.port` is tried first; else the first free
   * port from 5900.
   */
  async start(domain: string, uuid: string, runDir: string, want: { listen: string; password: string; port?: number }): Promise<VncEndpoint> {
    await this.stop(uuid);
    const f = vncFiles(runDir);
    let server: net.Server | undefined;
    let port = 0;
    const candidates = [...(want.port ? [want.port] : []), ...Array.from({ length: PORT_RANGE }, (_, i) => VNC_BASE_PORT + i)];
    let lastError: unknown;
    for (const p of candidates) {
      try {
        server = await listenOn(want.listen, p);
        port = p;
        break;
      } catch (e) {
        lastError = e;
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'EADDRINUSE' && code !== 'EACCES') break;
      }
    }
    if (!server) {
      throw new XvmError('unavailable', `domain '${domain}': cannot listen for VNC on ${want.listen} (ports ${VNC_BASE_PORT}-${VNC_BASE_PORT + PORT_RANGE - 1}): ${errorMessage(lastError)}`);
    }
    const endpoint: VncEndpoint = { listen: want.listen, port, password: want.password };
    const fd = fs.openSync(f.state, 'w', 0o600);
    try {
      fs.writeSync(fd, JSON.stringify(endpoint));
    } finally {
      fs.closeSync(fd);
    }
    this.servers.set(uuid, new VncServer(domain, endpoint, server, f.socket, this.log));
    this.log.info('vnc listening', { domain, listen: want.listen, port });
    deviceEvent('vnc-listen', { domain, listen: want.listen, port });
    return endpoint;
  }

  /** After an xvmd restart: the endpoint the domain had, from its runtime folder. */
  saved(runDir: string): VncEndpoint | undefined {
    try {
      const e = JSON.parse(fs.readFileSync(vncFiles(runDir).state, 'utf8')) as VncEndpoint;
      if (typeof e.listen === 'string' && typeof e.port === 'number' && typeof e.password === 'string') return e;
    } catch {
      /* none */
    }
    return undefined;
  }

  async stop(uuid: string): Promise<void> {
    const s = this.servers.get(uuid);
    if (!s) return;
    this.servers.delete(uuid);
    for (const [t, v] of this.tokens) if (v.domain === s.domain) this.tokens.delete(t);
    await s.close();
  }

  endpoint(uuid: string): VncEndpoint | undefined {
    return this.servers.get(uuid)?.endpoint;
  }

  /** A single-use token for the noVNC websocket of `domain`, valid for a minute. */
  issueToken(domain: string): VncToken {
    const now = Date.now();
    for (const [t, v] of this.tokens) if (v.expires < now) this.tokens.delete(t);
    const token = crypto.randomBytes(24).toString('base64url');
    this.tokens.set(token, { domain, expires: now + TOKEN_TTL_MS });
    return {
      token,
      expiresAt: new Date(now + TOKEN_TTL_MS).toISOString(),
      path: `/v1/domains/${encodeURIComponent(domain)}/vnc/ws?token=${token}`,
    };
  }

  /** Uses up a token: true when it was issued for `domain` and has not expired or been used. */
  redeemToken(domain: string, token: string): boolean {
    const v = this.tokens.get(token);
    if (!v) return false;
    this.tokens.delete(token);
    return v.domain === domain && v.expires >= Date.now();
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.servers.keys()].map((u) => this.stop(u)));
  }
}
