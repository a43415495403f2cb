// preadv2(2) with RWF_NOWAIT for the storage layer: read straight from the
// page cache on the calling thread when the data is there, or learn at once
// (EAGAIN) that the read would block, so the caller can send it to the
// thread pool instead. Owned by src/storage (io.ts).
import { c, koffi, SysError } from './libc.js';

const RWF_NOWAIT = 0x08;
/** Linux's UIO_MAXIOV. */
export const IOV_MAX = 1024;
const IOVEC = 16;
const iov = Buffer.alloc(IOVEC * IOV_MAX);
let supported = true;

/**
 * Read into `bufs` at file position `pos` without blocking. Returns the
 * bytes read (0 at end of file; fewer than asked when only part was
 * cached), or -1 when nothing could be read without blocking (or the file
 * system does not support it). At most IOV_MAX buffers per call.
 */
export function preadvNoWait(fd: number, bufs: readonly Uint8Array[], pos: number): number {
  if (!supported) return -1;
  const n = Math.min(bufs.length, IOV_MAX);
  for (let i = 0; i < n; i++) {
    const b = bufs[i];
    // koffi.address of a Buffer / TypedArray is the address of its first byte.
    iov.writeBigUInt64LE(koffi.address(b), i * IOVEC);
    iov.writeBigUInt64LE(BigInt(b.byteLength), i * IOVEC + 8);
  }
  const r = Number(c.preadv2(fd, iov, n, pos, RWF_NOWAIT));
  if (r >= 0) return r;
  const e = new SysError('preadv2', koffi.errno());
  if (e.code === 'EAGAIN') return -1;
  if (e.code === 'EOPNOTSUPP' || e.code === 'ENOSYS' || e.code === 'EINVAL') {
    supported = false; // e.g. tmpfs: every read goes to the thread pool
    return -1;
  }
  throw e;
}
