// virtio-net over vhost-user: one switch port. Queue 0 receives (frames the
// switch delivers go into buffers the guest posted), queue 1 transmits
// (frames the guest sends go to the switch). No control queue, one queue
// pair; checksum and TCP/IPv4 segmentation offloads both ways (the switch
// finishes frames for receivers that did not negotiate them). The host
// moderates receive interrupts (Vring.notifyIntervalMs, src/net/host.ts).
//
// Receive with VIRTIO_NET_F_MRG_RXBUF: a frame may span several posted
// buffers (num_buffers in the header says how many). When the guest has
// posted no room, frames wait in a short queue (RX_BACKLOG) that drains on
// the guest's next receive kick; beyond it they are dropped and counted.
//
// After a live migration QEMU asks the port to announce the guest
// (VHOST_USER_SEND_RARP, offered with PROTOCOL_F_RARP when the host gives
// `onAnnounce`): the host (src/net/announce.ts) sends RARP frames from the
// guest's MAC into the switch, so the network learns the new port at once.
import { bit, hasBit, PF, VIRTIO_F_VERSION_1, type DescriptorChain, type VhostUserDevice, type Vring } from '../../vhost/index.js';
import { NetMetrics } from './metrics.js';
import { fillSegments, NET_HDR_SIZE, NET_HDR_SIZE_LEGACY, parseTx, VIRTIO_NET_HDR_F_NEEDS_CSUM } from './request.js';
import { GSO_NONE, GSO_TCPV4, type Offload, type OffloadCaps } from '../../net/offload.js';

export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_S_LINK_UP = 1;
export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
/** Frames held for a guest that has no receive buffers posted. */
export const RX_BACKLOG = 256;
/** A GSO super-frame: a 64 KiB IP packet and its Ethernet header. */
export const MAX_GSO_FRAME = 65535 + 14;
/** struct virtio_net_config: mac[6], status, max_virtqueue_pairs, mtu. */
export const CONFIG_SIZE = 12;

export interface NetDeviceOptions {
  mac: Buffer;
  /** Largest frame accepted from the guest (without the virtio header). */
  maxFrame: number;
  /** Where transmitted frames go (the switch), with their offload metadata. */
  onFrame: (frame: Buffer, off?: Offload) => void;
  /**
   * Announce the guest's MAC (QEMU's SEND_RARP after a migration; the MAC
   * is checked to be this port's). Without it PROTOCOL_F_RARP is not offered.
   */
  onAnnounce?: (mac: Buffer) => void;
  /** Offer checksum and TCP/IPv4 segmentation offload (default true). */
  offloads?: boolean;
  log?: (msg: string) => void;
}

export class NetDevice implements VhostUserDevice {
  readonly name = 'net';
  readonly numQueues = 2;
  readonly features: bigint;
  readonly protocolFeatures: bigint;
  readonly metrics = new NetMetrics();
  /** Set by the host after the backend exists: where received frames go. */
  rxRing: Vring | null = null;
  private acked = 0n;
  private backlog: { frame: Buffer; off: Offload | undefined }[] = [];
  /** What the guest takes as is (the switch finishes the rest). */
  caps: OffloadCaps = { csum: false, tso4: false };
  private readonly config = Buffer.alloc(CONFIG_SIZE);
  private readonly hdr = Buffer.alloc(NET_HDR_SIZE);
  private warned = 0;
  private readonly say: (msg: string) => void;

