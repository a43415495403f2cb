// Positional file I/O on raw file descriptors, as promises, without the
// FileHandle wrapper (one allocation fewer per request on the hot path), and
// FileIo: the images' data path, optionally inline (see below).
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { IovCursor, preadvNoWait, preadvSpansNoWait, pwritevAt, type IoSpan } from '../sys/uio.js';
import { threadVoluntarySwitches } from '../sys/rusage.js';
import type { HostSpan } from './image.js';

const bufOf = (s: HostSpan): Uint8Array => s.buf;

/** Buffers for the thread pool: spans' views, or the buffers themselves. */
function viewsOf(list: readonly Uint8Array[] | readonly HostSpan[], spans: boolean): readonly Uint8Array[] {
  return spans ? (list as readonly HostSpan[]).map(bufOf) : (list as readonly Uint8Array[]);
}

/** Read into `buf` at file position `pos` until full or end of file; returns bytes read. */
export function preadFull(fd: number, buf: Uint8Array, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (): void => {
      fs.read(fd, buf, done, buf.length - done, pos + done, (err, n) => {
        if (err) return reject(err);
        done += n;
        if (n === 0 || done >= buf.length) return resolve(done);
        step();
      });
    };
    if (buf.length === 0) resolve(0);
    else step();
  });
}

/** Write all of `buf` at file position `pos`. */
export function pwriteAll(fd: number, buf: Uint8Array, pos: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (): void => {
      fs.write(fd, buf, done, buf.length - done, pos + done, (err, n) => {
        if (err) return reject(err);
        done += n;
        if (done >= buf.length) return resolve();
        if (n === 0) return reject(new Error('short write'));
        step();
      });
    };
    if (buf.length === 0) resolve();
    else step();
  });
}

export function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

export function ftruncate(fd: number, len: number): Promise<void> {
  return new Promise((resolve, reject) => fs.ftruncate(fd, len, (err) => (err ? reject(err) : resolve())));
}

export function fstat(fd: number): Promise<fs.Stats> {
  return new Promise((resolve, reject) => fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st))));
}

export function closeFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
}

/** Size in bytes of a block device, from sysfs (no ioctl needed). */
export function blockDeviceSize(st: fs.Stats): number {
  const rdev = st.rdev;
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & ~0xff);
  const sectors = fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim();
  return Number(sectors) * 512;
}

/** A simple FIFO mutex. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();
  async lock(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => next);
    await prev;
    return release;
  }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.lock();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

/** The buffer list without its first n bytes. */
export function advanceBufs(bufs: readonly Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const b of bufs) {
    if (n >= b.length) {
      n -= b.length;
      continue;
    }
    out.push(n > 0 ? b.subarray(n) : b);
    n = 0;
  }
  return out;
}

/** The pieces of a buffer list covering bytes [start, start+len). */
export function sliceBufs(bufs: readonly Uint8Array[], start: number, len: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const end = start + len;
  let pos = 0;
  for (const b of bufs) {
    const bEnd = pos + b.length;
    if (bEnd > start && pos < end) out.push(b.subarray(Math.max(start, pos) - pos, Math.min(end, bEnd) - pos));
    pos = bEnd;
    if (pos >= end) break;
  }
  return out;
}

export function bufsLength(bufs: readonly Uint8Array[]): number {
  let n = 0;
  for (const b of bufs) n += b.length;
  return n;
}

function readvAsync(fd: number, bufs: Uint8Array[], pos: number): Promise<number> {
  return new Promise((resolve, reject) => fs.readv(fd, bufs, pos, (err, n) => (err ? reject(err) : resolve(n))));
}

function writevAsync(fd: number, bufs: Uint8Array[], pos: number): Promise<number> {
  return new Promise((resolve, reject) => fs.writev(fd, bufs, pos, (err, n) => (err ? reject(err) : resolve(n))));
}

