// Unix stream sockets with file-descriptor passing (SCM_RIGHTS).
//
// Messages go through a native scratch area (koffi.alloc) so that the
// msghdr can hold real pointers to its iovec and control buffers.
import fs from 'node:fs';
import { c, check, koffi, SysError } from './libc.js';

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const SO_RCVTIMEO = 20;
const SO_SNDTIMEO = 21;
export const MSG_DONTWAIT = 0x40;
export const MSG_WAITALL = 0x100;
const MSG_CTRUNC = 0x8;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;

/** Most fds one message may carry (vhost-user sends at most 8). */
export const MAX_FDS = 16;
/** Largest payload one sendMsg/recvMsg call moves. */
export const MAX_MSG = 64 * 1024;

const MSGHDR = 56;
const IOVEC = 16;
const CMSG_HDR = 16;
const CONTROL = CMSG_HDR + MAX_FDS * 4;

const SCRATCH = MSGHDR + IOVEC + CONTROL + MAX_MSG;
const ptr = koffi.alloc('uint8_t', SCRATCH);
const base = koffi.address(ptr);
const mem = Buffer.from(koffi.view(ptr, SCRATCH));
const OFF_IOV = MSGHDR;
const OFF_CTL = MSGHDR + IOVEC;
const OFF_DATA = OFF_CTL + CONTROL;

function sockaddr(path: string): Buffer {
  const p = Buffer.from(path);
  if (p.length >= 108) throw new SysError(`socket path too long (${p.length} bytes): ${path}`, koffi.os.errno.ENAMETOOLONG ?? 36);
  const a = Buffer.alloc(110);
  a.writeUInt16LE(AF_UNIX, 0);
  p.copy(a, 2);
  return a;
}