  constructor(private readonly opts: NetDeviceOptions) {
    if (opts.mac.length !== 6) throw new Error('a MAC is 6 bytes');
    let f = bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_NET_F_STATUS);
    // Offloads both ways: the guest may send partial checksums and TCP/IPv4
    // super-frames, and take them; the switch finishes frames for receivers
    // that did not negotiate them (src/net/offload.ts).
    if (opts.offloads !== false) f |= bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO4);
    this.features = f;
    // No VIRTIO_NET_F_GUEST_ANNOUNCE: a guest that negotiates it makes QEMU
    // skip SEND_RARP, and its own announcement (gratuitous ARP on a config
    // interrupt) needs the guest to run and to have an address. docs/network.md.
    this.protocolFeatures = opts.onAnnounce !== undefined ? bit(PF.RARP) : 0n;
    opts.mac.copy(this.config, 0);
    this.config.writeUInt16LE(VIRTIO_NET_S_LINK_UP, 6);
    this.config.writeUInt16LE(1, 8);
    this.config.writeUInt16LE(1500, 10);
    this.say = opts.log ?? ((m) => process.stderr.write(`net: ${m}\n`));
  }

  getConfig(offset: number, size: number): Buffer {
    const out = Buffer.alloc(size);
    if (offset < CONFIG_SIZE) this.config.copy(out, 0, offset, Math.min(CONFIG_SIZE, offset + size));
    return out;
  }

  ackFeatures(f: bigint): void {
    this.acked = f;
    this.caps = { csum: hasBit(f, VIRTIO_NET_F_GUEST_CSUM), tso4: hasBit(f, VIRTIO_NET_F_GUEST_CSUM) && hasBit(f, VIRTIO_NET_F_GUEST_TSO4) };
  }

  sendRarp(mac: Buffer): void {
    const m = this.metrics;
    m.rarpRequests++;
    if (mac.length !== 6 || !mac.equals(this.opts.mac)) {
      m.rarpRefused++;
      throw new Error(`SEND_RARP for MAC ${fmtMac(mac)}, but this port's MAC is ${fmtMac(this.opts.mac)}`);
    }
    this.opts.onAnnounce?.(Buffer.from(mac));
  }

  reset(): void {
    this.acked = 0n;
    this.caps = { csum: false, tso4: false };
    this.backlog = [];
  }

  private get mergeable(): boolean {
    return hasBit(this.acked, VIRTIO_NET_F_MRG_RXBUF);
  }

  private get hdrSize(): number {
    return hasBit(this.acked, VIRTIO_F_VERSION_1) || this.mergeable ? NET_HDR_SIZE : NET_HDR_SIZE_LEGACY;
  }

  private warn(msg: string): void {
    // A hostile guest must not flood the log.
    if (this.warned < 50) this.say(msg);
    else if (this.warned === 50) this.say('further warnings suppressed');
    this.warned++;
  }

  processQueue(ring: Vring): void {
    if (ring.index === TX_QUEUE) this.transmit(ring);
    else if (ring.index === RX_QUEUE) {
      this.rxRing = ring;
      this.drainBacklog();
    }
  }

  private transmit(ring: Vring): void {
    const m = this.metrics;
    const hs = this.hdrSize;
    const csum = hasBit(this.acked, VIRTIO_NET_F_CSUM);
    const tso = csum && hasBit(this.acked, VIRTIO_NET_F_HOST_TSO4);
    const max = tso ? MAX_GSO_FRAME : this.opts.maxFrame;
    let chain: DescriptorChain | null;
    while ((chain = ring.pop()) !== null) {
      const r = parseTx(chain, hs, max);
      ring.complete(chain, 0);
      if ('error' in r) {
        if (r.kind === 'runt') m.txRunt++;
        else if (r.kind === 'oversize') m.txOversize++;
        else m.txMalformed++;
        this.warn(`transmit refused: ${r.error}`);
        continue;
      }
      let off: Offload | undefined;
      const h = r.hdr;
      if (h.gsoType !== GSO_NONE || (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
        // Only what was negotiated: anything else is a driver bug or a hostile guest.
        if ((h.gsoType !== GSO_NONE && (!tso || h.gsoType !== GSO_TCPV4 || h.gsoSize === 0)) || ((h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && !csum)) {
          m.txMalformed++;
          this.warn(`transmit refused: offload (flags ${h.flags}, gso ${h.gsoType}) that was not negotiated`);
          continue;
        }
        if (h.gsoType === GSO_NONE && r.frame.length > this.opts.maxFrame) {
          m.txOversize++;
          continue;
        }
        off = { needsCsum: (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0, csumStart: h.csumStart, csumOffset: h.csumOffset, gso: h.gsoType, gsoSize: h.gsoSize };
        if (off.gso !== GSO_NONE) m.txGso++;
      } else if (r.frame.length > this.opts.maxFrame) {
        m.txOversize++;
        continue;
      }
      m.txFrames++;
      m.txBytes += r.frame.length;
      this.opts.onFrame(r.frame, off);
    }
  }

  /** A frame from the switch for this guest. Returns false when it was dropped. */
  deliver(frame: Buffer, off?: Offload): boolean {
    const m = this.metrics;
    if (this.backlog.length === 0 && this.rxRing !== null && this.write(this.rxRing, frame, off)) return true;
    if (this.backlog.length >= RX_BACKLOG || this.rxRing === null || !this.rxRing.started) {
      m.rxDropped++;
      return false;
    }
    this.backlog.push({ frame, off });
    m.rxQueued++;
    return true;
  }

  private drainBacklog(): void {
    const ring = this.rxRing;
    if (ring === null) return;
    let i = 0;
    while (i < this.backlog.length && this.write(ring, this.backlog[i]!.frame, this.backlog[i]!.off)) i++;
    if (i > 0) this.backlog.splice(0, i);
  }

  /** Put one frame in the receive queue; false when the guest has not posted enough room. */
  private write(ring: Vring, frame: Buffer, off?: Offload): boolean {
    const m = this.metrics;
    const hs = this.hdrSize;
    const total = hs + frame.length;
    const chains: DescriptorChain[] = [];
    let room = 0;
    while (room < total) {
      const c = ring.pop();
      if (c === null) break;
      if (c.error !== undefined || c.writableLen === 0) {
        m.rxBadChains++;
        ring.complete(c, 0);
        continue;
      }
      chains.push(c);
      room += c.writableLen;
      if (!this.mergeable) break;
    }
    if (room < total) {
      if (!this.mergeable && chains.length === 1) {
        // A single buffer too small for this frame: the frame can never fit it.
        m.rxDropped++;
        this.warn(`receive buffer of ${room} bytes is too small for a ${frame.length}-byte frame`);
        for (let i = chains.length - 1; i >= 0; i--) ring.unpop(chains[i]!);
        return true;
      }
      for (let i = chains.length - 1; i >= 0; i--) ring.unpop(chains[i]!);
      return false;
    }
    const hdr = this.hdr.subarray(0, hs);
    hdr.fill(0);
    if (off !== undefined) {
      if (off.needsCsum) {
        hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        hdr.writeUInt16LE(off.csumStart, 6);
        hdr.writeUInt16LE(off.csumOffset, 8);
      }
      if (off.gso !== GSO_NONE) {
        hdr[1] = off.gso;
        hdr.writeUInt16LE(off.gsoSize, 4);
        hdr.writeUInt16LE(headerLength(frame), 2);
      }
    }
    if (hs === NET_HDR_SIZE) hdr.writeUInt16LE(chains.length, 10);
    let from = 0;
    for (const c of chains) {
      const n = fillSegments(c.writable, hdr, frame, from);
      from += n;
      ring.complete(c, n);
    }
    m.rxFrames++;
    m.rxBytes += frame.length;
    m.rxBuffers += chains.length;
    return true;
  }
}

function fmtMac(b: Buffer): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** Ethernet + IPv4 + TCP header bytes of a TCP/IPv4 frame (virtio_net_hdr.hdr_len). */
function headerLength(f: Buffer): number {
  if (f.length < 34) return f.length;
  const ihl = (f[14]! & 0x0f) * 4;
  if (f.length < 14 + ihl + 20) return f.length;
  return 14 + ihl + (f[14 + ihl + 12]! >> 4) * 4;
}