/**
 * Most bytes per write system call. A buffered write into a hole (a fresh
 * image) makes the kernel allocate page-cache folios as large as the write
 * allows (Linux 6.x, ext4 large folios): a 1 MiB aligned write takes a
 * 1 MiB folio from the high-order free lists. On a virtual machine with
 * free page reporting (the build hosts: PVM, page_reporting_order=11) those
 * high-order blocks are the memory handed back to the hypervisor, and the
 * first touch of every page of such a folio costs a host fault. Measured on
 * the backend (guest dd, 256 MiB into a fresh raw image): 415-472 ms of
 * backend CPU as 1 MiB writes, 240-432 ms as 256 KiB writes, 127 ms as
 * 64 KiB writes, against 80 ms for a rewrite and 119-124 ms for
 * qemu-storage-daemon (whose seg_max of 126 splits a 1 MiB request into
 * unaligned pieces). Sixteen system calls per MiB cost ~40 µs.
 */
export const WRITE_CHUNK = 64 * 1024;

/** The first buffers of `bufs` holding at most `max` bytes (at least one byte), and the rest. */
export function splitBufs(bufs: readonly Uint8Array[], max: number): [Uint8Array[], Uint8Array[]] {
  let n = 0;
  for (let i = 0; i < bufs.length; i++) {
    const b = bufs[i];
    if (n + b.length > max) {
      if (i === 0) return [[b.subarray(0, max)], [b.subarray(max), ...bufs.slice(1)]];
      if (n === max) return [bufs.slice(0, i), bufs.slice(i)];
      const k = max - n;
      return [[...bufs.slice(0, i), b.subarray(0, k)], [b.subarray(k), ...bufs.slice(i + 1)]];
    }
    n += b.length;
  }
  return [bufs as Uint8Array[], []];
}

/** An inline write slower than this that slept (blocked) moves writes to the thread pool for a while. */
const SLOW_INLINE_WRITE_MS = 10;
const POOL_AFTER_SLOW_WRITE_MS = 1000;

/**
 * Vectored positional I/O on one fd, straight between the file and the
 * caller's buffers (guest memory, for the block backend).
 *
 * Default: every call goes through libuv's thread pool (fs.readv/writev),
 * which never blocks the event loop. With `inline` (the block backend's
 * own process), I/O the kernel can serve from the page cache runs on the
 * calling thread, which saves two thread hand-offs per request — on a busy
 * 2-core host the biggest cost of a request:
 *   - reads use preadv2(RWF_NOWAIT): the page cache or EAGAIN, never a
 *     wait for the disk; what would block goes to the pool;
 *   - writes are plain pwritev (Linux has no non-blocking buffered write on
 *     ext4 / tmpfs: RWF_NOWAIT is refused with EOPNOTSUPP). A write into
 *     the page cache is a memcpy; when one takes longer than 10 ms and the
 *     thread slept meanwhile (dirty page throttling, a journal commit: a
 *     voluntary context switch, getrusage) writes go to the pool for the
 *     next second, so a slow disk cannot stall the loop for long. A write
 *     that was merely preempted on a busy host stays inline: the pool's two
 *     thread hand-offs per request would only add to the wait.
 */
export class FileIo {
  private poolUntil = 0;
  readonly stats = { inlineReads: 0, poolReads: 0, inlineWrites: 0, poolWrites: 0, blockedWrites: 0 };

  constructor(
    readonly fd: number,
    readonly inline = false,
  ) {}

  /** Fill `bufs` from file position `pos` until full or end of file; returns the bytes read. */
  readv(bufs: readonly Uint8Array[], pos: number): Promise<number> {
    if (!this.inline) return this.readvPool(bufs as Uint8Array[], pos, 0);
    return this.readInline(bufs, pos, false);
  }

  /**
   * readv into spans of mapped memory (guest buffers) by address: no
   * Buffer view per piece unless the read goes to the thread pool.
   */
  readSpans(spans: readonly HostSpan[], pos: number): Promise<number> {
    if (!this.inline) return this.readvPool(spans.map(bufOf), pos, 0);
    return this.readInline(spans, pos, true);
  }

