// Durability: a write-ahead log with per-record CRC32, group commit with
// fdatasync, and periodic compaction into an atomically renamed snapshot.
//
// Files in the data directory:
//   store.wal    "XVMWAL01" then records: u32 len | u32 crc32(payload) | payload
//   store.snap   "XVMSNAP1" u64 seq | u32 count | count × put-op | u32 crc32(all before)
//   store.snap.tmp  a snapshot being written (ignored and removed at open)
//   lock         pid of the process that has the directory open
//
// A record's payload is one commit: u64 seq | u32 nops | ops. An op is
//   1 put: u16 pathlen | path | u32 vallen | value | u16 nperms | nperms × (u8 letter, u16 domid)
//   2 del: u16 pathlen | path
// Records are appended in commit order and acknowledged only after the
// fdatasync that covers them returned. At open, records are read until the
// first one that is short or fails its checksum; that tail was never
// acknowledged (the next batch is written only after the previous sync), so
// it is cut off.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { StoreError } from './errors.js';
import type { Perm, PermLetter } from './perms.js';

export type Op =
  | { kind: 'put'; path: string; value: Buffer; perms: Perm[] }
  | { kind: 'del'; path: string };

export interface Commit {
  seq: number;
  ops: Op[];
}

const WAL_MAGIC = Buffer.from('XVMWAL01');
const SNAP_MAGIC = Buffer.from('XVMSNAP1');
/** A sane upper bound for one record; anything larger at open is garbage. */
const MAX_RECORD = 256 * 1024 * 1024;

const crc32 = (b: Buffer): number => zlib.crc32(b) >>> 0;

// ---- encoding ----------------------------------------------------------

class Writer {
  buf: Buffer;
  off = 0;
  constructor(size = 256) {
    this.buf = Buffer.allocUnsafe(size);
  }
  ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.off + n) size *= 2;
    const nb = Buffer.allocUnsafe(size);
    this.buf.copy(nb, 0, 0, this.off);
    this.buf = nb;
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf[this.off++] = v;
  }
  u16(v: number): void {
    this.ensure(2);
    this.buf.writeUInt16LE(v, this.off);
    this.off += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(v >>> 0, this.off);
    this.off += 4;
  }
  u64(v: number): void {
    this.u32(v % 0x100000000);
    this.u32(Math.floor(v / 0x100000000));
  }
  bytes(b: Buffer): void {
    this.ensure(b.length);
    b.copy(this.buf, this.off);
    this.off += b.length;
  }
  str16(s: string): void {
    const n = Buffer.byteLength(s, 'latin1');
    this.u16(n);
    this.ensure(n);
    this.buf.write(s, this.off, 'latin1');
    this.off += n;
  }
  done(): Buffer {
    return this.buf.subarray(0, this.off);
  }
}

class Reader {
  off = 0;
  constructor(readonly buf: Buffer, readonly end = buf.length) {}
  need(n: number): void {
    if (this.off + n > this.end) throw new Error('truncated');
  }
  u8(): number {
    this.need(1);
    return this.buf[this.off++];
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16LE(this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.off);
    this.off += 4;
    return v;
  }
  u64(): number {
    const lo = this.u32();
    const hi = this.u32();
    return hi * 0x100000000 + lo;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const b = Buffer.from(this.buf.subarray(this.off, this.off + n));
    this.off += n;
    return b;
  }
  str16(): string {
    const n = this.u16();
    this.need(n);
    const s = this.buf.toString('latin1', this.off, this.off + n);
    this.off += n;
    return s;
  }
}

function writeOp(w: Writer, op: Op): void {
  if (op.kind === 'del') {
    w.u8(2);
    w.str16(op.path);
    return;
  }
  w.u8(1);
  w.str16(op.path);
  w.u32(op.value.length);
  w.bytes(op.value);
  w.u16(op.perms.length);
  for (const p of op.perms) {
    w.u8(p.perm.charCodeAt(0));
    w.u16(p.domid);
  }
}

const LETTERS = new Set(['n', 'r', 'w', 'b']);

function readOp(r: Reader): Op {
  const kind = r.u8();
  const p = r.str16();
  if (p[0] !== '/') throw new Error('bad path');
  if (kind === 2) return { kind: 'del', path: p };
  if (kind !== 1) throw new Error(`bad op kind ${kind}`);
  const vlen = r.u32();
  const value = r.bytes(vlen);
  const n = r.u16();
  if (n === 0) throw new Error('node without permissions');
  const perms: Perm[] = [];
  for (let i = 0; i < n; i++) {
    const letter = String.fromCharCode(r.u8());
    if (!LETTERS.has(letter)) throw new Error('bad permission letter');
    perms.push({ perm: letter as PermLetter, domid: r.u16() });
  }
  return { kind: 'put', path: p, value, perms };
}

