// The block backend's control channel (`--control PATH`; xvmd names it
// blk-<vdev>.ctl beside the vhost-user socket). One protocol for what xvmd
// asks of a running disk besides serving the guest:
//
// Snapshots in place (no backend restart, so QEMU never reconnects, and a
// paused guest's disk can be snapshotted: QEMU 7.2 sets a vhost-user disk
// up again only once after a reconnect while paused, docs/vhost-user.md):
//   - `freeze`: hold every ring, wait for what is in flight, flush;
//   - `switch` {image, format?}: (frozen) close the image and open the
//     snapshot's new top layer in its place (same size; back on the old
//     one if that fails);
//   - `thaw`: serve again, starting with what queued meanwhile;
//   - `status`: {image, format, frozen}.
//   A connection that goes away while the disk is frozen by it thaws it: a
//   dead xvmd never leaves a guest's disk hanging.
//
// Live migration of the disk:
//   - track what the guest writes: a dirty bitmap of fixed-size blocks
//     (`dirty-start`, `dirty-take` returns and clears it, `dirty-stop`);
//   - read and write the virtual disk (through the image: qcow2 chains read
//     flattened), to copy it to another host (`read`, `write`, `flush`);
//   - hand the image over: `release` flushes and closes it (the flock goes
//     with it, another backend may open it read-write), `open` opens it
//     (again) read-write. A backend started with `--defer-open` serves its
//     image read-only (to learn size and format) until `open`: the target's
//     backend of a migration on shared storage, whose guest does not run
//     before the source's backend let go of the image.
//   - `info`: size, format, open, writable, dirty block size.
//
// Messages, both ways: u32 BE length of a JSON object, the JSON, u32 BE
// length of a binary payload, the payload (the data of `read` answers and
// `write` requests; empty otherwise). Requests on one connection are
// answered one at a time, in order; every answer has `ok` (and `error`
// when false). A malformed message closes the connection.
import fs from 'node:fs';
import net from 'node:net';
import { isSpanImage, type BlockImage, type HostSpan, type SpanImage } from '../../storage/image.js';
import type { VectoredImage } from './io/engine.js';

/** Dirty tracking granularity: 64 KiB (a qcow2 cluster by default). */
export const DIRTY_BLOCK = 64 * 1024;
/** Largest read / write over the channel. */
export const MAX_CONTROL_IO = 4 * 1024 * 1024;

/**
 * A BlockImage in front of the real one: marks what is written in a dirty
 * bitmap when asked to, and lets the real image be closed and reopened
 * (hand-over) underneath the device. `readOnly` is what the device was
 * started with, whatever the image underneath is opened as.
 */
const bufOf = (s: HostSpan): Uint8Array => s.buf;

export class SwitchableImage implements BlockImage, VectoredImage, SpanImage {
  readonly size: number;
  readonly format: 'raw' | 'qcow2';
  private dirty: Uint8Array | null = null;
  private dirtyCount = 0;
  private inFlight = 0;
  private idle: (() => void)[] = [];

  constructor(
    private img: BlockImage | null,
    readonly readOnly: boolean,
    private readonly reopen: (readOnly: boolean) => Promise<BlockImage>,
  ) {
    if (!img) throw new Error('an image is needed to start');
    this.size = img.size;
    this.format = img.format;
  }

  /** Whether the image underneath is open read-write. */
  get writable(): boolean {
    return this.img !== null && !this.img.readOnly;
  }
  get open(): boolean {
    return this.img !== null;
  }

  private cur(): BlockImage {
    if (!this.img) throw new Error('the disk image was handed over (released for migration)');
    return this.img;
  }

  /** One I/O on the current image, counted (release waits for none in flight). No extra async frame on the data path. */
  private run<T>(fn: (img: BlockImage) => Promise<T>): Promise<T> {
    let p: Promise<T>;
    try {
      p = fn(this.cur());
    } catch (e) {
      return Promise.reject(e);
    }
    this.inFlight++;
    return p.finally(this.done);
  }
  private readonly done = (): void => {
    if (--this.inFlight === 0 && this.idle.length) for (const w of this.idle.splice(0)) w();
  };

