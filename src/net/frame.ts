// Ethernet / 802.1Q / IPv4 / ARP / UDP helpers for the switch and its
// services. MACs travel as 48-bit numbers (exact in a JS number) so the
// forwarding table is a Map lookup, not a string build per frame.

export const ETH_HLEN = 14;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_IPV6 = 0x86dd;
export const ETHERTYPE_RARP = 0x8035;
export const BROADCAST = 0xffffffffffff;
export const IPPROTO_ICMP = 1;
export const IPPROTO_UDP = 17;

/** The 48-bit MAC at `off` as a number. */
export function readMac(b: Buffer, off: number): number {
  return b.readUIntBE(off, 6);
}

export function writeMac(b: Buffer, off: number, mac: number): void {
  b.writeUIntBE(mac, off, 6);
}

/** "00:16:3e:01:02:03" → number; throws on bad text. */
export function parseMac(s: string): number {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s)) throw new Error(`bad MAC address ${JSON.stringify(s)}`);
  return parseInt(s.replace(/:/g, ''), 16);
}

export function formatMac(m: number): string {
  return m.toString(16).padStart(12, '0').replace(/(..)(?!$)/g, '$1:');
}

/** Group bit (multicast or broadcast): lowest bit of the first byte. */
export function isMulticastMac(m: number): boolean {
  return Math.floor(m / 0x10000000000) % 2 === 1;
}

export function parseIp(s: string): number {
  const p = s.split('.');
  if (p.length !== 4 || p.some((x) => !/^\d{1,3}$/.test(x) || Number(x) > 255)) throw new Error(`bad IPv4 address ${JSON.stringify(s)}`);
  return ((Number(p[0]) << 24) | (Number(p[1]) << 16) | (Number(p[2]) << 8) | Number(p[3])) >>> 0;
}

export function formatIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Subnet {
  /** Network address. */
  net: number;
  prefix: number;
  mask: number;
}

/** "10.0.99.0/24" → subnet; the prefix must be 8..30 and the address the network's. */
export function parseCidr(s: string): Subnet {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(s);
  if (!m) throw new Error(`bad subnet ${JSON.stringify(s)}: use A.B.C.D/N, e.g. 10.0.99.0/24`);
  const prefix = Number(m[2]);
  if (prefix < 8 || prefix > 30) throw new Error(`subnet ${s}: prefix length must be from 8 to 30`);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const net = parseIp(m[1]!);
  if ((net & mask) >>> 0 !== net) throw new Error(`subnet ${s}: host bits are set (the network address is ${formatIp((net & mask) >>> 0)}/${prefix})`);
  return { net, prefix, mask };
}

export function inSubnet(ip: number, s: Subnet): boolean {
  return (ip & s.mask) >>> 0 === s.net;
}

/** The Internet checksum (RFC 1071) of `b[start, end)`, folded, plus an initial sum. */
export function inetChecksum(b: Buffer, start: number, end: number, initial = 0): number {
  let sum = initial;
  let i = start;
  for (; i + 1 < end; i += 2) sum += b.readUInt16BE(i);
  if (i < end) sum += b[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Build an Ethernet frame. */
export function ethFrame(dst: number, src: number, type: number, payload: Buffer): Buffer {
  const f = Buffer.alloc(ETH_HLEN + payload.length);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  f.writeUInt16BE(type, 12);
  payload.copy(f, ETH_HLEN);
  return f;
}

/**
 * The announcement QEMU's qemu_announce_self sends for a NIC that moved: a
 * broadcast RARP "request reverse" (opcode 3) from `mac` for `mac`, no IPv4
 * addresses, padded to the 60-byte minimum; tagged with `vlan` if given.
 */
export function rarpFrame(mac: number, vlan?: number): Buffer {
  const arp = Buffer.alloc(28);
  arp.writeUInt16BE(1, 0); // Ethernet
  arp.writeUInt16BE(ETHERTYPE_IPV4, 2);
  arp[4] = 6;
  arp[5] = 4;
  arp.writeUInt16BE(3, 6); // reverse request
  writeMac(arp, 8, mac);
  writeMac(arp, 18, mac);
  const f = Buffer.alloc(60);
  ethFrame(BROADCAST, mac, ETHERTYPE_RARP, arp).copy(f);
  if (vlan === undefined) return f;
  const t = Buffer.alloc(64);
  f.copy(t, 0, 0, 12);
  t.writeUInt16BE(ETHERTYPE_VLAN, 12);
  t.writeUInt16BE(vlan & 0xfff, 14);
  f.copy(t, 16, 12);
  return t;
}

/** An IPv4 packet (no options) with a correct header checksum. */
export function ipv4Packet(src: number, dst: number, proto: number, payload: Buffer, ttl = 64): Buffer {
  const p = Buffer.alloc(20 + payload.length);
  p[0] = 0x45;
  p.writeUInt16BE(p.length, 2);
  p.writeUInt16BE(0x4000, 6); // DF
  p[8] = ttl;
  p[9] = proto;
  p.writeUInt32BE(src, 12);
  p.writeUInt32BE(dst, 16);
  p.writeUInt16BE(inetChecksum(p, 0, 20), 10);
  payload.copy(p, 20);
  return p;
}

/** A UDP datagram with its checksum over the IPv4 pseudo-header. */
export function udpDatagram(src: number, dst: number, sport: number, dport: number, data: Buffer): Buffer {
  const u = Buffer.alloc(8 + data.length);
  u.writeUInt16BE(sport, 0);
  u.writeUInt16BE(dport, 2);
  u.writeUInt16BE(u.length, 4);
  data.copy(u, 8);
  const pseudo = ((src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + IPPROTO_UDP + u.length) >>> 0;
  let c = inetChecksum(u, 0, u.length, pseudo);
  if (c === 0) c = 0xffff;
  u.writeUInt16BE(c, 6);
  return u;
}
