// Shared memory: memfd, mmap, munmap. A mapping is exposed as a Buffer that
// views the mapped pages directly (no copy); the Buffer must not be used
// after unmap().
import { c, check, koffi, SysError } from './libc.js';

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
const MFD_CLOEXEC = 1;
export const PAGE_SIZE = 4096;

export interface Mapping {
  /** The mapped bytes, starting at the requested offset (not the page-aligned one). */
  readonly buf: Buffer;
  readonly length: number;
  unmap(): void;
}

/**
 * mmap(MAP_SHARED) `length` bytes of `fd` starting at `offset`. The offset
 * need not be page-aligned: the mapping starts at the page below it and the
 * returned Buffer starts at `offset`.
 */
export function mapShared(fd: number, length: number, offset = 0, writable = true): Mapping {
  if (!Number.isSafeInteger(length) || length <= 0) throw new RangeError(`mmap: bad length ${length}`);
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`mmap: bad offset ${offset}`);
  const delta = offset % PAGE_SIZE;
  const mapLen = length + delta;
  const prot = PROT_READ | (writable ? PROT_WRITE : 0);
  const ptr = c.mmap(null, mapLen, prot, MAP_SHARED, fd, offset - delta);
  const addr = ptr === null ? 0n : koffi.address(ptr);
  if (addr === 0n || addr === 0xffffffffffffffffn) throw new SysError('mmap', koffi.errno());
  const ab = koffi.view(ptr, mapLen);
  const buf = Buffer.from(ab, delta, length);
  let mapped = true;
  return {
    buf,
    length,
    unmap() {
      if (!mapped) return;
      mapped = false;
      check('munmap', c.munmap(ptr, mapLen));
    },
  };
}

export function memfdCreate(name: string, size: number): number {
  const fd = check('memfd_create', c.memfd_create(name, MFD_CLOEXEC));
  try {
    check('ftruncate', c.ftruncate(fd, size));
  } catch (e) {
    c.close(fd);
    throw e;
  }
  return fd;
}
