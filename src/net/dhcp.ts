// The DHCP server of a network (RFC 2131 / 2132 subset): DISCOVER → OFFER,
// REQUEST → ACK / NAK, RELEASE, DECLINE, INFORM. Addresses come from the
// network's subnet; each MAC keeps its address (the lease table is
// persisted by LeaseStore, so a restart of the switch hands out the same
// addresses). Parsing is defensive: packets come from guests.
import fs from 'node:fs';
import path from 'node:path';
import { formatIp, formatMac, inSubnet, parseIp, parseMac, readMac, writeMac, type Subnet } from './frame.js';

export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;
const BOOTP_FIXED = 236;
const MAGIC = 0x63825363;

export const DISCOVER = 1;
export const OFFER = 2;
export const REQUEST = 3;
export const DECLINE = 4;
export const ACK = 5;
export const NAK = 6;
export const RELEASE = 7;
export const INFORM = 8;

export interface DhcpMessage {
  op: number;
  xid: number;
  flags: number;
  ciaddr: number;
  yiaddr: number;
  chaddr: number;
  type: number;
  requested?: number;
  serverId?: number;
  hostname?: string;
}

/** Parse a BOOTP/DHCP payload; null when it is not a well-formed DHCP request. */
export function parseDhcp(b: Buffer): DhcpMessage | null {
  if (b.length < BOOTP_FIXED + 4) return null;
  if (b[1] !== 1 || b[2] !== 6) return null; // Ethernet, 6-byte addresses
  if (b.readUInt32BE(BOOTP_FIXED) !== MAGIC) return null;
  const m: DhcpMessage = {
    op: b[0]!,
    xid: b.readUInt32BE(4),
    flags: b.readUInt16BE(10),
    ciaddr: b.readUInt32BE(12),
    yiaddr: b.readUInt32BE(16),
    chaddr: readMac(b, 28),
    type: 0,
  };
  let i = BOOTP_FIXED + 4;
  while (i < b.length) {
    const code = b[i]!;
    if (code === 255) break;
    if (code === 0) {
      i++;
      continue;
    }
    if (i + 1 >= b.length) return null;
    const len = b[i + 1]!;
    const v = i + 2;
    if (v + len > b.length) return null;
    if (code === 53 && len === 1) m.type = b[v]!;
    else if (code === 50 && len === 4) m.requested = b.readUInt32BE(v);
    else if (code === 54 && len === 4) m.serverId = b.readUInt32BE(v);
    else if (code === 12 && len > 0) m.hostname = b.toString('latin1', v, v + len).replace(/[^A-Za-z0-9_.-]/g, '?');
    i = v + len;
  }
  if (m.op !== 1 || m.type === 0) return null;
  return m;
}

export interface Lease {
  mac: string;
  ip: string;
  hostname?: string;
  /** ms since the epoch. */
  expires: number;
}

/** The lease table, kept in one JSON file (written atomically on every change). */
export class LeaseStore {
  private leases = new Map<number, Lease>();

  constructor(private readonly file: string | null) {
    if (file === null) return;
    try {
      const data = JSON.parse(fs.readFileSync(file, 'utf8')) as { leases?: Lease[] };
      for (const l of data.leases ?? []) {
        try {
          this.leases.set(parseMac(l.mac), { mac: l.mac, ip: formatIp(parseIp(l.ip)), hostname: l.hostname, expires: Number(l.expires) || 0 });
        } catch {
          /* a bad entry is skipped */
        }
      }
    } catch {
      /* no file yet, or unreadable: start empty */
    }
  }

  get(mac: number): Lease | undefined {
    return this.leases.get(mac);
  }

  all(): Lease[] {
    return [...this.leases.values()];
  }

  set(mac: number, l: Lease): void {
    this.leases.set(mac, l);
    this.save();
  }

  delete(mac: number): void {
    if (this.leases.delete(mac)) this.save();
  }

  private save(): void {
    if (this.file === null) return;
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ leases: this.all() }, null, 2) + '\n');
    fs.renameSync(tmp, this.file);
  }
}

export interface DhcpServerOptions {
  subnet: Subnet;
  /** Our address (server identifier, router option). */
  gateway: number;
  leaseSeconds?: number;
  leases: LeaseStore;
  /** Addresses never handed out (configured `ip=` of ports, the uplink's). */
  reserved?: () => Iterable<number>;
  now?: () => number;
}

export interface DhcpReply {
  /** The BOOTP payload to send back. */
  payload: Buffer;
  /** Send to the client's address (a renewal) instead of broadcast. */
  unicast: number | null;
  type: number;
  /** The lease granted (ACK only). */
  lease?: Lease;
}

export class DhcpServer {
  readonly leaseSeconds: number;
  private readonly now: () => number;

  constructor(private readonly o: DhcpServerOptions) {
    this.leaseSeconds = o.leaseSeconds ?? 3600;
    this.now = o.now ?? Date.now;
  }

  private first(): number {
    return this.o.subnet.net + 1;
  }
  private last(): number {
    return (this.o.subnet.net | ~this.o.subnet.mask) >>> 0; // broadcast, exclusive
  }

