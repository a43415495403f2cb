// virtio-net over vhost-user: one switch port. Queue 0 receives (frames the
// switch delivers go into buffers the guest posted), queue 1 transmits
// (frames the guest sends go to the switch). No control queue, one queue
// pair, no offloads: the switch sees whole, checksummed frames.
//
// Receive with VIRTIO_NET_F_MRG_RXBUF: a frame may span several posted
// buffers (num_buffers in the header says how many). When the guest has
// posted no room, frames wait in a short queue (RX_BACKLOG) that drains on
// the guest's next receive kick; beyond it they are dropped and counted.
import { bit, hasBit, VIRTIO_F_VERSION_1, type DescriptorChain, type VhostUserDevice, type Vring } from '../../vhost/index.js';
import { NetMetrics } from './metrics.js';
import { fillSegments, NET_HDR_SIZE, NET_HDR_SIZE_LEGACY, parseTx } from './request.js';

export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_S_LINK_UP = 1;
export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
/** Frames held for a guest that has no receive buffers posted. */
export const RX_BACKLOG = 256;
/** struct virtio_net_config: mac[6], status, max_virtqueue_pairs, mtu. */
export const CONFIG_SIZE = 12;

export interface NetDeviceOptions {
  mac: Buffer;
  /** Largest frame accepted from the guest (without the virtio header). */
  maxFrame: number;
  /** Where transmitted frames go (the switch). */
  onFrame: (frame: Buffer) => void;
  log?: (msg: string) => void;
}

export class NetDevice implements VhostUserDevice {
  readonly name = 'net';
  readonly numQueues = 2;
  readonly features = bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_NET_F_STATUS);
  readonly protocolFeatures = 0n;
  readonly metrics = new NetMetrics();
  /** Set by the host after the backend exists: where received frames go. */
  rxRing: Vring | null = null;
  private acked = 0n;
  private backlog: Buffer[] = [];
  private readonly config = Buffer.alloc(CONFIG_SIZE);
  private readonly hdr = Buffer.alloc(NET_HDR_SIZE);
  private warned = 0;
  private readonly say: (msg: string) => void;

  constructor(private readonly opts: NetDeviceOptions) {
    if (opts.mac.length !== 6) throw new Error('a MAC is 6 bytes');
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
  }

  reset(): void {
    this.acked = 0n;
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
    let chain: DescriptorChain | null;
    while ((chain = ring.pop()) !== null) {
      const r = parseTx(chain, hs, this.opts.maxFrame);
      ring.complete(chain, 0);
      if ('error' in r) {
        if (r.kind === 'runt') m.txRunt++;
        else if (r.kind === 'oversize') m.txOversize++;
        else m.txMalformed++;
        this.warn(`transmit refused: ${r.error}`);
        continue;
      }
      m.txFrames++;
      m.txBytes += r.frame.length;
      this.opts.onFrame(r.frame);
    }
  }

  /** A frame from the switch for this guest. Returns false when it was dropped. */
  deliver(frame: Buffer): boolean {
    const m = this.metrics;
    if (this.backlog.length === 0 && this.rxRing !== null && this.write(this.rxRing, frame)) return true;
    if (this.backlog.length >= RX_BACKLOG || this.rxRing === null || !this.rxRing.started) {
      m.rxDropped++;
      return false;
    }
    this.backlog.push(frame);
    m.rxQueued++;
    return true;
  }

  private drainBacklog(): void {
    const ring = this.rxRing;
    if (ring === null) return;
    let i = 0;
    while (i < this.backlog.length && this.write(ring, this.backlog[i]!)) i++;
    if (i > 0) this.backlog.splice(0, i);
  }

  /** Put one frame in the receive queue; false when the guest has not posted enough room. */
  private write(ring: Vring, frame: Buffer): boolean {
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
