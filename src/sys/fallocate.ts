// libc fallocate(2) for the storage layer: punch holes (discard) and zero
// ranges in image files and block devices. Owned by src/storage.
import koffi from 'koffi';

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

type FallocateFn = (fd: number, mode: number, offset: number | bigint, len: number | bigint) => number;

let fn: FallocateFn | null | undefined;

function load(): FallocateFn | null {
  if (fn !== undefined) return fn;
  try {
    const libc = koffi.load('libc.so.6');
    fn = libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)') as FallocateFn;
  } catch {
    fn = null;
  }
  return fn;
}

export class FallocateError extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
    this.name = 'FallocateError';
  }
  /** The file system or device does not support this mode. */
  get unsupported(): boolean {
    const e = koffi.os.errno;
    return this.errno === e.EOPNOTSUPP || this.errno === e.ENOSYS || this.errno === e.EINVAL || this.errno === e.ENODEV;
  }
}

/** True when libc's fallocate could be bound. */
export function fallocateAvailable(): boolean {
  return load() !== null;
}

/**
 * fallocate(fd, mode, offset, len). Throws FallocateError (with errno) on
 * failure. A synchronous call: hole punching and zero ranges are metadata
 * operations in the kernel and return quickly.
 */
export function fallocate(fd: number, mode: number, offset: number, len: number): void {
  const f = load();
  if (!f) throw new FallocateError(koffi.os.errno.ENOSYS ?? 38, 'fallocate is not available');
  if (len <= 0) return;
  const r = f(fd, mode, offset, len);
  if (r !== 0) {
    const errno = koffi.errno();
    throw new FallocateError(errno, `fallocate(mode=${mode}, offset=${offset}, len=${len}) failed: errno ${errno}`);
  }
}

/** Deallocate [offset, offset+len): reads return zeros afterwards, file size unchanged. */
export function punchHole(fd: number, offset: number, len: number): void {
  fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
}

/** Zero [offset, offset+len) keeping (or allocating) the blocks. */
export function zeroRange(fd: number, offset: number, len: number): void {
  fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, len);
}
