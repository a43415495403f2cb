// The contract between disk images (raw, qcow2) and whoever does I/O on them
// (the vhost-user block backend, clone/snapshot tooling, tests).
//
// Offsets and lengths are in bytes. Reads of never-written areas return zeros
// (or the backing file's data). Implementations must refuse a request that
// runs past `size` with an ImageError, never read or write outside it.

export interface BlockImage {
  /** Virtual size of the disk in bytes. */
  readonly size: number;
  readonly format: 'raw' | 'qcow2';
  readonly readOnly: boolean;
  /** Fill `buf` from the disk at `offset`. */
  read(buf: Uint8Array, offset: number): Promise<void>;
  /** Write `buf` to the disk at `offset`. */
  write(buf: Uint8Array, offset: number): Promise<void>;
  /** Make every completed write durable (fdatasync on data + metadata). */
  flush(): Promise<void>;
  /** Deallocate a range if the format can (reads then return zeros). */
  discard(offset: number, length: number): Promise<void>;
  /** Make a range read back as zeros, deallocating when `unmap` allows. */
  writeZeroes(offset: number, length: number, unmap: boolean): Promise<void>;
  close(): Promise<void>;
}

/** A piece of mapped memory by address, with a Buffer view to fall back on (src/vhost's Segment is one). */
export interface HostSpan {
  readonly addr: number;
  readonly byteLength: number;
  readonly buf: Uint8Array;
}

/**
 * Optional I/O straight between the image and mapped memory by address
 * (the block backend's guest buffers): no Buffer per piece on the way.
 */
export interface SpanImage {
  readSpans(spans: readonly HostSpan[], offset: number): Promise<void>;
  writeSpans(spans: readonly HostSpan[], offset: number): Promise<void>;
}

export function isSpanImage(img: object): img is SpanImage {
  const v = img as Partial<SpanImage>;
  return typeof v.readSpans === 'function' && typeof v.writeSpans === 'function';
}

export class ImageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ImageError';
  }
}