/** One framed WAL record (header + payload) for a commit. */
export function encodeRecord(c: Commit): Buffer {
  const w = new Writer(64);
  w.u32(0);
  w.u32(0);
  w.u64(c.seq);
  w.u32(c.ops.length);
  for (const op of c.ops) writeOp(w, op);
  const rec = w.done();
  const payload = rec.subarray(8);
  rec.writeUInt32LE(payload.length, 0);
  rec.writeUInt32LE(crc32(payload), 4);
  return rec;
}

export function decodeRecords(buf: Buffer, start: number): { commits: Commit[]; validEnd: number; error?: string } {
  const commits: Commit[] = [];
  let off = start;
  while (off < buf.length) {
    if (buf.length - off < 8) return { commits, validEnd: off, error: `short record header at ${off}` };
    const len = buf.readUInt32LE(off);
    const crc = buf.readUInt32LE(off + 4);
    if (len > MAX_RECORD || off + 8 + len > buf.length) return { commits, validEnd: off, error: `short record at ${off}` };
    const payload = buf.subarray(off + 8, off + 8 + len);
    if (crc32(payload) !== crc) return { commits, validEnd: off, error: `checksum mismatch at ${off}` };
    try {
      const r = new Reader(payload);
      const seq = r.u64();
      const n = r.u32();
      const ops: Op[] = [];
      for (let i = 0; i < n; i++) ops.push(readOp(r));
      if (r.off !== payload.length) throw new Error('trailing bytes');
      commits.push({ seq, ops });
    } catch (e) {
      return { commits, validEnd: off, error: `undecodable record at ${off}: ${(e as Error).message}` };
    }
    off += 8 + len;
  }
  return { commits, validEnd: off };
}

export function encodeSnapshot(seq: number, nodes: Iterable<Extract<Op, { kind: 'put' }>>): Buffer {
  const w = new Writer(64 * 1024);
  w.bytes(SNAP_MAGIC);
  w.u64(seq);
  const countAt = w.off;
  w.u32(0);
  let n = 0;
  for (const op of nodes) {
    writeOp(w, op);
    n++;
  }
  w.buf.writeUInt32LE(n, countAt);
  w.u32(0);
  const all = w.done();
  all.writeUInt32LE(crc32(all.subarray(0, all.length - 4)), all.length - 4);
  return all;
}

export function decodeSnapshot(buf: Buffer): { seq: number; puts: Extract<Op, { kind: 'put' }>[] } {
  if (buf.length < SNAP_MAGIC.length + 16 || !buf.subarray(0, 8).equals(SNAP_MAGIC)) throw new Error('not a store snapshot');
  const body = buf.subarray(0, buf.length - 4);
  if (crc32(body) !== buf.readUInt32LE(buf.length - 4)) throw new Error('snapshot checksum mismatch');
  const r = new Reader(body);
  r.off = 8;
  const seq = r.u64();
  const n = r.u32();
  const puts: Extract<Op, { kind: 'put' }>[] = [];
  for (let i = 0; i < n; i++) {
    const op = readOp(r);
    if (op.kind !== 'put') throw new Error('snapshot holds a non-put op');
    puts.push(op);
  }
  if (r.off !== body.length) throw new Error('trailing bytes in snapshot');
  return { seq, puts };
}

// ---- the log -----------------------------------------------------------

export interface WalOptions {
  /** Compact once the log is larger than this many bytes (and larger than the last snapshot). */
  compactBytes?: number;
  /** Skip fdatasync (benchmark comparison only: not durable). */
  noSync?: boolean;
}

export interface Recovered {
  seq: number;
  snapshot: Extract<Op, { kind: 'put' }>[] | null;
  commits: Commit[];
  /** Bytes cut from an unacknowledged torn tail, if any. */
  truncatedBytes: number;
  note?: string;
}

export interface SnapshotSource {
  /** Serialize the whole tree as it is now (every applied commit). */
  snapshot(): { seq: number; data: Buffer };
}

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
}

