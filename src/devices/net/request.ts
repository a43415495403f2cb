// virtio-net requests (virtio 1.1 §5.1.6): the 12-byte struct virtio_net_hdr
// in front of every frame, and moving frames between descriptor chains and
// Buffers.
//
//   transmit (driver → device): device-readable [virtio_net_hdr][frame]
//   receive  (device → driver): device-writable [virtio_net_hdr][frame],
//             spread over `num_buffers` chains with VIRTIO_NET_F_MRG_RXBUF
//
// The guest is not trusted: a transmit chain that is malformed, has no
// room for the header, carries a frame shorter than an Ethernet header or
// longer than the largest frame we accept is refused with a reason.
import type { DescriptorChain, Segment } from '../../vhost/index.js';

/** With VIRTIO_F_VERSION_1 (or MRG_RXBUF) the header is 12 bytes; legacy without MRG_RXBUF, 10. */
export const NET_HDR_SIZE = 12;
export const NET_HDR_SIZE_LEGACY = 10;
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
/** Shortest frame: an Ethernet header. */
export const MIN_FRAME = 14;

/** The virtio_net_hdr fields that matter: offload metadata of a transmitted frame. */
export interface TxHeader {
  flags: number;
  gsoType: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export type TxResult = { frame: Buffer; hdr: TxHeader } | { error: string; kind: 'malformed' | 'runt' | 'oversize' };

/** Copy the frame out of a transmit chain (the frame must outlive the chain: it goes to other ports). */
export function parseTx(chain: DescriptorChain, hdrSize: number, maxFrame: number): TxResult {
  if (chain.error !== undefined) return { error: `malformed chain: ${chain.error}`, kind: 'malformed' };
  if (chain.writableLen !== 0) return { error: 'transmit chain has device-writable buffers', kind: 'malformed' };
  if (chain.readableLen < hdrSize) return { error: `transmit chain of ${chain.readableLen} bytes has no room for the ${hdrSize}-byte header`, kind: 'malformed' };
  const len = chain.readableLen - hdrSize;
  if (len < MIN_FRAME) return { error: `frame of ${len} bytes is shorter than an Ethernet header`, kind: 'runt' };
  if (len > maxFrame) return { error: `frame of ${len} bytes is longer than ${maxFrame}`, kind: 'oversize' };
  const frame = Buffer.allocUnsafe(len);
  const raw = Buffer.alloc(NET_HDR_SIZE_LEGACY);
  let skip = hdrSize;
  let o = 0;
  let ho = 0;
  for (const s of chain.readable) {
    let b = s.buf;
    if (skip > 0) {
      if (ho < raw.length) ho += b.copy(raw, ho, 0, Math.min(b.length, skip));
      if (b.length <= skip) {
        skip -= b.length;
        continue;
      }
      b = b.subarray(skip);
      skip = 0;
    }
    b.copy(frame, o);
    o += b.length;
  }
  return { frame, hdr: { flags: raw[0]!, gsoType: raw[1]!, gsoSize: raw.readUInt16LE(4), csumStart: raw.readUInt16LE(6), csumOffset: raw.readUInt16LE(8) } };
}

/**
 * Write `src` (header then frame) into the writable segments, starting at
 * byte `from` of the source; returns the bytes written (≤ the segments' room).
 */
export function fillSegments(segs: readonly Segment[], hdr: Buffer, frame: Buffer, from: number): number {
  const total = hdr.length + frame.length;
  let pos = from;
  let written = 0;
  for (const s of segs) {
    let so = 0;
    while (so < s.buf.length && pos < total) {
      let n: number;
      if (pos < hdr.length) n = hdr.copy(s.buf, so, pos, Math.min(hdr.length, pos + s.buf.length - so));
      else n = frame.copy(s.buf, so, pos - hdr.length, Math.min(frame.length, pos - hdr.length + s.buf.length - so));
      so += n;
      pos += n;
      written += n;
    }
    if (pos >= total) break;
  }
  return written;
}
