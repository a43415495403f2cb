// xs_wire over a unix socket. Every socket client is the control domain
// (domid 0), as with Xen's xenstored socket. Requests of one connection are
// handled in order and answered in order; a write's reply waits until it is
// durable, while later requests of the same connection are already handled
// (pipelining), their replies queued behind it.
import fs from 'node:fs';
import net from 'node:net';
import { StoreError } from './errors.js';
import { formatPerm } from './perms.js';
import type { Store, StoreConnection, Transaction } from './store.js';
import {
  XS,
  FrameDecoder,
  FrameError,
  encodeMessage,
  encodeStrings,
  oneArg,
  manyArgs,
  pathAndValue,
  parseDomid,
  PAYLOAD_MAX,
  type Message,
} from './wire.js';

/** What the socket server needs from a backend (the Store, or the benchmark's plain Map). */
export interface WireSession {
  read(path: string, tx: number): Buffer;
  write(path: string, value: Buffer, tx: number): void | Promise<void>;
  mkdir(path: string, tx: number): void | Promise<void>;
  rm(path: string, tx: number): void | Promise<void>;
  directory(path: string, tx: number): { gen: number; children: string[] };
  getPerms(path: string, tx: number): string[];
  setPerms(path: string, perms: string[], tx: number): void | Promise<void>;
  watch(path: string, token: string, send: (path: string, token: string) => void): void;
  unwatch(path: string, token: string): void;
  resetWatches(): void;
  txStart(): number;
  txEnd(tx: number, commit: boolean): void | Promise<void>;
  introduce(domid: number): void;
  release(domid: number): void;
  resume(domid: number): void;
  isIntroduced(domid: number): boolean;
  getDomainPath(domid: number): string;
  close(): void;
}

export interface WireBackend {
  /** A session for a new connection; `onGone` is called if the backend ends it (its domain was released). */
  open(onGone?: () => void): WireSession;
}

/**
 * The Store as a wire backend: every socket connection acts as domain
 * `domid` (0, the control domain, by default — as xenstored's socket).
 */
export function storeBackend(store: Store, domid = 0): WireBackend {
  return {
    open(onGone?: () => void): WireSession {
      const c: StoreConnection = store.connect(domid);
      if (onGone) c.onClose = onGone;
      const txOf = (id: number): { tx?: Transaction } => (id === 0 ? {} : { tx: c.transactionById(id) });
      return {
        read: (p, tx) => c.readBuffer(p, txOf(tx)),
        write: (p, v, tx) => c.write(p, v, txOf(tx)),
        mkdir: (p, tx) => c.mkdir(p, txOf(tx)),
        rm: (p, tx) => c.rm(p, txOf(tx)),
        directory: (p, tx) => c.directoryWithGen(p, txOf(tx)),
        getPerms: (p, tx) => c.getPerms(p, txOf(tx)).map(formatPerm),
        setPerms: (p, perms, tx) => c.setPerms(p, perms, txOf(tx)),
        watch: (p, token, send) => c.watch(p, token, send),
        unwatch: (p, token) => c.unwatch(p, token),
        resetWatches: () => c.resetWatches(),
        txStart: () => c.startTransaction().id,
        txEnd: (id, commit) => {
          const tx = c.transactionById(id);
          if (!commit) {
            tx.abort();
            return;
          }
          return tx.commit();
        },
        introduce: (d) => c.introduceDomain(d),
        release: (d) => c.releaseDomain(d),
        resume: (d) => {
          if (!c.isDomainIntroduced(d)) throw new StoreError('ENOENT', `domain ${d} is not introduced`);
        },
        isIntroduced: (d) => c.isDomainIntroduced(d),
        getDomainPath: (d) => c.getDomainPath(d),
        close: () => c.close(),
      };
    },
  };
}

export interface ServerOptions {
  /**
   * Domain the socket's clients act as (default 0). A socket for an
   * introduced domain N gives a process exactly domain N's view: its
   * permissions, its quotas, relative paths under /local/domain/N.
   */
  domid?: number;
  /** Replies + events queued for one client before it is dropped as too slow (default 16 MiB). */
  maxQueuedBytes?: number;
  /** Requests of one connection in flight before reading from it pauses (default 1024). */
  maxInFlight?: number;
  /** Called with a line for each client dropped for a protocol violation. */
  log?: (line: string) => void;
}

export interface StoreServer {
  readonly socketPath: string;
  /** Open client connections. */
  readonly connections: number;
  close(): Promise<void>;
}

const OK = encodeStrings(['OK']);
const T = encodeStrings(['T']);
const F = encodeStrings(['F']);

type Reply = Buffer | Promise<Buffer>;

/** Serve `store` over xs_wire on a unix socket (mode 0600). */
export function serveStore(store: Store, socketPath: string, opts: ServerOptions = {}): Promise<StoreServer> {
  return serveBackend(storeBackend(store, opts.domid ?? 0), socketPath, opts);
}

