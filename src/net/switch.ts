// The virtual switch: one per network. Learns which port each source MAC
// lives behind (per VLAN, entries age out), floods broadcast, multicast and
// unknown destinations within the frame's VLAN, keeps per-port counters and
// enforces per-port protection:
//
//   - a port with an assigned MAC may only send from it (no spoofing of
//     another guest's MAC), never from a group address;
//   - once the port's IPv4 address is known (a DHCP lease, or `ip=` in the
//     domain's config), IPv4 and ARP from it must carry that address
//     (0.0.0.0 allowed: DHCP and ARP probes).
//
// VLANs (802.1Q): an access port (`vlan`, 0 = the untagged native network)
// sends and receives untagged frames; a trunk port also carries tagged
// frames of the VLANs in its `trunk` list. Inside the switch a frame is
// always untagged plus a VLAN number; tags are added on egress to trunks.
//
// Everything is synchronous and allocation-light: input() is called once
// per frame from a port's transmit path and calls deliver() on the
// receiving ports directly.
import {
  ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_VLAN, formatIp, formatMac, isMulticastMac, readMac,
} from './frame.js';
import { acceptable, finalize, GSO_NONE, type Offload, type OffloadCaps } from './offload.js';

/** Largest frame accepted from a port: 1500-byte MTU + Ethernet header + one 802.1Q tag. */
export const MAX_FRAME = 1518;
export const MIN_FRAME = ETH_HLEN;
/** Largest GSO super-frame (a 64 KiB IP packet + Ethernet header + a tag). */
export const MAX_GSO_FRAME = 65535 + ETH_HLEN + 4;
export const DEFAULT_AGEING_MS = 300_000;

/** Something frames can be delivered to (a vhost-user port, the TAP uplink, a service). */
export interface PortSink {
  /**
   * Hand a frame to the port's peer; return false when it was dropped (no
   * room). `off` comes only if `caps` says the peer takes it (partial
   * checksum, GSO super-frame); otherwise the switch finishes the frame first.
   */
  deliver(frame: Buffer, off?: Offload): boolean;
  /** Offloads the peer takes as is (none when absent). */
  readonly caps?: OffloadCaps;
}

const NO_CAPS: OffloadCaps = { csum: false, tso4: false };

export interface PortConfig {
  id: string;
  /** The MAC the port must send from (undefined: any unicast source, e.g. the uplink). */
  mac?: number;
  /** Access VLAN (0 = untagged native network). */
  vlan?: number;
  /** Extra VLANs carried tagged (a trunk port). */
  trunk?: number[];
  /** The port's locked IPv4 address (from config); leases set it later otherwise. */
  ip?: number;
}

export interface PortCounters {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  /** Frames from the port refused: forged source MAC. */
  spoofedMac: number;
  /** Frames from the port refused: forged source IP. */
  spoofedIp: number;
  /** Frames from the port refused: too short or too long. */
  badSize: number;
  /** Frames from the port refused: a VLAN tag the port may not use. */
  badVlan: number;
  /** Frames for the port that its peer had no room for. */
  txDropped: number;
}

function zeroCounters(): PortCounters {
  return { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, spoofedMac: 0, spoofedIp: 0, badSize: 0, badVlan: 0, txDropped: 0 };
}

export interface Port {
  readonly id: string;
  readonly sink: PortSink;
  mac: number | undefined;
  vlan: number;
  trunk: Set<number>;
  ip: number | undefined;
  readonly counters: PortCounters;
}

interface FdbEntry {
  port: Port;
  seen: number;
}

/** Sees frames as they pass (packet capture). */
export interface FrameTap {
  /** null: every frame entering the switch; else frames into and out of this port. */
  readonly port: string | null;
  frame(frame: Buffer, vlan: number): void;
}

export interface PortInfo {
  id: string;
  mac: string | null;
  vlan: number;
  trunk: number[];
  ip: string | null;
  counters: PortCounters;
}

export class Switch {
  private readonly ports = new Map<string, Port>();
  /** VLAN → MAC → where it was last seen. */
  private readonly fdb = new Map<number, Map<number, FdbEntry>>();
  private readonly taps = new Set<FrameTap>();
  /** Frames dropped because they came from no known port (a removed one). */
  orphanFrames = 0;

