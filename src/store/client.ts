// A small xs_wire client over a unix socket: Promise API, pipelined requests
// matched by req_id, watch events as 'watch' events (path, token).
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { StoreError, isXsErrno } from './errors.js';
import { XS, XS_NAMES, FrameDecoder, encodeMessage, encodeStrings, type Message } from './wire.js';

export interface ClientEvents {
  watch: [path: string, token: string];
  close: [];
  error: [Error];
}

const DESCRIBE: Record<string, string> = {
  ENOENT: 'no such node',
  EACCES: 'permission denied',
  EINVAL: 'invalid argument',
  EEXIST: 'already exists',
  EAGAIN: 'transaction conflict, try again',
  EQUOTA: 'quota exceeded',
  E2BIG: 'too big',
  ENOSYS: 'not supported',
  EBUSY: 'busy',
  EIO: 'I/O error in the store',
  EPERM: 'operation not permitted',
  ENOSPC: 'no space',
};

interface Pending {
  type: number;
  what: string;
  resolve: (m: Message) => void;
  reject: (e: Error) => void;
}

export class StoreClient extends EventEmitter<ClientEvents> {
  private readonly decoder = new FrameDecoder(1 << 20);
  private readonly pending = new Map<number, Pending>();
  private nextReq = 1;
  private closedErr: Error | null = null;

  private constructor(private readonly sock: net.Socket) {
    super();
    sock.on('data', (chunk: Buffer) => {
      let msgs: Message[];
      try {
        msgs = this.decoder.push(chunk);
      } catch (e) {
        this.fail(e as Error);
        return;
      }
      for (const m of msgs) this.onMessage(m);
    });
    sock.on('error', (e) => this.fail(e));
    sock.on('close', () => {
      this.fail(new StoreError('EIO', 'connection to the store closed'));
      this.emit('close');
    });
  }

