// The block backend's I/O engine: scatter-gather requests over a BlockImage.
// Data moves between the file and guest memory without an intermediate
// copy. Images that take spans (SpanImage: raw, qcow2) get the request's
// segments by address (iovecs written from them, neighbours joined, no
// Buffer per page); images with vectored I/O (readv/writev) get the
// segments' views in one call; others get single-segment requests straight
// into guest memory, and multi-segment ones (merged where adjacent) through
// one bounce buffer.
import { isSpanImage, type BlockImage, type SpanImage } from '../../../storage/image.js';
import type { Segment } from '../../../vhost/index.js';

/** Optional vectored I/O an image may implement in addition to BlockImage. */
export interface VectoredImage {
  readv(bufs: Uint8Array[], offset: number): Promise<void>;
  writev(bufs: Uint8Array[], offset: number): Promise<void>;
}

function isVectored(img: BlockImage): img is BlockImage & VectoredImage {
  const v = img as Partial<VectoredImage>;
  return typeof v.readv === 'function' && typeof v.writev === 'function';
}

/**
 * The segments' buffers, with neighbours that continue each other in the
 * same mapping (same ArrayBuffer, next byte) joined into one view. A joined
 * view covers exactly the bytes of the segments it replaces, all inside one
 * mapped region, so no bounds are widened.
 */
export function mergeSegments(segs: readonly Segment[]): Buffer[] {
  const out: Buffer[] = [];
  let cur = segs[0].buf;
  for (let i = 1; i < segs.length; i++) {
    const b = segs[i].buf;
    if (b.buffer === cur.buffer && cur.byteOffset + cur.length === b.byteOffset) {
      cur = Buffer.from(cur.buffer, cur.byteOffset, cur.length + b.length);
    } else {
      out.push(cur);
      cur = b;
    }
  }
  out.push(cur);
  return out;
}

/**
 * The segments' buffers as they are, for vectored images: their file I/O
 * (src/sys/uio.ts) joins neighbours into one iovec itself, without a new
 * view per join.
 */
function bufsOf(segs: readonly Segment[]): Buffer[] {
  const out = new Array<Buffer>(segs.length);
  for (let i = 0; i < segs.length; i++) out[i] = segs[i].buf;
  return out;
}

export class IoEngine {
  private readonly vectored: boolean;
  private readonly spans: (BlockImage & SpanImage) | null;
  constructor(readonly image: BlockImage) {
    this.vectored = isVectored(image);
    this.spans = isSpanImage(image) ? image : null;
  }

  read(segs: readonly Segment[], offset: number): Promise<void> {
    if (segs.length === 0) return Promise.resolve();
    // By address, straight from the segments (raw images).
    if (this.spans !== null) return this.spans.readSpans(segs, offset);
    if (this.vectored && segs.length > 1) return (this.image as BlockImage & VectoredImage).readv(bufsOf(segs), offset);
    const bufs = segs.length === 1 ? [segs[0].buf] : mergeSegments(segs);
    if (bufs.length === 1) return this.image.read(bufs[0], offset);
    if (this.vectored) return (this.image as BlockImage & VectoredImage).readv(bufs, offset);
    return this.bounceRead(bufs, offset);
  }

  write(segs: readonly Segment[], offset: number): Promise<void> {
    if (segs.length === 0) return Promise.resolve();
    if (this.spans !== null) return this.spans.writeSpans(segs, offset);
    if (this.vectored && segs.length > 1) return (this.image as BlockImage & VectoredImage).writev(bufsOf(segs), offset);
    const bufs = segs.length === 1 ? [segs[0].buf] : mergeSegments(segs);
    if (bufs.length === 1) return this.image.write(bufs[0], offset);
    if (this.vectored) return (this.image as BlockImage & VectoredImage).writev(bufs, offset);
    return this.image.write(Buffer.concat(bufs), offset);
  }

  flush(): Promise<void> {
    return this.image.flush();
  }

  discard(offset: number, length: number): Promise<void> {
    return this.image.discard(offset, length);
  }

  writeZeroes(offset: number, length: number, unmap: boolean): Promise<void> {
    return this.image.writeZeroes(offset, length, unmap);
  }

  private async bounceRead(bufs: readonly Buffer[], offset: number): Promise<void> {
    let len = 0;
    for (const b of bufs) len += b.length;
    const bounce = Buffer.allocUnsafe(len);
    await this.image.read(bounce, offset);
    let o = 0;
    for (const b of bufs) o += bounce.copy(b, 0, o, o + b.length);
  }
}