export class Wal {
  private fh: fsp.FileHandle;
  private walBytes: number;
  private snapBytes: number;
  private queue: Buffer[] = [];
  private queueBytes = 0;
  private waiters: Waiter[] = [];
  private flushing: Promise<void> | null = null;
  private readonly inflight = new Set<Promise<void>>();
  private lastAck: Promise<void> = Promise.resolve();
  /** fdatasyncs allowed to overlap (see flushLoop). */
  readonly maxSyncs = 3;
  private failed: Error | null = null;
  private closed = false;
  private source: SnapshotSource | null = null;
  private tail: Promise<void> = Promise.resolve();
  readonly compactBytes: number;
  readonly noSync: boolean;
  /** Counters for docs and the benchmark. */
  stats = { syncs: 0, records: 0, compactions: 0 };

  private constructor(readonly dir: string, fh: fsp.FileHandle, walBytes: number, snapBytes: number, opts: WalOptions) {
    this.fh = fh;
    this.walBytes = walBytes;
    this.snapBytes = snapBytes;
    this.compactBytes = opts.compactBytes ?? 8 * 1024 * 1024;
    this.noSync = opts.noSync ?? false;
  }

  get walPath(): string {
    return path.join(this.dir, 'store.wal');
  }

  /** Read the snapshot and the log, cut a torn tail, and open the log for appending. */
  static async open(dir: string, opts: WalOptions = {}): Promise<{ wal: Wal; recovered: Recovered }> {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const walPath = path.join(dir, 'store.wal');
    const snapPath = path.join(dir, 'store.snap');
    fs.rmSync(path.join(dir, 'store.snap.tmp'), { force: true });

    let snapshot: Recovered['snapshot'] = null;
    let seq = 0;
    let snapBytes = 0;
    if (fs.existsSync(snapPath)) {
      const buf = fs.readFileSync(snapPath);
      try {
        const s = decodeSnapshot(buf);
        snapshot = s.puts;
        seq = s.seq;
        snapBytes = buf.length;
      } catch (e) {
        throw new StoreError('EIO', `store snapshot ${snapPath} is unreadable: ${(e as Error).message}`);
      }
    }

    let commits: Commit[] = [];
    let truncatedBytes = 0;
    let note: string | undefined;
    let walBytes = WAL_MAGIC.length;
    let fresh = true;
    if (fs.existsSync(walPath)) {
      const buf = fs.readFileSync(walPath);
      if (buf.length >= WAL_MAGIC.length) {
        if (!buf.subarray(0, WAL_MAGIC.length).equals(WAL_MAGIC)) {
          throw new StoreError('EIO', `${walPath} is not a store log (bad magic)`);
        }
        fresh = false;
        const r = decodeRecords(buf, WAL_MAGIC.length);
        commits = r.commits.filter((c) => c.seq > seq);
        for (const c of r.commits) if (c.seq > seq) seq = c.seq;
        if (r.validEnd < buf.length) {
          truncatedBytes = buf.length - r.validEnd;
          note = r.error;
          const fd = fs.openSync(walPath, 'r+');
          fs.ftruncateSync(fd, r.validEnd);
          fs.fsyncSync(fd);
          fs.closeSync(fd);
        }
        walBytes = r.validEnd;
      }
    }
    if (fresh) {
      // Missing, or shorter than its magic (a crash while creating it): start anew.
      const fd = fs.openSync(walPath, 'w', 0o600);
      fs.writeSync(fd, WAL_MAGIC);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fsyncDir(dir);
    }
    const fh = await fsp.open(walPath, 'a');
    const wal = new Wal(dir, fh, walBytes, snapBytes, opts);
    return { wal, recovered: { seq, snapshot, commits, truncatedBytes, note } };
  }

  setSnapshotSource(src: SnapshotSource): void {
    this.source = src;
  }

  /** Queue a framed record; resolves once it is on stable storage. */
  append(record: Buffer): Promise<void> {
    if (this.failed) return Promise.reject(new StoreError('EIO', `store log failed earlier: ${this.failed.message}`));
    if (this.closed) return Promise.reject(new StoreError('EIO', 'store is closed'));
    this.queue.push(record);
    this.queueBytes += record.length;
    this.stats.records++;
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    p.catch(() => {});
    this.tail = p;
    if (!this.flushing) this.flushing = this.flushLoop();
    return p;
  }

  /** Resolves once every record appended so far is durable. */
  barrier(): Promise<void> {
    if (this.failed) return Promise.reject(new StoreError('EIO', `store log failed earlier: ${this.failed.message}`));
    return this.tail;
  }

  get isFailed(): Error | null {
    return this.failed;
  }

