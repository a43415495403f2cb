// The block backend's raw-file image: vectored pread/pwrite (one preadv /
// pwritev per guest request, straight between the file and guest memory),
// fdatasync for flush, hole punching / zero ranges for discard and
// write-zeroes. Regular files only; block devices and qcow2 go through the
// storage layer (src/storage), which owns image formats.
import fs from 'node:fs';
import type { BlockImage } from '../../storage/image.js';
import { ImageError } from '../../storage/image.js';
import type { VectoredImage } from './io/engine.js';
import { FallocateError, punchHole, zeroRange } from '../../sys/fallocate.js';

const ZERO_CHUNK = 1024 * 1024;
let zeros: Buffer | null = null;

function preadv(fd: number, bufs: Uint8Array[], pos: number): Promise<number> {
  return new Promise((resolve, reject) => fs.readv(fd, bufs, pos, (err, n) => (err ? reject(err) : resolve(n))));
}
function pwritev(fd: number, bufs: Uint8Array[], pos: number): Promise<number> {
  return new Promise((resolve, reject) => fs.writev(fd, bufs, pos, (err, n) => (err ? reject(err) : resolve(n))));
}

/** Drop the first `n` bytes of a buffer list (after a short transfer). */
function advance(bufs: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const b of bufs) {
    if (n >= b.byteLength) {
      n -= b.byteLength;
      continue;
    }
    out.push(n > 0 ? b.subarray(n) : b);
    n = 0;
  }
  return out;
}

export class RawFileImage implements BlockImage, VectoredImage {
  readonly format = 'raw' as const;
  private closed = false;

  private constructor(
    private readonly fd: number,
    readonly size: number,
    readonly readOnly: boolean,
    readonly path: string,
  ) {}

  static open(path: string, opts: { readOnly?: boolean } = {}): RawFileImage {
    const readOnly = opts.readOnly ?? false;
    const fd = fs.openSync(path, readOnly ? 'r' : 'r+');
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      fs.closeSync(fd);
      throw new ImageError(`${path}: not a regular file`);
    }
    return new RawFileImage(fd, st.size, readOnly, path);
  }

  private check(offset: number, len: number, write: boolean): void {
    if (this.closed) throw new ImageError(`${this.path}: closed`);
    if (write && this.readOnly) throw new ImageError(`${this.path}: read-only`);
    if (!Number.isSafeInteger(offset) || offset < 0 || len < 0 || offset + len > this.size) {
      throw new ImageError(`${this.path}: access ${offset}+${len} beyond ${this.size} bytes`);
    }
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    return this.readv([buf], offset);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    return this.writev([buf], offset);
  }

  async readv(bufs: Uint8Array[], offset: number): Promise<void> {
    let len = bufs.reduce((s, b) => s + b.byteLength, 0);
    this.check(offset, len, false);
    let pos = offset;
    while (len > 0) {
      const n = await preadv(this.fd, bufs, pos);
      if (n === 0) throw new ImageError(`${this.path}: unexpected end of file at ${pos}`);
      pos += n;
      len -= n;
      if (len > 0) bufs = advance(bufs, n);
    }
  }

  async writev(bufs: Uint8Array[], offset: number): Promise<void> {
    let len = bufs.reduce((s, b) => s + b.byteLength, 0);
    this.check(offset, len, true);
    let pos = offset;
    while (len > 0) {
      const n = await pwritev(this.fd, bufs, pos);
      pos += n;
      len -= n;
      if (len > 0) bufs = advance(bufs, n);
    }
  }

  flush(): Promise<void> {
    return new Promise((resolve, reject) => fs.fdatasync(this.fd, (err) => (err ? reject(err) : resolve())));
  }

  discard(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length, true);
  }

  private canPunch = true;
  private canZeroRange = true;

  async writeZeroes(offset: number, length: number, unmap: boolean): Promise<void> {
    this.check(offset, length, true);
    if (length === 0) return;
    if (unmap && this.canPunch) {
      try {
        return punchHole(this.fd, offset, length);
      } catch (e) {
        if (!(e instanceof FallocateError) || !e.unsupported) throw e;
        this.canPunch = false;
      }
    }
    if (this.canZeroRange) {
      try {
        return zeroRange(this.fd, offset, length);
      } catch (e) {
        if (!(e instanceof FallocateError) || !e.unsupported) throw e;
        this.canZeroRange = false;
      }
    }
    zeros ??= Buffer.alloc(ZERO_CHUNK);
    for (let o = 0; o < length; o += ZERO_CHUNK) {
      const n = Math.min(ZERO_CHUNK, length - o);
      await this.writev([zeros.subarray(0, n)], offset + o);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}
