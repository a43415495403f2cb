// flock(2) for the storage layer: one read-write user per image file.
import koffi from 'koffi';

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

let fn: ((fd: number, op: number) => number) | null | undefined;

function load(): ((fd: number, op: number) => number) | null {
  if (fn === undefined) {
    try {
      fn = koffi.load('libc.so.6').func('int flock(int fd, int op)') as (fd: number, op: number) => number;
    } catch {
      fn = null;
    }
  }
  return fn;
}

/**
 * Take an exclusive, non-blocking lock on an open file. Returns false when
 * another open file description holds a lock (EWOULDBLOCK); true when we
 * hold it (or when flock is unavailable: best effort).
 */
export function tryLockExclusive(fd: number): boolean {
  const f = load();
  if (!f) return true;
  if (f(fd, LOCK_EX | LOCK_NB) === 0) return true;
  const e = koffi.errno();
  if (e === koffi.os.errno.EWOULDBLOCK || e === koffi.os.errno.EAGAIN) return false;
  return true; // e.g. ENOLCK on some file systems: do not block the user
}

export function unlock(fd: number): void {
  load()?.(fd, LOCK_UN);
}
