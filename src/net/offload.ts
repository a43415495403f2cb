// Checksum and segmentation offload: what travels with a frame from a guest
// that negotiated VIRTIO_NET_F_CSUM / HOST_TSO4 (the virtio_net_hdr fields),
// and how the switch finishes the work in software for a receiver that
// cannot take it as is (a guest without GUEST_CSUM / GUEST_TSO4, the TAP
// uplink, the services): complete the partial checksum, cut a TCP/IPv4
// super-frame into MSS-sized frames with their own headers and checksums.
import { ETH_HLEN, ETHERTYPE_IPV4, inetChecksum } from './frame.js';

export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;

/** The offload metadata of one frame (virtio_net_hdr, virtio 1.1 §5.1.6). */
export interface Offload {
  /** The L4 checksum is partial: sum from csumStart, store at csumStart + csumOffset. */
  needsCsum: boolean;
  csumStart: number;
  csumOffset: number;
  /** GSO_NONE or GSO_TCPV4. */
  gso: number;
  /** MSS of the segments (GSO only). */
  gsoSize: number;
}

/** What a receiver can take as is. */
export interface OffloadCaps {
  csum: boolean;
  tso4: boolean;
}

export function acceptable(o: Offload, caps: OffloadCaps): boolean {
  if (o.gso === GSO_TCPV4) return caps.tso4 && caps.csum;
  return !o.needsCsum || caps.csum;
}

/** Complete a partial checksum in place; false when its offsets do not fit the frame. */
export function completeChecksum(f: Buffer, start: number, offset: number): boolean {
  const at = start + offset;
  if (start < ETH_HLEN || at + 2 > f.length || start >= f.length) return false;
  // The field holds the pseudo-header sum the sender seeded: summing over it completes the checksum.
  const c = inetChecksum(f, start, f.length);
  f.writeUInt16BE(c === 0 && offset === 6 ? 0xffff : c, at); // UDP: 0 means "none"
  return true;
}

/**
 * The frames a receiver without offloads must get for `f`: the frame with
 * its checksum completed, or (TCP/IPv4 GSO) the segments. null: malformed
 * (the frame is dropped).
 */
export function finalize(f: Buffer, o: Offload): Buffer[] | null {
  if (o.gso === GSO_TCPV4) return segmentTcp4(f, o.gsoSize);
  if (!o.needsCsum) return [f];
  const copy = Buffer.from(f); // other receivers may take the partial frame as is
  return completeChecksum(copy, o.csumStart, o.csumOffset) ? [copy] : null;
}

/** Cut a TCP/IPv4 super-frame (untagged Ethernet) into frames of at most `mss` payload bytes. */
export function segmentTcp4(f: Buffer, mss: number): Buffer[] | null {
  if (f.length < ETH_HLEN + 40 || f.readUInt16BE(12) !== ETHERTYPE_IPV4 || mss < 1 || mss > 65535) return null;
  const ip = ETH_HLEN;
  const ihl = (f[ip]! & 0x0f) * 4;
  if (f[ip]! >> 4 !== 4 || ihl < 20 || f[ip + 9] !== 6) return null;
  const tcp = ip + ihl;
  if (tcp + 20 > f.length) return null;
  const thl = (f[tcp + 12]! >> 4) * 4;
  const hdr = tcp + thl;
  if (thl < 20 || hdr > f.length) return null;
  const payload = f.length - hdr;
  const count = Math.max(1, Math.ceil(payload / mss));
  if (count > 1024) return null;
  const seq0 = f.readUInt32BE(tcp + 4);
  const id0 = f.readUInt16BE(ip + 4);
  const flags = f[tcp + 13]!;
  const src = f.readUInt32BE(ip + 12);
  const dst = f.readUInt32BE(ip + 16);
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const off = hdr + i * mss;
    const n = Math.min(mss, f.length - off);
    const s = Buffer.allocUnsafe(hdr + n);
    f.copy(s, 0, 0, hdr);
    f.copy(s, hdr, off, off + n);
    const last = i === count - 1;
    s.writeUInt16BE(ihl + thl + n, ip + 2);
    s.writeUInt16BE((id0 + i) & 0xffff, ip + 4);
    s.writeUInt16BE(0, ip + 10);
    s.writeUInt16BE(inetChecksum(s, ip, ip + ihl), ip + 10);
    s.writeUInt32BE((seq0 + i * mss) >>> 0, tcp + 4);
    // FIN and PSH only on the last segment; CWR only on the first.
    s[tcp + 13] = last ? flags : flags & ~0x09;
    if (i > 0) s[tcp + 13] = s[tcp + 13]! & ~0x80;
    s.writeUInt16BE(0, tcp + 16);
    const len = thl + n;
    const pseudo = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + 6 + len;
    s.writeUInt16BE(inetChecksum(s, tcp, s.length, pseudo), tcp + 16);
    out.push(s);
  }
  return out;
}