  private usable(ip: number, mac: number): boolean {
    const s = this.o.subnet;
    if (!inSubnet(ip, s) || ip < this.first() || ip >= this.last() || ip === this.o.gateway) return false;
    for (const r of this.o.reserved?.() ?? []) if (r === ip) return false;
    const now = this.now();
    for (const l of this.o.leases.all()) if (l.ip === formatIp(ip) && parseMac(l.mac) !== mac && l.expires > now) return false;
    return true;
  }

  /** The address for `mac`: its old one if still usable, else the first free one (or an expired one). */
  private pick(mac: number, requested?: number): number | null {
    const old = this.o.leases.get(mac);
    if (old !== undefined && this.usable(parseIp(old.ip), mac)) return parseIp(old.ip);
    if (requested !== undefined && this.usable(requested, mac) && !this.takenByOther(requested, mac)) return requested;
    for (let ip = this.first(); ip < this.last(); ip++) if (this.usable(ip, mac) && !this.takenByOther(ip, mac)) return ip;
    return null;
  }

  /** Held by another MAC's lease (even an expired one: reused only when nothing else is free). */
  private takenByOther(ip: number, mac: number): boolean {
    const t = formatIp(ip);
    return this.o.leases.all().some((l) => l.ip === t && parseMac(l.mac) !== mac);
  }

  handle(m: DhcpMessage): DhcpReply | null {
    switch (m.type) {
      case DISCOVER: {
        let ip = this.pick(m.chaddr, m.requested);
        if (ip === null) ip = this.reuseExpired(m.chaddr);
        if (ip === null) return null; // pool exhausted: stay silent
        return { payload: this.build(m, OFFER, ip), unicast: null, type: OFFER };
      }
      case REQUEST: {
        if (m.serverId !== undefined && m.serverId !== this.o.gateway) return null; // chose another server
        const want = m.requested ?? m.ciaddr;
        const old = this.o.leases.get(m.chaddr);
        const ok = want !== 0 && (this.usable(want, m.chaddr) && (!this.takenByOther(want, m.chaddr) || (old !== undefined && old.ip === formatIp(want))));
        if (!ok) return { payload: this.build(m, NAK, 0), unicast: null, type: NAK };
        const lease: Lease = { mac: formatMac(m.chaddr), ip: formatIp(want), expires: this.now() + this.leaseSeconds * 1000, ...(m.hostname ? { hostname: m.hostname } : {}) };
        this.o.leases.set(m.chaddr, lease);
        return { payload: this.build(m, ACK, want), unicast: m.ciaddr !== 0 ? m.ciaddr : null, type: ACK, lease };
      }
      case RELEASE: {
        const old = this.o.leases.get(m.chaddr);
        if (old !== undefined) this.o.leases.set(m.chaddr, { ...old, expires: 0 });
        return null;
      }
      case DECLINE:
        return null;
      case INFORM:
        return { payload: this.build(m, ACK, 0), unicast: m.ciaddr !== 0 ? m.ciaddr : null, type: ACK };
      default:
        return null;
    }
  }

  private reuseExpired(mac: number): number | null {
    const now = this.now();
    const expired = this.o.leases.all().filter((l) => l.expires <= now).sort((a, b) => a.expires - b.expires);
    for (const l of expired) {
      const ip = parseIp(l.ip);
      if (this.usable(ip, mac)) {
        this.o.leases.delete(parseMac(l.mac));
        return ip;
      }
    }
    return null;
  }

  private build(m: DhcpMessage, type: number, yiaddr: number): Buffer {
    const opts: Buffer[] = [];
    const opt = (code: number, v: Buffer) => opts.push(Buffer.from([code, v.length]), v);
    const u32 = (n: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(n >>> 0);
      return b;
    };
    opt(53, Buffer.from([type]));
    opt(54, u32(this.o.gateway));
    if (type !== NAK) {
      opt(1, u32(this.o.subnet.mask));
      opt(3, u32(this.o.gateway));
      opt(28, u32(this.last()));
      if (m.type !== INFORM) {
        opt(51, u32(this.leaseSeconds));
        opt(58, u32(Math.floor(this.leaseSeconds / 2)));
        opt(59, u32(Math.floor((this.leaseSeconds * 7) / 8)));
      }
    }
    opts.push(Buffer.from([255]));
    const b = Buffer.alloc(BOOTP_FIXED + 4);
    b[0] = 2; // BOOTREPLY
    b[1] = 1;
    b[2] = 6;
    b.writeUInt32BE(m.xid, 4);
    b.writeUInt16BE(m.flags, 10);
    b.writeUInt32BE(m.type === INFORM ? m.ciaddr : 0, 12);
    b.writeUInt32BE(yiaddr >>> 0, 16);
    b.writeUInt32BE(type === NAK ? 0 : this.o.gateway, 20); // siaddr
    writeMac(b, 28, m.chaddr);
    b.writeUInt32BE(MAGIC, BOOTP_FIXED);
    const out = Buffer.concat([b, ...opts]);
    // Pad to the classic 300-byte minimum BOOTP size some clients expect.
    return out.length < 300 ? Buffer.concat([out, Buffer.alloc(300 - out.length)]) : out;
  }
}