  private mark(offset: number, length: number): void {
    const d = this.dirty;
    if (!d || length <= 0) return;
    const first = Math.floor(offset / DIRTY_BLOCK);
    const last = Math.min(d.length * 8 - 1, Math.floor((offset + length - 1) / DIRTY_BLOCK));
    for (let b = first; b <= last; b++) {
      const m = 1 << (b & 7);
      if ((d[b >> 3]! & m) === 0) {
        d[b >> 3]! |= m;
        this.dirtyCount++;
      }
    }
  }

  /**
   * Marked before and after the write: a copy that read the block in
   * between sees it dirty again, and a write that was in flight when
   * tracking began is marked when it lands.
   */
  private written(offset: number, length: number, fn: (img: BlockImage) => Promise<void>): Promise<void> {
    this.mark(offset, length);
    return this.run(fn).then(() => this.mark(offset, length));
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.run((i) => i.read(buf, offset));
  }
  write(buf: Uint8Array, offset: number): Promise<void> {
    return this.written(offset, buf.length, (i) => i.write(buf, offset));
  }
  readv(bufs: Uint8Array[], offset: number): Promise<void> {
    return this.run((i) => this.readvOn(i, bufs, offset));
  }
  private readvOn(i: BlockImage, bufs: Uint8Array[], offset: number): Promise<void> {
    const v = i as BlockImage & Partial<VectoredImage>;
    if (v.readv) return v.readv(bufs, offset);
    return readSeq(i, bufs, offset);
  }
  private writevOn(i: BlockImage, bufs: Uint8Array[], offset: number): Promise<void> {
    const v = i as BlockImage & Partial<VectoredImage>;
    if (v.writev) return v.writev(bufs, offset);
    return i.write(Buffer.concat(bufs), offset);
  }
  /** Spans (guest memory by address) when the image underneath takes them (raw), else its buffers. */
  readSpans(spans: readonly HostSpan[], offset: number): Promise<void> {
    return this.run((i) => (isSpanImage(i) ? i.readSpans(spans, offset) : this.readvOn(i, spans.map(bufOf), offset)));
  }
  writeSpans(spans: readonly HostSpan[], offset: number): Promise<void> {
    let len = 0;
    for (const s of spans) len += s.byteLength;
    return this.written(offset, len, (i) => (isSpanImage(i) ? i.writeSpans(spans, offset) : this.writevOn(i, spans.map(bufOf), offset)));
  }
  writev(bufs: Uint8Array[], offset: number): Promise<void> {
    let len = 0;
    for (const b of bufs) len += b.length;
    return this.written(offset, len, (i) => this.writevOn(i, bufs, offset));
  }
  flush(): Promise<void> {
    return this.run((i) => i.flush());
  }
  discard(offset: number, length: number): Promise<void> {
    return this.written(offset, length, (i) => i.discard(offset, length));
  }
  writeZeroes(offset: number, length: number, unmap: boolean): Promise<void> {
    return this.written(offset, length, (i) => i.writeZeroes(offset, length, unmap));
  }
  async close(): Promise<void> {
    const i = this.img;
    this.img = null;
    if (i) await i.close();
  }

  // ---------------------------------------------------------------- migration

