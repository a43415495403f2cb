// The block backend's I/O engine: scatter-gather requests over a BlockImage.
// Guest buffers are passed to the image as views of guest memory, so data
// moves between the file and the guest without an intermediate copy.
// Images that offer vectored I/O (readv/writev: one preadv/pwritev per
// request) get it. Others get single-segment requests straight into guest
// memory, and multi-segment ones through one bounce buffer (one image call
// and a memcpy beat dozens of small calls through the thread pool).
import type { BlockImage } from '../../../storage/image.js';
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

export class IoEngine {
  private readonly vectored: boolean;
  constructor(readonly image: BlockImage) {
    this.vectored = isVectored(image);
  }

  read(segs: readonly Segment[], offset: number): Promise<void> {
    if (segs.length === 0) return Promise.resolve();
    if (segs.length === 1) return this.image.read(segs[0].buf, offset);
    if (this.vectored) return (this.image as BlockImage & VectoredImage).readv(segs.map((s) => s.buf), offset);
    return this.bounceRead(segs, offset);
  }

  write(segs: readonly Segment[], offset: number): Promise<void> {
    if (segs.length === 0) return Promise.resolve();
    if (segs.length === 1) return this.image.write(segs[0].buf, offset);
    if (this.vectored) return (this.image as BlockImage & VectoredImage).writev(segs.map((s) => s.buf), offset);
    return this.image.write(Buffer.concat(segs.map((s) => s.buf)), offset);
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

  private async bounceRead(segs: readonly Segment[], offset: number): Promise<void> {
    let len = 0;
    for (const s of segs) len += s.buf.length;
    const bounce = Buffer.allocUnsafe(len);
    await this.image.read(bounce, offset);
    let o = 0;
    for (const s of segs) o += bounce.copy(s.buf, 0, o, o + s.buf.length);
  }
}