  constructor(
    readonly name: string,
    readonly ageingMs = DEFAULT_AGEING_MS,
    private readonly now: () => number = Date.now,
  ) {}

  addPort(cfg: PortConfig, sink: PortSink): Port {
    if (this.ports.has(cfg.id)) throw new Error(`port ${cfg.id} already exists on ${this.name}`);
    const vlan = cfg.vlan ?? 0;
    if (!Number.isInteger(vlan) || vlan < 0 || vlan > 4094) throw new Error(`port ${cfg.id}: bad VLAN ${vlan}`);
    for (const t of cfg.trunk ?? []) if (!Number.isInteger(t) || t < 1 || t > 4094) throw new Error(`port ${cfg.id}: bad trunk VLAN ${t}`);
    if (cfg.mac !== undefined && isMulticastMac(cfg.mac)) throw new Error(`port ${cfg.id}: ${formatMac(cfg.mac)} is a group address`);
    const p: Port = { id: cfg.id, sink, mac: cfg.mac, vlan, trunk: new Set(cfg.trunk ?? []), ip: cfg.ip, counters: zeroCounters() };
    this.ports.set(cfg.id, p);
    return p;
  }

  removePort(id: string): boolean {
    const p = this.ports.get(id);
    if (!p) return false;
    this.ports.delete(id);
    for (const table of this.fdb.values()) for (const [mac, e] of table) if (e.port === p) table.delete(mac);
    return true;
  }

  port(id: string): Port | undefined {
    return this.ports.get(id);
  }

  portByMac(mac: number): Port | undefined {
    for (const p of this.ports.values()) if (p.mac === mac) return p;
    return undefined;
  }

  /** Lock a port to an IPv4 address (a lease was granted). */
  setPortIp(id: string, ip: number | undefined): void {
    const p = this.ports.get(id);
    if (p) p.ip = ip;
  }

  addTap(t: FrameTap): void {
    this.taps.add(t);
  }
  removeTap(t: FrameTap): void {
    this.taps.delete(t);
  }

  /** A frame sent by port `id` (with its offload metadata, from a guest that negotiated offloads). */
  input(id: string, frame: Buffer, off?: Offload): void {
    const src = this.ports.get(id);
    if (!src) {
      this.orphanFrames++;
      return;
    }
    const c = src.counters;
    if (off !== undefined && !off.needsCsum && off.gso === GSO_NONE) off = undefined;
    if (frame.length < MIN_FRAME || frame.length > (off !== undefined && off.gso !== GSO_NONE ? MAX_GSO_FRAME : MAX_FRAME)) {
      c.badSize++;
      return;
    }
    const smac = readMac(frame, 6);
    if (isMulticastMac(smac) || (src.mac !== undefined && smac !== src.mac)) {
      c.spoofedMac++;
      return;
    }
    // VLAN classification: strip a tag into `vlan`.
    let vlan = src.vlan;
    let type = frame.readUInt16BE(12);
    if (type === ETHERTYPE_VLAN) {
      if (frame.length < ETH_HLEN + 4) {
        c.badSize++;
        return;
      }
      const vid = frame.readUInt16BE(14) & 0xfff;
      if (!src.trunk.has(vid)) {
        c.badVlan++;
        return;
      }
      vlan = vid;
      const untagged = Buffer.allocUnsafe(frame.length - 4);
      frame.copy(untagged, 0, 0, 12);
      frame.copy(untagged, 12, 16);
      frame = untagged;
      type = frame.readUInt16BE(12);
      if (off !== undefined) off = { ...off, csumStart: off.csumStart - 4 };
    }
    if (src.ip !== undefined && !this.ipAllowed(frame, type, src.ip)) {
      c.spoofedIp++;
      return;
    }
    c.rxFrames++;
    c.rxBytes += frame.length;
    const now = this.now();
    this.learn(vlan, smac, src, now);
    if (this.taps.size > 0) for (const t of this.taps) if (t.port === null || t.port === id) t.frame(frame, vlan);

    // Finished frames for receivers that cannot take the offload: made once, shared.
    let finished: Buffer[] | null | undefined;
    const fin = (): Buffer[] | null => (finished === undefined ? (finished = off === undefined ? [frame] : finalize(frame, off)) : finished);
    const dmac = readMac(frame, 0);
    if (!isMulticastMac(dmac)) {
      const e = this.fdb.get(vlan)?.get(dmac);
      if (e !== undefined && now - e.seen <= this.ageingMs) {
        if (e.port !== src) this.send(e.port, frame, vlan, off, fin);
        return;
      }
    }
    // Broadcast, multicast, unknown unicast: every other port on the VLAN.
    for (const p of this.ports.values()) if (p !== src) this.send(p, frame, vlan, off, fin);
  }

