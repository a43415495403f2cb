// src/sys: typed wrappers over the few libc calls Node lacks.
export { SysError } from './libc.js';
export * from './fd.js';
export * from './mman.js';
export * from './socket.js';
export * from './epoll.js';
export * from './poll.js';
export * from './uio.js';
export * from './tun.js';
export * from './rusage.js';