  dirtyStart(): void {
    this.dirty = new Uint8Array(Math.ceil(Math.ceil(this.size / DIRTY_BLOCK) / 8));
    this.dirtyCount = 0;
  }
  dirtyStop(): void {
    this.dirty = null;
    this.dirtyCount = 0;
  }
  get dirtyBlocks(): number {
    return this.dirtyCount;
  }
  /** The dirty block numbers (u32 LE each), and a clear bitmap. */
  dirtyTake(): Buffer {
    const d = this.dirty;
    if (!d) throw new Error('dirty tracking is not on');
    const out = Buffer.alloc(this.dirtyCount * 4);
    let n = 0;
    for (let i = 0; i < d.length; i++) {
      const byte = d[i]!;
      if (byte === 0) continue;
      for (let b = 0; b < 8; b++) if (byte & (1 << b)) out.writeUInt32LE(i * 8 + b, 4 * n++);
      d[i] = 0;
    }
    this.dirtyCount = 0;
    return out.subarray(0, n * 4);
  }

  private async drained(): Promise<void> {
    if (this.inFlight > 0) await new Promise<void>((r) => this.idle.push(r));
  }

  /** Flush and close the image; I/O fails until open(). */
  async release(): Promise<void> {
    await this.drained();
    const i = this.img;
    if (!i) return;
    await i.flush().catch(() => undefined);
    this.img = null;
    await i.close();
  }

  /**
   * A snapshot switch: close the image, open `next()` in its place (the new
   * top layer opens the old file as its backing file, so the old handle must
   * be closed first); on failure, `back()` reopens the old one and the
   * error is thrown. The caller has frozen the device (nothing in flight).
   */
  async replace(next: () => Promise<BlockImage>, back: () => Promise<BlockImage>): Promise<BlockImage> {
    await this.drained();
    const old = this.img;
    this.img = null;
    if (old) await old.close();
    let img: BlockImage | null = null;
    try {
      img = await next();
      if (img.size !== this.size) throw new Error(`the new image is ${img.size} bytes, the disk ${this.size}`);
      if (img.readOnly && !this.readOnly) throw new Error('the new image is read-only and the disk is writable');
      this.img = img;
      return img;
    } catch (e) {
      await img?.close().catch(() => undefined);
      if (old) this.img = await back();
      throw e;
    }
  }

  /** (Re)open the image read-write (or as the device was started); the old handle, if any, is closed first. */
  async openRw(): Promise<void> {
    await this.drained();
    if (this.img && (this.readOnly || !this.img.readOnly)) return;
    const next = await this.reopen(this.readOnly);
    if (next.size !== this.size) {
      await next.close();
      throw new Error(`the image's size changed (${this.size} → ${next.size})`);
    }
    const old = this.img;
    this.img = next;
    if (old) await old.close();
  }
}

async function readSeq(img: BlockImage, bufs: Uint8Array[], offset: number): Promise<void> {
  for (const b of bufs) {
    await img.read(b, offset);
    offset += b.length;
  }
}

// ---------------------------------------------------------------- framing

function encode(msg: Record<string, unknown>, data?: Buffer): Buffer[] {
  const j = Buffer.from(JSON.stringify(msg), 'utf8');
  const h = Buffer.alloc(4);
  h.writeUInt32BE(j.length, 0);
  const l = Buffer.alloc(4);
  l.writeUInt32BE(data?.length ?? 0, 0);
  return data && data.length ? [h, j, l, data] : [h, j, l];
}

/** Splits a byte stream into {msg, data} messages. */
class MessageParser {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly onMessage: (msg: Record<string, unknown>, data: Buffer) => void) {}
  push(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    for (;;) {
      if (this.buf.length < 4) return;
      const jl = this.buf.readUInt32BE(0);
      if (jl > 1 << 20) throw new Error('control message too long');
      if (this.buf.length < 8 + jl) return;
      const dl = this.buf.readUInt32BE(4 + jl);
      if (dl > MAX_CONTROL_IO + 4096 + (1 << 22)) throw new Error('control payload too long');
      if (this.buf.length < 8 + jl + dl) return;
      let msg: unknown;
      try {
        msg = JSON.parse(this.buf.subarray(4, 4 + jl).toString('utf8'));
      } catch {
        throw new Error('control message is not JSON');
      }
      if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) throw new Error('control message is not a JSON object');
      const data = Buffer.from(this.buf.subarray(8 + jl, 8 + jl + dl));
      this.buf = this.buf.subarray(8 + jl + dl);
      this.onMessage(msg as Record<string, unknown>, data);
    }
  }
}