  /** Connect to a store socket (XENSTORED_PATH-style path). */
  static connect(socketPath: string, opts: { timeoutMs?: number } = {}): Promise<StoreClient> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(socketPath);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new StoreError('EIO', `timed out connecting to the store at ${socketPath}`));
      }, opts.timeoutMs ?? 10_000);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.off('error', onErr);
        resolve(new StoreClient(sock));
      });
      const onErr = (e: Error): void => {
        clearTimeout(timer);
        reject(new StoreError('EIO', `cannot connect to the store at ${socketPath}: ${e.message}`));
      };
      sock.once('error', onErr);
    });
  }

  private fail(e: Error): void {
    if (!this.closedErr) this.closedErr = e;
    for (const p of this.pending.values()) p.reject(this.closedErr);
    this.pending.clear();
    this.sock.destroy();
  }

  private onMessage(m: Message): void {
    if (m.type === XS.WATCH_EVENT) {
      const parts = m.payload.toString('utf8').split('\0');
      this.emit('watch', parts[0] ?? '', parts[1] ?? '');
      return;
    }
    const p = this.pending.get(m.reqId);
    if (!p) return; // a reply nobody waits for
    this.pending.delete(m.reqId);
    if (m.type === XS.ERROR) {
      const name = m.payload.toString('latin1').replace(/\0.*$/s, '');
      const errno = isXsErrno(name) ? name : 'EIO';
      p.reject(new StoreError(errno, `${p.what}: ${DESCRIBE[errno] ?? name}`));
      return;
    }
    p.resolve(m);
  }

  /** Send one raw request; resolves with the reply message (rejects on ERROR replies). */
  request(type: number, payload: Buffer, txId = 0): Promise<Message> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    const reqId = this.nextReq;
    this.nextReq = this.nextReq >= 0x7fffffff ? 1 : this.nextReq + 1;
    return new Promise((resolve, reject) => {
      const z = payload.indexOf(0);
      const arg = payload.toString('utf8', 0, z < 0 ? Math.min(payload.length, 200) : Math.min(z, 200));
      const what = `${XS_NAMES[type] ?? `type ${type}`}${arg ? ` ${arg}` : ''}`;
      this.pending.set(reqId, { type, what, resolve, reject });
      this.sock.write(encodeMessage(type, reqId, txId, payload));
    });
  }

  /** Write raw bytes to the socket (tests of malformed input). */
  writeRaw(b: Buffer): void {
    this.sock.write(b);
  }

  private async strs(type: number, args: string[], tx = 0): Promise<string[]> {
    const m = await this.request(type, encodeStrings(args, 'utf8'), tx);
    const s = m.payload.toString('utf8');
    const parts = s.split('\0');
    if (parts.length > 0 && parts[parts.length - 1] === '') parts.pop();
    return parts;
  }

  async readBuffer(path: string, tx = 0): Promise<Buffer> {
    return (await this.request(XS.READ, encodeStrings([path], 'utf8'), tx)).payload;
  }
  async read(path: string, tx = 0): Promise<string> {
    return (await this.readBuffer(path, tx)).toString('utf8');
  }
  async tryRead(path: string, tx = 0): Promise<string | undefined> {
    try {
      return await this.read(path, tx);
    } catch (e) {
      if (e instanceof StoreError && e.errno === 'ENOENT') return undefined;
      throw e;
    }
  }
  async write(path: string, value: string | Buffer, tx = 0): Promise<void> {
    const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    await this.request(XS.WRITE, Buffer.concat([encodeStrings([path], 'utf8'), v]), tx);
  }
  async mkdir(path: string, tx = 0): Promise<void> {
    await this.request(XS.MKDIR, encodeStrings([path], 'utf8'), tx);
  }
  async rm(path: string, tx = 0): Promise<void> {
    await this.request(XS.RM, encodeStrings([path], 'utf8'), tx);
  }
  /** Children of `path`; falls back to DIRECTORY_PART for long lists. */
  async directory(path: string, tx = 0): Promise<string[]> {
    try {
      return await this.strs(XS.DIRECTORY, [path], tx);
    } catch (e) {
      if (!(e instanceof StoreError && e.errno === 'E2BIG')) throw e;
    }
    for (let attempt = 0; attempt < 10; attempt++) {
      const names: string[] = [];
      let off = 0;
      let gen: string | null = null;
      let restart = false;
      for (;;) {
        const m = await this.request(XS.DIRECTORY_PART, encodeStrings([path, String(off)], 'utf8'), tx);
        const b = m.payload;
        const z = b.indexOf(0);
        const g = b.toString('utf8', 0, z);
        if (gen === null) gen = g;
        else if (gen !== g) {
          restart = true;
          break;
        }
        let pos = z + 1;
        let end = false;
        while (pos < b.length) {
          const nz = b.indexOf(0, pos);
          if (nz === pos) {
            end = true;
            break;
          }
          names.push(b.toString('utf8', pos, nz));
          off += nz - pos + 1;
          pos = nz + 1;
        }
        if (end) break;
      }
      if (!restart) return names;
    }
    throw new StoreError('EAGAIN', `directory ${path} kept changing while being listed`);
  }
  getPerms(path: string, tx = 0): Promise<string[]> {
    return this.strs(XS.GET_PERMS, [path], tx);
  }
  async setPerms(path: string, perms: string[], tx = 0): Promise<void> {
    await this.request(XS.SET_PERMS, encodeStrings([path, ...perms], 'utf8'), tx);
  }
  async watch(path: string, token: string): Promise<void> {
    await this.request(XS.WATCH, encodeStrings([path, token], 'utf8'));
  }
  async unwatch(path: string, token: string): Promise<void> {
    await this.request(XS.UNWATCH, encodeStrings([path, token], 'utf8'));
  }
  async resetWatches(): Promise<void> {
    await this.request(XS.RESET_WATCHES, encodeStrings([''], 'utf8'));
  }
  async transactionStart(): Promise<number> {
    const [id] = await this.strs(XS.TRANSACTION_START, ['']);
    return Number(id);
  }
  async transactionEnd(tx: number, commit: boolean): Promise<void> {
    await this.request(XS.TRANSACTION_END, encodeStrings([commit ? 'T' : 'F'], 'utf8'), tx);
  }
  /** Run `fn` in a transaction, retrying on EAGAIN (up to maxAttempts, default 20). */
  async transaction<T>(fn: (tx: number) => Promise<T>, opts: { maxAttempts?: number } = {}): Promise<T> {
    const max = opts.maxAttempts ?? 20;
    for (let attempt = 1; ; attempt++) {
      const tx = await this.transactionStart();
      let r: T;
      try {
        r = await fn(tx);
      } catch (e) {
        await this.transactionEnd(tx, false).catch(() => {});
        throw e;
      }
      try {
        await this.transactionEnd(tx, true);
        return r;
      } catch (e) {
        if (!(e instanceof StoreError && e.errno === 'EAGAIN') || attempt >= max) throw e;
      }
    }
  }
  async introduce(domid: number): Promise<void> {
    await this.request(XS.INTRODUCE, encodeStrings([String(domid), '0', '0'], 'utf8'));
  }
  async release(domid: number): Promise<void> {
    await this.request(XS.RELEASE, encodeStrings([String(domid)], 'utf8'));
  }
  async isIntroduced(domid: number): Promise<boolean> {
    const [r] = await this.strs(XS.IS_DOMAIN_INTRODUCED, [String(domid)]);
    return r === 'T';
  }
  async getDomainPath(domid: number): Promise<string> {
    const [r] = await this.strs(XS.GET_DOMAIN_PATH, [String(domid)]);
    return r;
  }

  /** Wait for the next watch event matching `token` (and optionally a predicate). */
  nextEvent(token: string, pred: (path: string) => boolean = () => true, timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.off('watch', on);
        reject(new Error(`no watch event for token ${token} within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (p: string, tok: string): void => {
        if (tok === token && pred(p)) {
          clearTimeout(t);
          this.off('watch', on);
          resolve(p);
        }
      };
      this.on('watch', on);
    });
  }

  get isClosed(): boolean {
    return this.closedErr !== null;
  }

  close(): void {
    this.sock.end();
    this.sock.destroy();
  }
}
