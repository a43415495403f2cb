// File descriptor basics: close, flags, eventfd.
import { c, check, SysError, koffi } from './libc.js';

const F_GETFL = 3;
const F_SETFL = 4;
const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
export const O_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;

export function close(fd: number): void {
  check('close', c.close(fd));
}

/** Close, ignoring errors (for cleanup paths). */
export function closeQuiet(fd: number | null | undefined): void {
  if (fd === null || fd === undefined || fd < 0) return;
  c.close(fd);
}

export function setNonBlocking(fd: number, on = true): void {
  const flags = check('fcntl(F_GETFL)', c.fcntl(fd, F_GETFL, 0));
  const next = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (next !== flags) check('fcntl(F_SETFL)', c.fcntl(fd, F_SETFL, next));
}

export function setCloexec(fd: number): void {
  const flags = check('fcntl(F_GETFD)', c.fcntl(fd, F_GETFD, 0));
  check('fcntl(F_SETFD)', c.fcntl(fd, F_SETFD, flags | FD_CLOEXEC));
}

export function createEventFd(opts: { nonBlocking?: boolean; initval?: number } = {}): number {
  const flags = EFD_CLOEXEC | (opts.nonBlocking === false ? 0 : EFD_NONBLOCK);
  return check('eventfd', c.eventfd(opts.initval ?? 0, flags));
}

const one = Buffer.alloc(8);
one.writeBigUInt64LE(1n);
const scratch = Buffer.alloc(8);

/** Add 1 to an eventfd's counter (a kick or call). */
export function eventFdSignal(fd: number): void {
  const r = Number(c.write(fd, one, 8));
  if (r < 0) {
    const e = koffi.errno();
    // EAGAIN: the counter is saturated, the reader has a pending event anyway.
    if (new SysError('write(eventfd)', e).code === 'EAGAIN') return;
    throw new SysError('write(eventfd)', e);
  }
}

/** Read and reset an eventfd counter; 0 when nothing was pending (non-blocking fd). */
export function eventFdConsume(fd: number): number {
  const r = Number(c.read(fd, scratch, 8));
  if (r < 0) {
    const err = new SysError('read(eventfd)', koffi.errno());
    if (err.code === 'EAGAIN') return 0;
    throw err;
  }
  if (r !== 8) return 0;
  return Number(scratch.readBigUInt64LE());
}

/** write(2) a whole buffer (for pipes/fds that are not sockets). */
export function writeFd(fd: number, buf: Uint8Array): number {
  return check('write', c.write(fd, buf, buf.byteLength));
}

export function readFd(fd: number, buf: Uint8Array): number {
  return check('read', c.read(fd, buf, buf.byteLength));
}

/** Sets the file offset of `fd` (SEEK_SET): where the next plain read/write — also another process's, through a passed fd — goes. */
export function seekTo(fd: number, offset: number): void {
  const r = Number(c.lseek(fd, offset, 0));
  if (r < 0) throw new SysError('lseek', koffi.errno());
}

const SYNC_FILE_RANGE_WRITE = 2;

/** Starts writeback of a file range without waiting for it (sync_file_range WRITE): a later fsync has less left to do. Not a durability guarantee. */
export function startWriteback(fd: number, offset: number, length: number): void {
  const r = c.sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE);
  if (r < 0) throw new SysError('sync_file_range', koffi.errno());
}