// ---------------------------------------------------------------- server (in the backend)

/** What the backend program gives the channel besides the image. */
export interface ControlHooks {
  /** Hold every ring and wait until nothing is in flight; flush. */
  freeze(): Promise<void>;
  /** Serve again. */
  thaw(): void;
  readonly frozen: boolean;
  /** (Frozen) serve this file instead: a snapshot's new top layer. */
  switchTo(image: string, format: 'raw' | 'qcow2' | undefined): Promise<void>;
  /** The file served now and its format. */
  current(): { image: string; format: string };
}

export interface ControlServer {
  close(): void;
}

export function serveControl(socketPath: string, image: SwitchableImage, hooks: ControlHooks, log: (m: string) => void): Promise<ControlServer> {
  fs.rmSync(socketPath, { force: true });
  const conns = new Set<net.Socket>();
  const server = net.createServer((c) => {
    conns.add(c);
    /** This connection froze the disk (and has not thawed it). */
    const held = { frozen: false };
    let chain = Promise.resolve();
    const parser = new MessageParser((msg, data) => {
      chain = chain.then(async () => {
        let out: Buffer[];
        try {
          const { reply, payload } = await handle(image, hooks, held, msg, data, log);
          out = encode({ ok: true, ...reply }, payload);
        } catch (e) {
          out = encode({ ok: false, error: (e as Error).message });
        }
        if (!c.destroyed) for (const b of out) c.write(b);
      });
    });
    c.on('data', (d: Buffer) => {
      try {
        parser.push(d);
      } catch (e) {
        log(`control: ${(e as Error).message}`);
        c.end(Buffer.concat(encode({ ok: false, error: (e as Error).message })));
        c.destroy();
      }
    });
    c.on('error', () => undefined);
    c.on('close', () => {
      conns.delete(c);
      void chain.then(() => {
        if (held.frozen && hooks.frozen) {
          log('control: the client that froze the disk went away; thawing it');
          hooks.thaw();
        }
      });
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve({
        close() {
          server.close();
          for (const c of conns) c.destroy();
          fs.rmSync(socketPath, { force: true });
        },
      });
    });
  });
}

function num(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error(`bad ${what}`);
  return v;
}

async function handle(
  img: SwitchableImage,
  hooks: ControlHooks,
  held: { frozen: boolean },
  msg: Record<string, unknown>,
  data: Buffer,
  log: (m: string) => void,
): Promise<{ reply: Record<string, unknown>; payload?: Buffer }> {
  switch (msg.op) {
    case 'info':
      return { reply: { size: img.size, format: img.format, readOnly: img.readOnly, open: img.open, writable: img.writable, dirtyBlock: DIRTY_BLOCK } };
    case 'status':
      return { reply: { ...hooks.current(), frozen: hooks.frozen } };
    case 'freeze':
      await hooks.freeze();
      held.frozen = true;
      return { reply: {} };
    case 'switch': {
      if (typeof msg.image !== 'string' || msg.image === '' || msg.image.includes('\0')) throw new Error('switch: "image" must be a file path');
      if (msg.format !== undefined && msg.format !== 'raw' && msg.format !== 'qcow2') throw new Error('switch: "format" must be raw or qcow2');
      if (!hooks.frozen) throw new Error('switch: freeze the disk first');
      await hooks.switchTo(msg.image, msg.format as 'raw' | 'qcow2' | undefined);
      return { reply: { ...hooks.current(), frozen: hooks.frozen } };
    }
    case 'thaw':
      hooks.thaw();
      held.frozen = false;
      return { reply: {} };
    case 'dirty-start':
      img.dirtyStart();
      log('control: dirty tracking on');
      return { reply: { blocks: Math.ceil(img.size / DIRTY_BLOCK), blockSize: DIRTY_BLOCK } };
    case 'dirty-take': {
      const list = img.dirtyTake();
      return { reply: { count: list.length / 4 }, payload: list };
    }
    case 'dirty-stop':
      img.dirtyStop();
      return { reply: {} };
    case 'read': {
      const off = num(msg.offset, 'offset');
      const len = num(msg.length, 'length');
      if (len > MAX_CONTROL_IO || off + len > img.size) throw new Error('read out of range');
      const buf = Buffer.alloc(len);
      await img.read(buf, off);
      return { reply: { length: len }, payload: buf };
    }
    case 'write': {
      const off = num(msg.offset, 'offset');
      if (msg.zero !== undefined) {
        const len = num(msg.zero, 'length');
        if (off + len > img.size) throw new Error('write out of range');
        await img.writeZeroes(off, len, false);
      } else {
        if (data.length > MAX_CONTROL_IO || off + data.length > img.size) throw new Error('write out of range');
        await img.write(data, off);
      }
      return { reply: {} };
    }
    case 'flush':
      await img.flush();
      return { reply: {} };
    case 'release':
      await img.release();
      log('control: image released (flushed and closed) for a migration');
      return { reply: {} };
    case 'open':
      await img.openRw();
      log('control: image opened read-write');
      return { reply: {} };
    default:
      throw new Error(`unknown op ${JSON.stringify(msg.op)}`);
  }
}

