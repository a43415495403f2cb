// Vectored positional I/O on the calling thread for the storage layer:
// preadv2(RWF_NOWAIT) reads straight from the page cache when the data is
// there, or learns at once (EAGAIN) that the read would block, so the
// caller can send it to the thread pool instead; pwritev writes a piece.
// Owned by src/storage (io.ts).
//
// The iovec array is built without BigInt: a buffer's address is its
// ArrayBuffer's base address (looked up once per ArrayBuffer, then cached)
// plus its byteOffset, written as two 32-bit halves. Neighbouring buffers
// that continue each other in memory (a guest's page-sized descriptors of
// one contiguous buffer) become one iovec. For a guest's 1 MiB request of
// 256 pages this costs a few µs where koffi.address + BigInt per buffer
// cost ~30 µs.
import { c, koffi, SysError } from './libc.js';

const RWF_NOWAIT = 0x08;
/** Linux's UIO_MAXIOV. */
export const IOV_MAX = 1024;
const IOVEC = 16;
const iov = Buffer.alloc(IOVEC * IOV_MAX);
const iov32 = new Uint32Array(iov.buffer, iov.byteOffset, (IOVEC / 4) * IOV_MAX);
const TWO32 = 0x100000000;
let supported = true;

const pwritevRaw = c.pwritev;

// Base addresses of the ArrayBuffers seen. The two most recent are checked
// first (guest memory: one or two mapped regions). An ArrayBuffer's backing
// store does not move once it exists; reading `.buffer` makes it exist.
const bases = new WeakMap<ArrayBufferLike, number>();
let lastAb: ArrayBufferLike | null = null;
let lastBase = 0;
let prevAb: ArrayBufferLike | null = null;
let prevBase = 0;

function baseOf(ab: ArrayBufferLike): number {
  if (ab === lastAb) return lastBase;
  if (ab === prevAb) {
    const b = prevBase;
    prevAb = lastAb;
    prevBase = lastBase;
    lastAb = ab;
    lastBase = b;
    return b;
  }
  let b = bases.get(ab);
  if (b === undefined) {
    b = ab.byteLength === 0 ? 0 : Number(koffi.address(new Uint8Array(ab, 0, 1)));
    bases.set(ab, b);
  }
  prevAb = lastAb;
  prevBase = lastBase;
  lastAb = ab;
  lastBase = b;
  return b;
}

/** The address of a buffer's first byte (valid while the buffer lives). */
export function addressOf(b: Uint8Array): number {
  return baseOf(b.buffer) + b.byteOffset;
}

/**
 * A piece of memory by address (a guest buffer mapped in this process:
 * src/vhost's Segment), for I/O without a Buffer view per piece.
 */
export interface IoSpan {
  readonly addr: number;
  readonly byteLength: number;
}

/** What the cursor walks: Buffers, or spans (both have byteLength). */
type Sized = { readonly byteLength: number };

/**
 * A position in a buffer (or span) list (buffer index, byte offset in it), moved on
 * by fillIov / advance. One per caller; no allocation per I/O.
 */
export class IovCursor {
  index = 0;
  offset = 0;
  reset(): void {
    this.index = 0;
    this.offset = 0;
  }
  /** Move on by n bytes. */
  advance(bufs: readonly Sized[], n: number): void {
    let i = this.index;
    let o = this.offset + n;
    while (i < bufs.length && o >= bufs[i].byteLength) {
      o -= bufs[i].byteLength;
      i++;
    }
    this.index = i;
    this.offset = i < bufs.length ? o : 0;
  }
  done(bufs: readonly Sized[]): boolean {
    return this.index >= bufs.length;
  }
  /** The rest of the list from here, as views (for the thread-pool path). */
  rest(bufs: readonly Uint8Array[]): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (let i = this.index; i < bufs.length; i++) out.push(i === this.index && this.offset > 0 ? bufs[i].subarray(this.offset) : bufs[i]);
    return out;
  }
}

let iovCount = 0;

/**
 * Fill the shared iovec array from `bufs` at the cursor, at most `max`
 * bytes and IOV_MAX entries, joining neighbours. Returns the bytes it
 * covers (the cursor does not move: the caller advances by what the
 * system call did).
 */
function fillIov(bufs: readonly Uint8Array[] | readonly IoSpan[], at: IovCursor, max: number, spans: boolean): number {
  let n = -1;
  let bytes = 0;
  let endAddr = -1;
  let off = at.offset;
  for (let i = at.index; i < bufs.length && bytes < max; i++) {
    const b = bufs[i];
    let len = b.byteLength - off;
    if (len <= 0) {
      off = 0;
      continue;
    }
    if (len > max - bytes) len = max - bytes;
    const addr = (spans ? (b as IoSpan).addr : baseOf((b as Uint8Array).buffer) + (b as Uint8Array).byteOffset) + off;
    off = 0;
    if (addr === endAddr) {
      // Continues the previous entry in memory: widen it (lengths stay < 2^32: max is small).
      iov32[n * 4 + 2] += len;
    } else {
      if (n + 1 === IOV_MAX) break;
      n++;
      const w = n * 4;
      iov32[w] = addr % TWO32;
      iov32[w + 1] = Math.floor(addr / TWO32);
      iov32[w + 2] = len;
      iov32[w + 3] = 0;
    }
    endAddr = addr + len;
    bytes += len;
  }
  iovCount = n + 1;
  return bytes;
}

/**
 * Read into `bufs` at file position `pos` without blocking. Returns the
 * bytes read (0 at end of file; fewer than asked when only part was
 * cached), or -1 when nothing could be read without blocking (or the file
 * system does not support it). At most IOV_MAX iovecs per call; `at`
 * (default: the start) says where in `bufs` to begin.
 */
export function preadvNoWait(fd: number, bufs: readonly Uint8Array[], pos: number, at?: IovCursor): number {
  const cur = at ?? startCursor;
  if (at === undefined) cur.reset();
  return preadvFilled(fd, bufs, pos, cur, false);
}

/** preadvNoWait into spans (mapped memory by address). */
export function preadvSpansNoWait(fd: number, spans: readonly IoSpan[], pos: number, at: IovCursor): number {
  return preadvFilled(fd, spans, pos, at, true);
}

function preadvFilled(fd: number, list: readonly Uint8Array[] | readonly IoSpan[], pos: number, at: IovCursor, spans: boolean): number {
  if (!supported) return -1;
  if (fillIov(list, at, 0x7ffff000, spans) === 0) return 0;
  const r = Number(c.preadv2(fd, iov, iovCount, pos, RWF_NOWAIT));
  if (r >= 0) return r;
  const e = new SysError('preadv2', koffi.errno());
  if (e.code === 'EAGAIN') return -1;
  if (e.code === 'EOPNOTSUPP' || e.code === 'ENOSYS' || e.code === 'EINVAL') {
    supported = false; // e.g. tmpfs: every read goes to the thread pool
    return -1;
  }
  throw e;
}
const startCursor = new IovCursor();

/**
 * One pwritev of at most `max` bytes of `bufs` (Buffers, or spans when
 * `spans`) from the cursor, at file position `pos`, on the calling thread
 * (it may block). Returns the bytes written; throws SysError.
 */
export function pwritevAt(fd: number, bufs: readonly Uint8Array[] | readonly IoSpan[], pos: number, at: IovCursor, max: number, spans = false): number {
  if (fillIov(bufs, at, max, spans) === 0) return 0;
  const r = Number(pwritevRaw(fd, iov, iovCount, pos));
  if (r < 0) throw new SysError('pwritev', koffi.errno());
  return r;
}
