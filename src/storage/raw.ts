// Raw images: a regular file or a block device, byte for byte the disk.
import fs from 'node:fs';
import { BlockImage, ImageError, type HostSpan, type SpanImage } from './image.js';
import { advanceBufs, blockDeviceSize, bufsLength, closeFd, fdatasync, FileIo, fstat } from './io.js';
import { FallocateError, punchHole, zeroRange } from '../sys/fallocate.js';
import { tryLockExclusive } from '../sys/flock.js';

export interface RawOpenOptions {
  readOnly?: boolean;
  /** Page-cache I/O on the calling thread (FileIo inline): for the block backend's own process, never the daemon. */
  inlineIo?: boolean;
}

const ZERO_CHUNK = 1 << 20;

export class RawImage implements BlockImage, SpanImage {
  readonly format = 'raw' as const;
  private closed = false;
  private canPunch = true;
  private canZeroRange = true;
  readonly io: FileIo;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    public size: number,
    readonly readOnly: boolean,
    readonly isBlockDevice: boolean,
    inlineIo: boolean,
  ) {
    this.io = new FileIo(fd, inlineIo);
  }

  static async open(path: string, opts: RawOpenOptions = {}): Promise<RawImage> {
    const readOnly = !!opts.readOnly;
    let fd: number;
    try {
      fd = fs.openSync(path, readOnly ? 'r' : 'r+');
    } catch (err) {
      throw new ImageError(`cannot open ${path}: ${(err as Error).message}`);
    }
    try {
      if (!readOnly && !tryLockExclusive(fd)) throw new ImageError(`${path}: image is in use by another writer (locked)`);
      const st = await fstat(fd);
      let size: number;
      if (st.isBlockDevice()) size = blockDeviceSize(st);
      else if (st.isFile()) size = st.size;
      else throw new ImageError(`${path} is neither a regular file nor a block device`);
      return new RawImage(path, fd, size, readOnly, st.isBlockDevice(), !!opts.inlineIo);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** Create a sparse raw file of `size` bytes (refuses to overwrite). */
  static async create(path: string, size: number): Promise<RawImage> {
    checkSize(size);
    let fd: number;
    try {
      fd = fs.openSync(path, 'wx+');
    } catch (err) {
      throw new ImageError(`cannot create ${path}: ${(err as Error).message}`);
    }
    try {
      fs.ftruncateSync(fd, size);
    } finally {
      fs.closeSync(fd);
    }
    return RawImage.open(path);
  }

  private check(offset: number, length: number, write: boolean): void {
    if (this.closed) throw new ImageError(`${this.path}: image is closed`);
    if (write && this.readOnly) throw new ImageError(`${this.path}: image is read-only`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new ImageError(`${this.path}: request [${offset}, +${length}) is outside the disk (size ${this.size})`);
    }
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    return this.readv([buf], offset);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    return this.writev([buf], offset);
  }

  /** Vectored read: one preadv straight into the buffers (guest memory for the block backend). */
  async readv(bufs: Uint8Array[], offset: number): Promise<void> {
    const total = bufsLength(bufs);
    this.check(offset, total, false);
    const n = await this.io.readv(bufs, offset);
    if (n < total) for (const b of advanceBufs(bufs, n)) b.fill(0); // file shrank underneath us: zeros
  }

  /** Vectored write (one pwritev). */
  async writev(bufs: Uint8Array[], offset: number): Promise<void> {
    this.check(offset, bufsLength(bufs), true);
    await this.io.writev(bufs, offset);
  }

  /** readv into guest memory by address (SpanImage). */
  async readSpans(spans: readonly HostSpan[], offset: number): Promise<void> {
    let total = 0;
    for (const s of spans) total += s.byteLength;
    this.check(offset, total, false);
    const n = await this.io.readSpans(spans, offset);
    if (n < total) for (const b of advanceBufs(spans.map((s) => s.buf), n)) b.fill(0); // file shrank underneath us: zeros
  }

  /** writev from guest memory by address (SpanImage). */
  writeSpans(spans: readonly HostSpan[], offset: number): Promise<void> {
    let total = 0;
    for (const s of spans) total += s.byteLength;
    try {
      this.check(offset, total, true);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.io.writeSpans(spans, offset);
  }

  async flush(): Promise<void> {
    if (this.closed) throw new ImageError(`${this.path}: image is closed`);
    if (!this.readOnly) await fdatasync(this.fd);
  }

  async discard(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length, true);
  }

  async writeZeroes(offset: number, length: number, unmap: boolean): Promise<void> {
    this.check(offset, length, true);
    if (length === 0) return;
    if (unmap && this.canPunch) {
      try {
        punchHole(this.fd, offset, length);
        return;
      } catch (err) {
        if (!(err instanceof FallocateError) || !err.unsupported) throw err;
        this.canPunch = false;
      }
    }
    if (this.canZeroRange) {
      try {
        zeroRange(this.fd, offset, length);
        return;
      } catch (err) {
        if (!(err instanceof FallocateError) || !err.unsupported) throw err;
        this.canZeroRange = false;
      }
    }
    const zeros = new Uint8Array(Math.min(ZERO_CHUNK, length));
    for (let done = 0; done < length; done += zeros.length) {
      const n = Math.min(zeros.length, length - done);
      await this.io.write(n === zeros.length ? zeros : zeros.subarray(0, n), offset + done);
    }
  }

  /** Change the size of a raw file (not of a block device). */
  async resize(newSize: number): Promise<void> {
    checkSize(newSize);
    if (this.readOnly) throw new ImageError(`${this.path}: image is read-only`);
    if (this.isBlockDevice) throw new ImageError(`${this.path}: cannot resize a block device`);
    fs.ftruncateSync(this.fd, newSize);
    this.size = newSize;
  }

  /** Bytes actually allocated on the host file system. */
  async allocatedBytes(): Promise<number> {
    const st = await fstat(this.fd);
    return st.isBlockDevice() ? this.size : st.blocks * 512;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await closeFd(this.fd);
  }
}

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new ImageError(`invalid image size ${size}`);
}
