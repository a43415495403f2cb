// Classic libpcap files (what tcpdump -w writes; tshark and wireshark read
// them): a 24-byte global header, then per frame a 16-byte record header
// and the frame's bytes. Little-endian, microsecond timestamps, LINKTYPE_ETHERNET.
export const PCAP_MAGIC = 0xa1b2c3d4;
export const LINKTYPE_ETHERNET = 1;
export const SNAPLEN = 65535;

export function pcapHeader(snaplen = SNAPLEN): Buffer {
  const h = Buffer.alloc(24);
  h.writeUInt32LE(PCAP_MAGIC, 0);
  h.writeUInt16LE(2, 4);
  h.writeUInt16LE(4, 6);
  h.writeInt32LE(0, 8); // thiszone
  h.writeUInt32LE(0, 12); // sigfigs
  h.writeUInt32LE(snaplen, 16);
  h.writeUInt32LE(LINKTYPE_ETHERNET, 20);
  return h;
}

/** One record: header + the frame (cut to snaplen). */
export function pcapRecord(frame: Buffer, timeMs: number, snaplen = SNAPLEN): Buffer {
  const n = Math.min(frame.length, snaplen);
  const r = Buffer.allocUnsafe(16 + n);
  const sec = Math.floor(timeMs / 1000);
  r.writeUInt32LE(sec >>> 0, 0);
  r.writeUInt32LE(Math.floor((timeMs - sec * 1000) * 1000), 4);
  r.writeUInt32LE(n, 8);
  r.writeUInt32LE(frame.length, 12);
  frame.copy(r, 16, 0, n);
  return r;
}

/** Re-insert the 802.1Q tag the switch keeps out of band, so a capture shows what was on the wire. */
export function tagged(frame: Buffer, vlan: number): Buffer {
  if (vlan === 0) return frame;
  const out = Buffer.allocUnsafe(frame.length + 4);
  frame.copy(out, 0, 0, 12);
  out.writeUInt16BE(0x8100, 12);
  out.writeUInt16BE(vlan & 0xfff, 14);
  frame.copy(out, 16, 12);
  return out;
}

/** Read a pcap file back (tests, `xvm net capture` summaries). */
export function readPcap(b: Buffer): { linktype: number; frames: { timeMs: number; data: Buffer; origLen: number }[] } {
  if (b.length < 24 || b.readUInt32LE(0) !== PCAP_MAGIC) throw new Error('not a little-endian microsecond pcap file');
  const linktype = b.readUInt32LE(20);
  const frames: { timeMs: number; data: Buffer; origLen: number }[] = [];
  let o = 24;
  while (o + 16 <= b.length) {
    const n = b.readUInt32LE(o + 8);
    if (o + 16 + n > b.length) throw new Error(`truncated record at offset ${o}`);
    frames.push({ timeMs: b.readUInt32LE(o) * 1000 + b.readUInt32LE(o + 4) / 1000, origLen: b.readUInt32LE(o + 12), data: b.subarray(o + 16, o + 16 + n) });
    o += 16 + n;
  }
  return { linktype, frames };
}