  /** From the page cache on this thread, as long as it has the data; the rest through the pool. */
  private readInline(list: readonly Uint8Array[] | readonly HostSpan[], pos: number, spans: boolean): Promise<number> {
    const at = new IovCursor();
    let total = 0;
    for (;;) {
      let n: number;
      try {
        n = spans ? preadvSpansNoWait(this.fd, list as readonly IoSpan[], pos + total, at) : preadvNoWait(this.fd, list as readonly Uint8Array[], pos + total, at);
      } catch (e) {
        return Promise.reject(e);
      }
      if (n < 0) return this.readvPool(at.rest(viewsOf(list, spans)), pos + total, total);
      this.stats.inlineReads++;
      if (n === 0) return Promise.resolve(total);
      total += n;
      at.advance(list, n);
      if (at.done(list)) return Promise.resolve(total);
    }
  }

  /** The thread pool's readv until full or end of file; `before` bytes were already read. */
  private async readvPool(bufs: Uint8Array[], pos: number, before: number): Promise<number> {
    let list = bufs;
    let total = 0;
    for (;;) {
      this.stats.poolReads++;
      const n = await readvAsync(this.fd, list, pos + total);
      if (n === 0) return before + total;
      total += n;
      list = advanceBufs(list, n);
      if (list.length === 0) return before + total;
    }
  }

  read(buf: Uint8Array, pos: number): Promise<number> {
    return buf.length === 0 ? Promise.resolve(0) : this.readv([buf], pos);
  }

  /**
   * Write all of `bufs` at file position `pos`, at most WRITE_CHUNK bytes
   * per pwritev (see WRITE_CHUNK).
   */
  writev(bufs: readonly Uint8Array[], pos: number): Promise<void> {
    return this.writeList(bufs, pos, false);
  }

  /** writev from spans of mapped memory (guest buffers) by address. */
  writeSpans(spans: readonly HostSpan[], pos: number): Promise<void> {
    return this.writeList(spans, pos, true);
  }

  private writeList(list: readonly Uint8Array[] | readonly HostSpan[], pos: number, spans: boolean): Promise<void> {
    const at = new IovCursor();
    if (this.inline) {
      // Did a slow inline write sleep (blocked), or was the thread just
      // preempted on a busy host? Only the first sends writes to the pool.
      const slept0 = threadVoluntarySwitches();
      while (!at.done(list) && performance.now() >= this.poolUntil) {
        const t0 = performance.now();
        let n: number;
        try {
          n = pwritevAt(this.fd, list, pos, at, WRITE_CHUNK, spans);
        } catch (e) {
          return Promise.reject(e);
        }
        const t1 = performance.now();
        if (t1 - t0 > SLOW_INLINE_WRITE_MS && threadVoluntarySwitches() > slept0) {
          this.poolUntil = t1 + POOL_AFTER_SLOW_WRITE_MS;
          this.stats.blockedWrites++;
        }
        this.stats.inlineWrites++;
        if (n === 0) return Promise.reject(new Error('short write'));
        pos += n;
        at.advance(list, n);
      }
      if (at.done(list)) return Promise.resolve();
    }
    return this.writevPool(at.rest(viewsOf(list, spans)), pos);
  }

  /** The thread pool's pwritev, WRITE_CHUNK bytes at a time. */
  private async writevPool(bufs: Uint8Array[], pos: number): Promise<void> {
    let list = bufs;
    while (list.length > 0) {
      const [piece, rest] = splitBufs(list, WRITE_CHUNK);
      const n = await writevAsync(this.fd, piece, pos);
      this.stats.poolWrites++;
      if (n === 0) throw new Error('short write');
      pos += n;
      // A short write leaves the unwritten tail of `piece` in front of `rest`.
      list = n < bufsLength(piece) ? [...advanceBufs(piece, n), ...rest] : rest;
    }
  }

  write(buf: Uint8Array, pos: number): Promise<void> {
    return buf.length === 0 ? Promise.resolve() : this.writev([buf], pos);
  }
}