export async function serveBackend(backend: WireBackend, socketPath: string, opts: ServerOptions = {}): Promise<StoreServer> {
  const maxQueued = opts.maxQueuedBytes ?? 16 * 1024 * 1024;
  const maxInFlight = opts.maxInFlight ?? 1024;
  const log = opts.log ?? (() => {});
  await clearStaleSocket(socketPath);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    try {
      handleConnection(sock, backend, maxQueued, maxInFlight, log);
    } catch (e) {
      log(`store: refusing a connection: ${(e as Error).message}`);
      sock.destroy();
    }
  });
  server.maxConnections = 4096;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // The socket file is created inside listen(): a umask of 177 makes it 0600
    // from the start (the chmod below covers threads where umask can't be set).
    let oldMask: number | null = null;
    try {
      oldMask = process.umask(0o177);
    } catch {
      oldMask = null;
    }
    try {
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    } finally {
      if (oldMask !== null) process.umask(oldMask);
    }
  });
  fs.chmodSync(socketPath, 0o600);
  server.on('error', (e) => log(`store: server error: ${e.message}`));
  return {
    socketPath,
    get connections() {
      return sockets.size;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => {
          fs.rmSync(socketPath, { force: true });
          resolve();
        });
      }),
  };
}

async function clearStaleSocket(socketPath: string): Promise<void> {
  if (!fs.existsSync(socketPath)) return;
  const st = fs.lstatSync(socketPath);
  if (!st.isSocket()) throw new StoreError('EEXIST', `${socketPath} exists and is not a socket`);
  const inUse = await new Promise<boolean>((resolve) => {
    const c = net.connect(socketPath);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (inUse) throw new StoreError('EBUSY', `a store already listens on ${socketPath}`);
  fs.rmSync(socketPath, { force: true });
}

function handleConnection(sock: net.Socket, backend: WireBackend, maxQueued: number, maxInFlight: number, log: (l: string) => void): void {
  const session = backend.open(() => kill('its domain was released'));
  const decoder = new FrameDecoder();
  // Replies in request order. A slot holds ready bytes, or null while its
  // request (a write waiting to be durable) is pending.
  interface Slot {
    buf: Buffer | null;
  }
  let queue: Slot[] = [];
  let head = 0; // first unsent slot
  let inFlight = 0;
  let queuedBytes = 0;
  let dead = false;
  let paused = false;

  const kill = (why: string): void => {
    if (dead) return;
    dead = true;
    log(`store: dropping client: ${why}`);
    sock.destroy();
  };

  const send = (b: Buffer): void => {
    if (dead) return;
    sock.write(b);
    if (sock.writableLength > maxQueued) kill(`client does not read its replies (${sock.writableLength} bytes queued)`);
  };

  const flush = (): void => {
    const out: Buffer[] = [];
    while (head < queue.length && queue[head].buf !== null) {
      const b = queue[head++].buf!;
      queuedBytes -= b.length;
      out.push(b);
    }
    if (head === queue.length) {
      queue = [];
      head = 0;
    } else if (head > 1024) {
      queue = queue.slice(head);
      head = 0;
    }
    if (out.length > 0) send(out.length === 1 ? out[0] : Buffer.concat(out));
    if (paused && inFlight < maxInFlight / 2 && !dead) {
      paused = false;
      sock.resume();
    }
  };

  const enqueue = (reply: Reply): void => {
    if (Buffer.isBuffer(reply)) {
      if (head === queue.length) send(reply); // nothing waiting before it
      else {
        queue.push({ buf: reply });
        queuedBytes += reply.length;
      }
      return;
    }
    const slot: Slot = { buf: null };
    queue.push(slot);
    inFlight++;
    if (inFlight >= maxInFlight && !paused) {
      paused = true;
      sock.pause();
    }
    void reply.then((b) => {
      inFlight--;
      slot.buf = b;
      queuedBytes += b.length;
      flush();
    });
  };

  const sendEvent = (path: string, token: string): void => {
    if (dead) return;
    const payload = encodeStrings([path, token]);
    const msg = encodeMessage(XS.WATCH_EVENT, 0, 0, payload);
    if (queuedBytes + sock.writableLength > maxQueued) {
      kill('client does not read its watch events');
      return;
    }
    enqueue(msg);
  };

  sock.on('data', (chunk: Buffer) => {
    if (dead) return;
    let msgs: Message[];
    try {
      msgs = decoder.push(chunk);
    } catch (e) {
      // Oversized payload: Xen kills such a connection; so do we.
      kill(e instanceof FrameError ? e.message : String(e));
      return;
    }
    for (const m of msgs) {
      if (dead) return;
      let r: Reply;
      try {
        r = dispatch(session, m, sendEvent);
      } catch (e) {
        r = errorReply(e, m.type, m.reqId, m.txId);
      }
      if (!Buffer.isBuffer(r)) {
        const { reqId, txId, type } = m;
        r = r.catch((e) => errorReply(e, type, reqId, txId));
      }
      enqueue(r);
    }
  });
  sock.on('error', () => {});
  sock.on('close', () => {
    dead = true;
    try {
      session.close();
    } catch {
      // already closed
    }
  });
}

let internalErrors = 0;

/** Requests that failed with something other than a StoreError (a bug): answered EIO. */
export function internalErrorCount(): number {
  return internalErrors;
}

function errorReply(e: unknown, _type: number, reqId: number, txId: number): Buffer {
  let name: string;
  if (e instanceof StoreError) name = e.errno;
  else {
    internalErrors++;
    if (internalErrors <= 10) console.error('store: internal error:', e);
    name = 'EIO';
  }
  return encodeMessage(XS.ERROR, reqId, txId, encodeStrings([name]));
}

function ok(m: Message, payload: Buffer = OK): Buffer {
  return encodeMessage(m.type, m.reqId, m.txId, payload);
}

function after(m: Message, r: void | Promise<void>, payload: Buffer = OK): Reply {
  if (r instanceof Promise) return r.then(() => ok(m, payload));
  return ok(m, payload);
}

function dispatch(s: WireSession, m: Message, sendEvent: (p: string, t: string) => void): Reply {
  const tx = m.txId;
  switch (m.type) {
    case XS.READ:
      return ok(m, s.read(oneArg(m.payload), tx));
    case XS.WRITE: {
      const { path, value } = pathAndValue(m.payload);
      return after(m, s.write(path, value, tx));
    }
    case XS.MKDIR:
      return after(m, s.mkdir(oneArg(m.payload), tx));
    case XS.RM:
      return after(m, s.rm(oneArg(m.payload), tx));
    case XS.DIRECTORY: {
      const { children } = s.directory(oneArg(m.payload), tx);
      const body = encodeStrings(children);
      if (body.length > PAYLOAD_MAX) throw new StoreError('E2BIG', 'directory listing too long: use DIRECTORY_PART');
      return ok(m, body);
    }
    case XS.DIRECTORY_PART: {
      const [path, offStr] = manyArgs(m.payload, 2);
      if (!/^\d{1,10}$/.test(offStr)) throw new StoreError('EINVAL', 'bad offset');
      const off = Number(offStr);
      const { gen, children } = s.directory(path, tx);
      return ok(m, directoryPart(gen, children, off));
    }
    case XS.GET_PERMS:
      return ok(m, encodeStrings(s.getPerms(oneArg(m.payload), tx)));
    case XS.SET_PERMS: {
      const [path, ...perms] = manyArgs(m.payload, 2);
      return after(m, s.setPerms(path, perms, tx));
    }
    case XS.WATCH: {
      const [path, token] = manyArgs(m.payload, 2);
      s.watch(path, token, sendEvent);
      return ok(m);
    }
    case XS.UNWATCH: {
      const [path, token] = manyArgs(m.payload, 2);
      s.unwatch(path, token);
      return ok(m);
    }
    case XS.RESET_WATCHES:
      s.resetWatches();
      return ok(m);
    case XS.TRANSACTION_START:
      if (tx !== 0) throw new StoreError('EBUSY', 'TRANSACTION_START inside a transaction');
      return ok(m, encodeStrings([String(s.txStart())]));
    case XS.TRANSACTION_END: {
      const a = oneArg(m.payload);
      if (a !== 'T' && a !== 'F') throw new StoreError('EINVAL', 'TRANSACTION_END wants T or F');
      if (tx === 0) throw new StoreError('EINVAL', 'TRANSACTION_END outside a transaction');
      return after(m, s.txEnd(tx, a === 'T'));
    }
    case XS.INTRODUCE: {
      const [d] = manyArgs(m.payload, 1);
      s.introduce(parseDomid(d));
      return ok(m);
    }
    case XS.RELEASE:
      s.release(parseDomid(oneArg(m.payload)));
      return ok(m);
    case XS.RESUME:
      s.resume(parseDomid(oneArg(m.payload)));
      return ok(m);
    case XS.IS_DOMAIN_INTRODUCED:
      return ok(m, s.isIntroduced(parseDomid(oneArg(m.payload))) ? T : F);
    case XS.GET_DOMAIN_PATH:
      return ok(m, encodeStrings([s.getDomainPath(parseDomid(oneArg(m.payload)))]));
    case XS.WATCH_EVENT:
    case XS.ERROR:
      throw new StoreError('EINVAL', 'clients may not send this message type');
    default:
      // CONTROL, SET_TARGET, RESTRICT and anything unknown.
      throw new StoreError('ENOSYS', `unsupported message type ${m.type}`);
  }
}

/** DIRECTORY_PART reply: <gen>| then children from byte `off` of the full list, an extra NUL once the end is reached. */
function directoryPart(gen: number, children: string[], off: number): Buffer {
  const genB = encodeStrings([String(gen)]);
  const all = encodeStrings(children);
  if (off >= all.length) return Buffer.concat([genB, Buffer.from([0])]);
  // Take whole names starting at `off` while they fit.
  let end = off;
  const room = PAYLOAD_MAX - genB.length - 1;
  while (end < all.length) {
    const z = all.indexOf(0, end);
    if (z + 1 - off > room) break;
    end = z + 1;
  }
  if (end === off) throw new StoreError('E2BIG', 'a child name does not fit');
  const parts = [genB, all.subarray(off, end)];
  if (end === all.length) parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}