  private ipAllowed(frame: Buffer, type: number, ip: number): boolean {
    if (type === ETHERTYPE_IPV4) {
      if (frame.length < ETH_HLEN + 20) return false;
      const sip = frame.readUInt32BE(ETH_HLEN + 12);
      return sip === ip || sip === 0;
    }
    if (type === ETHERTYPE_ARP) {
      if (frame.length < ETH_HLEN + 28) return false;
      const spa = frame.readUInt32BE(ETH_HLEN + 14);
      const sha = readMac(frame, ETH_HLEN + 8);
      return (spa === ip || spa === 0) && sha === readMac(frame, 6);
    }
    return true;
  }

  private learn(vlan: number, mac: number, port: Port, now: number): void {
    let table = this.fdb.get(vlan);
    if (!table) this.fdb.set(vlan, (table = new Map()));
    const e = table.get(mac);
    if (e !== undefined) {
      e.port = port;
      e.seen = now;
    } else {
      // Bound the table: a flood of made-up sources (only possible from
      // ports without an assigned MAC) cannot grow it without limit.
      if (table.size >= 4096) this.expire(now);
      if (table.size < 4096) table.set(mac, { port, seen: now });
    }
  }

  /** Egress to one port, if it is on the frame's VLAN (tagging for trunks, finishing offloads it cannot take). */
  private send(p: Port, frame: Buffer, vlan: number, off: Offload | undefined, fin: () => Buffer[] | null): void {
    const tag = p.vlan !== vlan;
    if (tag && !p.trunk.has(vlan)) return;
    if (this.taps.size > 0) for (const t of this.taps) if (t.port === p.id) t.frame(frame, vlan);
    const c = p.counters;
    if (off !== undefined && !tag && acceptable(off, p.sink.caps ?? NO_CAPS)) {
      if (p.sink.deliver(frame, off)) {
        c.txFrames++;
        c.txBytes += frame.length;
      } else c.txDropped++;
      return;
    }
    const frames = off === undefined ? [frame] : fin();
    if (frames === null) {
      c.txDropped++; // malformed offload metadata: nothing sensible to deliver
      return;
    }
    for (const f of frames) {
      let out = f;
      if (tag) {
        out = Buffer.allocUnsafe(f.length + 4);
        f.copy(out, 0, 0, 12);
        out.writeUInt16BE(ETHERTYPE_VLAN, 12);
        out.writeUInt16BE(vlan, 14);
        f.copy(out, 16, 12);
      }
      if (p.sink.deliver(out)) {
        c.txFrames++;
        c.txBytes += out.length;
      } else c.txDropped++;
    }
  }

  /** Drop forwarding entries not refreshed within the ageing time. */
  expire(now = this.now()): number {
    let n = 0;
    for (const table of this.fdb.values()) {
      for (const [mac, e] of table) {
        if (now - e.seen > this.ageingMs) {
          table.delete(mac);
          n++;
        }
      }
    }
    return n;
  }

  /** The forwarding table (for `xvm net info`). */
  fdbEntries(): { vlan: number; mac: string; port: string; ageMs: number }[] {
    const now = this.now();
    const out: { vlan: number; mac: string; port: string; ageMs: number }[] = [];
    for (const [vlan, table] of this.fdb) for (const [mac, e] of table) if (now - e.seen <= this.ageingMs) out.push({ vlan, mac: formatMac(mac), port: e.port.id, ageMs: now - e.seen });
    return out;
  }

  portInfo(): PortInfo[] {
    return [...this.ports.values()].map((p) => ({
      id: p.id,
      mac: p.mac === undefined ? null : formatMac(p.mac),
      vlan: p.vlan,
      trunk: [...p.trunk].sort((a, b) => a - b),
      ip: p.ip === undefined ? null : formatIp(p.ip),
      counters: { ...p.counters },
    }));
  }
}
