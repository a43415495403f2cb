// The one place that loads libc through koffi. Every other file in src/sys
// wraps these raw functions in small typed helpers; nothing outside src/sys
// imports this module.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
// koffi ships as CommonJS with prebuilt binaries; load it through require so
// its native module resolution works the same under every loader.
// eslint-disable-next-line @typescript-eslint/no-var-requires
export const koffi: typeof import('koffi') = require('koffi');

const lib = koffi.load('libc.so.6');

// Every pointer parameter is declared `void *`: callers pass Buffers (koffi
// passes their backing store) or pointers from koffi.alloc / mmap.
export const c = {
  close: lib.func('int close(int fd)'),
  read: lib.func('long read(int fd, void *buf, size_t count)'),
  write: lib.func('long write(int fd, void *buf, size_t count)'),
  fcntl: lib.func('int fcntl(int fd, int cmd, long arg)'),
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  bind: lib.func('int bind(int fd, void *addr, uint32_t len)'),
  listen: lib.func('int listen(int fd, int backlog)'),
  accept4: lib.func('int accept4(int fd, void *addr, void *len, int flags)'),
  connect: lib.func('int connect(int fd, void *addr, uint32_t len)'),
  setsockopt: lib.func('int setsockopt(int fd, int level, int name, void *val, uint32_t len)'),
  sendmsg: lib.func('long sendmsg(int fd, void *msg, int flags)'),
  recvmsg: lib.func('long recvmsg(int fd, void *msg, int flags)'),
  mmap: lib.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)'),
  munmap: lib.func('int munmap(void *addr, size_t len)'),
  memfd_create: lib.func('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: lib.func('int ftruncate(int fd, int64_t len)'),
  eventfd: lib.func('int eventfd(unsigned int initval, int flags)'),
  epoll_create1: lib.func('int epoll_create1(int flags)'),
  epoll_ctl: lib.func('int epoll_ctl(int epfd, int op, int fd, void *event)'),
  epoll_wait: lib.func('int epoll_wait(int epfd, void *events, int max, int timeout)'),
  preadv2: lib.func('long preadv2(int fd, void *iov, int iovcnt, int64_t offset, int flags)'),
  pwritev: lib.func('long pwritev(int fd, void *iov, int iovcnt, int64_t offset)'),
  getrusage: lib.func('int getrusage(int who, void *usage)'),
  lseek: lib.func('int64_t lseek(int fd, int64_t offset, int whence)'),
  sync_file_range: lib.func('int sync_file_range(int fd, int64_t offset, int64_t nbytes, unsigned int flags)'),
};

const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(koffi.os.errno)) {
  if (!errnoNames.has(num)) errnoNames.set(num, name);
}

/** A failed libc call: `code` is the errno name (EAGAIN, EBADF...). */
export class SysError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  constructor(syscall: string, errno: number) {
    const code = errnoNames.get(errno) ?? `errno ${errno}`;
    super(`${syscall}: ${code}`);
    this.name = 'SysError';
    this.syscall = syscall;
    this.errno = errno;
    this.code = code;
  }
}

/** Throw a SysError (with the current errno) when `ret` is negative. */
export function check(syscall: string, ret: number | bigint): number {
  const n = Number(ret);
  if (n < 0) throw new SysError(syscall, koffi.errno());
  return n;
}

export function errnoOf(name: string): number {
  const n = koffi.os.errno[name];
  if (n === undefined) throw new Error(`unknown errno name ${name}`);
  return n;
}
