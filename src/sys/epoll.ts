// epoll for code that wants to block on many fds (a worker thread's data
// path). The main thread should prefer watchFd() (poll.ts), which hooks an
// fd into Node's own event loop.
import { c, check, koffi, SysError } from './libc.js';
import { closeQuiet } from './fd.js';

export const EPOLLIN = 0x1;
export const EPOLLOUT = 0x4;
export const EPOLLERR = 0x8;
export const EPOLLHUP = 0x10;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;
const EPOLL_CLOEXEC = 0o2000000;
const EVENT = 12; // struct epoll_event is packed on x86-64: u32 events + u64 data

export interface EpollEvent {
  events: number;
  /** The user value given to add() (a 32-bit unsigned integer). */
  data: number;
}

export class Epoll {
  readonly fd: number;
  private readonly buf: Buffer;
  constructor(readonly maxEvents = 64) {
    this.fd = check('epoll_create1', c.epoll_create1(EPOLL_CLOEXEC));
    this.buf = Buffer.alloc(EVENT * maxEvents);
  }
  private ctl(op: number, fd: number, events: number, data: number): void {
    const ev = Buffer.alloc(EVENT);
    ev.writeUInt32LE(events >>> 0, 0);
    ev.writeUInt32LE(data >>> 0, 4);
    check('epoll_ctl', c.epoll_ctl(this.fd, op, fd, ev));
  }
  add(fd: number, events: number, data: number): void {
    this.ctl(EPOLL_CTL_ADD, fd, events, data);
  }
  modify(fd: number, events: number, data: number): void {
    this.ctl(EPOLL_CTL_MOD, fd, events, data);
  }
  remove(fd: number): void {
    this.ctl(EPOLL_CTL_DEL, fd, 0, 0);
  }
  /** Block up to `timeoutMs` (-1 = forever); EINTR gives an empty list. */
  wait(timeoutMs: number): EpollEvent[] {
    const n = c.epoll_wait(this.fd, this.buf, this.maxEvents, timeoutMs);
    if (n < 0) {
      const e = new SysError('epoll_wait', koffi.errno());
      if (e.code === 'EINTR') return [];
      throw e;
    }
    const out: EpollEvent[] = [];
    for (let i = 0; i < n; i++) {
      out.push({ events: this.buf.readUInt32LE(i * EVENT), data: this.buf.readUInt32LE(i * EVENT + 4) });
    }
    return out;
  }
  close(): void {
    closeQuiet(this.fd);
  }
}