// ---------------------------------------------------------------- client (in xvmd)

/** xvmd's side of one backend's control channel. */
export class BlkControlClient {
  private parser: MessageParser;
  private waiting: { resolve: (r: { msg: Record<string, unknown>; data: Buffer }) => void; reject: (e: Error) => void }[] = [];
  private closedErr: Error | undefined;

  private constructor(private readonly sock: net.Socket, readonly what: string) {
    this.parser = new MessageParser((msg, data) => {
      const w = this.waiting.shift();
      if (!w) return;
      if (msg.ok === true) w.resolve({ msg, data });
      else w.reject(new Error(`${what}: ${String(msg.error ?? 'failed')}`));
    });
    sock.on('data', (d: Buffer) => this.parser.push(d));
    const fail = (e: Error) => {
      this.closedErr ??= e;
      for (const w of this.waiting.splice(0)) w.reject(this.closedErr);
    };
    sock.on('error', (e) => fail(new Error(`${what}: ${e.message}`)));
    sock.on('close', () => fail(new Error(`${what}: the disk backend closed its control channel (did it exit?)`)));
  }

  static connect(socketPath: string, what: string): Promise<BlkControlClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(socketPath);
      s.once('connect', () => resolve(new BlkControlClient(s, what)));
      s.once('error', (e) => reject(new Error(`${what}: cannot reach the disk backend's control channel ${socketPath}: ${e.message}`)));
    });
  }

  /** One request; a backend that does not answer within `timeoutMs` fails it (and the channel: answers come in order). */
  request(msg: Record<string, unknown>, data?: Buffer, timeoutMs = 60_000): Promise<{ msg: Record<string, unknown>; data: Buffer }> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.closedErr ??= new Error(`${this.what}: the disk backend did not answer '${String(msg.op)}' within ${timeoutMs / 1000} s`);
        this.sock.destroy();
      }, timeoutMs);
      this.waiting.push({
        resolve: (r) => {
          clearTimeout(t);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      });
      for (const b of encode(msg, data)) this.sock.write(b);
    });
  }

  async dirtyTake(): Promise<number[]> {
    const r = await this.request({ op: 'dirty-take' });
    const out: number[] = [];
    for (let o = 0; o + 4 <= r.data.length; o += 4) out.push(r.data.readUInt32LE(o));
    return out;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return (await this.request({ op: 'read', offset, length })).data;
  }

  close(): void {
    this.sock.destroy();
  }
}