  /**
   * Group commit. Records queued while a batch is being written or synced
   * form the next batch. Batch writes are serialized (appends land in order);
   * up to `maxSyncs` fdatasyncs may overlap, so a batch does not wait for the
   * previous one's sync to finish before its own starts. A batch is
   * acknowledged only after its own sync returned and every earlier batch was
   * acknowledged (a sync covers everything written before it was issued).
   */
  private async flushLoop(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.failed) {
        // Let requests that arrived in the same tick join this batch.
        await new Promise<void>((r) => setImmediate(r));
        if (this.source && this.walBytes + this.queueBytes > this.compactBytes && this.walBytes > this.snapBytes) {
          await Promise.all(this.inflight);
          if (this.failed) return;
          await this.compact();
          continue;
        }
        if (this.inflight.size >= this.maxSyncs) {
          await Promise.race(this.inflight);
          continue;
        }
        const batch = this.queue;
        const waiters = this.waiters;
        this.queue = [];
        this.waiters = [];
        const bytes = this.queueBytes;
        this.queueBytes = 0;
        const data = batch.length === 1 ? batch[0] : Buffer.concat(batch, bytes);
        try {
          let off = 0;
          while (off < data.length) {
            const { bytesWritten } = await this.fh.write(data, off, data.length - off);
            off += bytesWritten;
          }
          this.walBytes += bytes;
        } catch (e) {
          this.fail(e as Error, waiters);
          return;
        }
        const prev = this.lastAck;
        const sync = this.noSync ? Promise.resolve() : this.fh.datasync();
        this.stats.syncs++;
        const done: Promise<void> = (async () => {
          try {
            await sync;
            await prev;
          } catch (e) {
            this.fail(e as Error, waiters);
            return;
          }
          if (this.failed) {
            const err = new StoreError('EIO', `store log write failed: ${this.failed.message}`);
            for (const w of waiters) w.reject(err);
            return;
          }
          for (const w of waiters) w.resolve();
        })();
        this.lastAck = done;
        this.inflight.add(done);
        void done.finally(() => this.inflight.delete(done));
      }
    } finally {
      this.flushing = null;
      if (this.queue.length > 0 && !this.failed) this.flushing = this.flushLoop();
    }
  }

  /** Write a snapshot of everything applied so far, then empty the log. */
  private async compact(): Promise<void> {
    const src = this.source!;
    const waiters = this.waiters;
    this.queue = [];
    this.queueBytes = 0;
    this.waiters = [];
    try {
      const { data } = src.snapshot();
      const tmp = path.join(this.dir, 'store.snap.tmp');
      const fh = await fsp.open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, path.join(this.dir, 'store.snap'));
      fsyncDir(this.dir);
      // The snapshot covers every record in the log: cut the log back to its magic.
      await this.fh.truncate(WAL_MAGIC.length);
      await this.fh.sync();
      this.walBytes = WAL_MAGIC.length;
      this.snapBytes = data.length;
      this.stats.compactions++;
      this.stats.syncs++;
    } catch (e) {
      this.fail(e as Error, waiters);
      return;
    }
    for (const w of waiters) w.resolve();
  }

  /** Force a compaction now (used at clean shutdown and by tests). */
  async compactNow(): Promise<void> {
    // Re-check after each wait: a record appended meanwhile restarts the flusher.
    do await this.idle();
    while (this.flushing || this.inflight.size > 0);
    if (!this.source || this.failed) return;
    this.flushing = this.compact().finally(() => {
      this.flushing = null;
    });
    await this.flushing;
    if (this.queue.length > 0 && !this.flushing) this.flushing = this.flushLoop();
  }

  private fail(e: Error, waiters: Waiter[]): void {
    this.failed = e;
    const err = new StoreError('EIO', `store log write failed: ${e.message}`);
    for (const w of waiters) w.reject(err);
    for (const w of this.waiters) w.reject(err);
    this.waiters = [];
    this.queue = [];
  }

  get sizes(): { walBytes: number; snapBytes: number } {
    return { walBytes: this.walBytes, snapBytes: this.snapBytes };
  }

  /** Wait until nothing is queued, being written or being synced. */
  private async idle(): Promise<void> {
    while (this.flushing || this.inflight.size > 0) {
      if (this.flushing) await this.flushing;
      await Promise.all(this.inflight);
    }
  }

  async close(): Promise<void> {
    await this.idle();
    this.closed = true;
    await this.fh.close();
  }
}

export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