function newSocket(): number {
  return check('socket', c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
}

/** Create, bind and listen on a unix socket path (an existing socket file is replaced). */
export function listenUnix(path: string, backlog = 4): number {
  try {
    if (fs.lstatSync(path).isSocket()) fs.unlinkSync(path);
  } catch {
    /* absent */
  }
  const fd = newSocket();
  try {
    const a = sockaddr(path);
    check('bind', c.bind(fd, a, a.length));
    check('listen', c.listen(fd, backlog));
  } catch (e) {
    c.close(fd);
    throw e;
  }
  return fd;
}

/** accept4 with SOCK_CLOEXEC; returns -1 when nothing is pending on a non-blocking socket. */
export function acceptUnix(fd: number): number {
  const r = c.accept4(fd, null, null, SOCK_CLOEXEC);
  if (r < 0) {
    const e = new SysError('accept4', koffi.errno());
    if (e.code === 'EAGAIN' || e.code === 'EINTR') return -1;
    throw e;
  }
  return r;
}

export function connectUnix(path: string): number {
  const fd = newSocket();
  try {
    const a = sockaddr(path);
    check('connect', c.connect(fd, a, a.length));
  } catch (e) {
    c.close(fd);
    throw e;
  }
  return fd;
}

function setTimeout_(fd: number, opt: number, name: string, ms: number): void {
  const tv = Buffer.alloc(16);
  tv.writeBigInt64LE(BigInt(Math.floor(ms / 1000)), 0);
  tv.writeBigInt64LE(BigInt((ms % 1000) * 1000), 8);
  check(name, c.setsockopt(fd, SOL_SOCKET, opt, tv, 16));
}

/** Blocking reads/writes on `fd` fail with EAGAIN after `ms` instead of hanging. */
export function setSocketTimeouts(fd: number, ms: number): void {
  setTimeout_(fd, SO_RCVTIMEO, 'setsockopt(SO_RCVTIMEO)', ms);
  setTimeout_(fd, SO_SNDTIMEO, 'setsockopt(SO_SNDTIMEO)', ms);
}

function prepare(len: number, controlLen: number): void {
  mem.fill(0, 0, MSGHDR + IOVEC);
  // msghdr
  mem.writeBigUInt64LE(base + BigInt(OFF_IOV), 16); // msg_iov
  mem.writeBigUInt64LE(1n, 24); // msg_iovlen
  if (controlLen > 0) {
    mem.writeBigUInt64LE(base + BigInt(OFF_CTL), 32);
    mem.writeBigUInt64LE(BigInt(controlLen), 40);
  }
  // iovec
  mem.writeBigUInt64LE(base + BigInt(OFF_DATA), OFF_IOV);
  mem.writeBigUInt64LE(BigInt(len), OFF_IOV + 8);
}

/** Send all of `data` (≤ MAX_MSG) with `fds` attached to the first byte. */
export function sendMsg(fd: number, data: Uint8Array, fds: readonly number[] = []): void {
  if (data.byteLength > MAX_MSG) throw new RangeError(`sendMsg: ${data.byteLength} bytes > ${MAX_MSG}`);
  if (fds.length > MAX_FDS) throw new RangeError(`sendMsg: ${fds.length} fds > ${MAX_FDS}`);
  let off = 0;
  let first = true;
  while (off < data.byteLength || (first && data.byteLength === 0)) {
    const chunk = data.subarray(off);
    mem.set(chunk, OFF_DATA);
    let controlLen = 0;
    if (first && fds.length > 0) {
      controlLen = CMSG_HDR + ((fds.length * 4 + 7) & ~7);
      mem.fill(0, OFF_CTL, OFF_CTL + controlLen);
      mem.writeBigUInt64LE(BigInt(CMSG_HDR + fds.length * 4), OFF_CTL);
      mem.writeInt32LE(SOL_SOCKET, OFF_CTL + 8);
      mem.writeInt32LE(SCM_RIGHTS, OFF_CTL + 12);
      fds.forEach((f, i) => mem.writeInt32LE(f, OFF_CTL + CMSG_HDR + i * 4));
    }
    prepare(chunk.byteLength, controlLen);
    const n = Number(c.sendmsg(fd, ptr, MSG_NOSIGNAL));
    if (n < 0) {
      const e = new SysError('sendmsg', koffi.errno());
      if (e.code === 'EINTR') continue;
      throw e;
    }
    first = false;
    off += n;
    if (data.byteLength === 0) break;
  }
}

export interface Received {
  data: Buffer;
  fds: number[];
}

/**
 * One recvmsg(2) of up to `len` bytes. `waitAll` blocks until all `len`
 * bytes arrived (or EOF / timeout); `dontWait` never blocks (returns null on
 * EAGAIN). Received fds are close-on-exec. EOF gives an empty `data`.
 * Throws SysError on failure; a truncated control message is an error
 * (its fds are closed).
 */
export function recvMsg(fd: number, len: number, opts: { waitAll?: boolean; dontWait?: boolean } = {}): Received | null {
  if (len > MAX_MSG) throw new RangeError(`recvMsg: ${len} bytes > ${MAX_MSG}`);
  const fds: number[] = [];
  let got = 0;
  const chunks: Buffer[] = [];
  for (;;) {
    prepare(len - got, CONTROL);
    mem.fill(0, OFF_CTL, OFF_CTL + CONTROL);
    let flags = MSG_CMSG_CLOEXEC;
    if (opts.dontWait) flags |= MSG_DONTWAIT;
    else if (opts.waitAll) flags |= MSG_WAITALL;
    const n = Number(c.recvmsg(fd, ptr, flags));
    if (n < 0) {
      const e = new SysError('recvmsg', koffi.errno());
      if (e.code === 'EINTR') continue;
      for (const f of fds) c.close(f);
      if (e.code === 'EAGAIN' && opts.dontWait && got === 0) return null;
      throw e;
    }
    // Collect fds from every cmsg.
    const controlLen = Number(mem.readBigUInt64LE(40));
    let off = 0;
    while (off + CMSG_HDR <= controlLen) {
      const clen = Number(mem.readBigUInt64LE(OFF_CTL + off));
      if (clen < CMSG_HDR || off + clen > controlLen) break;
      const level = mem.readInt32LE(OFF_CTL + off + 8);
      const type = mem.readInt32LE(OFF_CTL + off + 12);
      if (level === SOL_SOCKET && type === SCM_RIGHTS) {
        const count = (clen - CMSG_HDR) / 4;
        for (let i = 0; i < count; i++) fds.push(mem.readInt32LE(OFF_CTL + off + CMSG_HDR + i * 4));
      }
      off += (clen + 7) & ~7;
    }
    const msgFlags = mem.readInt32LE(48);
    if (msgFlags & MSG_CTRUNC) {
      for (const f of fds) c.close(f);
      throw new SysError('recvmsg (control message truncated: too many fds)', koffi.os.errno.EMSGSIZE ?? 90);
    }
    chunks.push(Buffer.from(mem.subarray(OFF_DATA, OFF_DATA + n)));
    got += n;
    if (n === 0 || got >= len || !opts.waitAll) break;
  }
  return { data: Buffer.concat(chunks), fds };
}
