// TAP devices (the Linux TUN/TAP driver): open /dev/net/tun and bind the fd
// to a named TAP interface with TUNSETIFF. The interface lives as long as
// the fd (not persistent): when the process that holds it exits, it goes.
import fs from 'node:fs';
import { c, check, koffi, SysError } from './libc.js';
import { setCloexec } from './fd.js';

const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFNAMSIZ = 16;

let ioctl: ((fd: number, req: number, arg: Buffer) => number) | undefined;

/** Open (creating) the TAP interface `name`, non-blocking. Needs CAP_NET_ADMIN. */
export function openTap(name: string): number {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) throw new Error(`bad interface name ${JSON.stringify(name)}`);
  ioctl ??= koffi.load('libc.so.6').func('int ioctl(int fd, unsigned long req, void *arg)') as (fd: number, req: number, arg: Buffer) => number;
  const fd = fs.openSync('/dev/net/tun', fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  try {
    setCloexec(fd);
    const ifr = Buffer.alloc(40);
    ifr.write(name, 0, IFNAMSIZ - 1, 'latin1');
    ifr.writeUInt16LE(IFF_TAP | IFF_NO_PI, IFNAMSIZ);
    check(`ioctl(TUNSETIFF ${name})`, ioctl(fd, TUNSETIFF, ifr));
    return fd;
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** One frame from a TAP fd into `buf`; its length, or 0 when none is waiting. */
export function tapRead(fd: number, buf: Buffer): number {
  const r = Number(c.read(fd, buf, buf.length));
  if (r >= 0) return r;
  const e = new SysError('read(tap)', koffi.errno());
  if (e.code === 'EAGAIN') return 0;
  throw e;
}

/** Write one frame; false when the interface's queue is full (or it is down). */
export function tapWrite(fd: number, frame: Buffer): boolean {
  const r = Number(c.write(fd, frame, frame.length));
  if (r >= 0) return true;
  const e = new SysError('write(tap)', koffi.errno());
  if (e.code === 'EAGAIN' || e.code === 'EIO') return false;
  throw e;
}
