// The vhost-user back-end: a unix socket server that one front-end (QEMU)
// connects to. Reads every message with recvmsg (fds ride along), keeps the
// device's state (features, memory table, rings, inflight region, dirty
// log), and replies. After the front-end disconnects the back-end cleans up
// and waits for the next connection (QEMU's reconnect).
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import {
  acceptUnix, closeQuiet, listenUnix, mapShared, memfdCreate, recvMsg, sendMsg, setSocketTimeouts,
  watchFd, type FdWatch, type Mapping,
} from '../sys/index.js';
import type { VhostUserDevice } from './device.js';
import { DirtyLog, GuestMemory, GuestMemoryError, readAddr, type Region } from './memory.js';
import { InflightQueue, inflightQueueBytes } from './inflight.js';
import {
  bit, FLAG_NEED_REPLY, FLAG_REPLY, hasBit, HEADER_SIZE, MAX_MEM_SLOTS, MAX_PAYLOAD, PF, Req, REQ_NAMES,
  VERSION, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC, VRING_IDX_MASK, VRING_NOFD_MASK,
} from './protocol.js';
import { validQueueSize } from './virtqueue.js';
import { Vring, type VringHost } from './vring.js';

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export interface BackendOptions {
  socketPath: string;
  /** Offer CONFIGURE_MEM_SLOTS (ADD/REM_MEM_REG). Default true. */
  memSlots?: boolean;
  /** Blocking socket reads give up after this long (a stalled front-end). Default 10 s. */
  socketTimeoutMs?: number;
  log?: (msg: string) => void;
}

interface Reply {
  payload: Buffer;
  fds?: number[];
}

/** XVM_VHOST_TRACE=1 logs every message (debugging). */
const TRACE = process.env.XVM_VHOST_TRACE === '1';

const GENERIC_FEATURES =
  bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VHOST_F_LOG_ALL) | bit(VHOST_USER_F_PROTOCOL_FEATURES);

export class VhostUserBackend extends EventEmitter implements VringHost {
  readonly vrings: Vring[];
  memory: GuestMemory | null = null;
  log: DirtyLog | null = null;
  private logFd = -1;
  private listenFd = -1;
  private listenWatch: FdWatch | null = null;
  private connFd = -1;
  private connWatch: FdWatch | null = null;
  private busy = false;
  private acked = 0n;
  private ackedProtocol = 0n;
  private inflightMaps: Mapping[] = [];
  private cleaning: Promise<void> | null = null;
  /** freeze() holds every ring until thaw(). */
  private frozen = false;
  readonly offeredFeatures: bigint;
  readonly offeredProtocol: bigint;
  private readonly say: (msg: string) => void;
  /** Messages handled, by name (for tests and metrics). */
  readonly messageCounts = new Map<string, number>();

  constructor(
    readonly device: VhostUserDevice,
    private readonly opts: BackendOptions,
  ) {
    super();
    this.vrings = Array.from({ length: device.numQueues }, (_, i) => new Vring(i, this));
    this.offeredFeatures = device.features | GENERIC_FEATURES;
    let pf = bit(PF.MQ) | bit(PF.LOG_SHMFD) | bit(PF.REPLY_ACK) | bit(PF.INFLIGHT_SHMFD) | bit(PF.RESET_DEVICE);
    if (opts.memSlots !== false) pf |= bit(PF.CONFIGURE_MEM_SLOTS);
    this.offeredProtocol = pf | device.protocolFeatures;
    this.say = opts.log ?? ((m) => process.stderr.write(`vhost-user-${device.name}: ${m}\n`));
  }

  // ---- VringHost ----
  get logging(): boolean {
    return hasBit(this.acked, VHOST_F_LOG_ALL) && this.log !== null;
  }
  get eventIdx(): boolean {
    return hasBit(this.acked, VIRTIO_RING_F_EVENT_IDX);
  }
  process(ring: Vring): void {
    this.device.processQueue(ring);
  }
  warn(msg: string): void {
    this.say(msg);
  }
  onIdle(): void {
    /* drains are awaited per ring */
  }

  get connected(): boolean {
    return this.connFd >= 0;
  }
  get features(): bigint {
    return this.acked;
  }

  /** Start listening on the socket path. */
  listen(): void {
    this.listenFd = listenUnix(this.opts.socketPath);
    this.listenWatch = watchFd(this.listenFd, () => this.onAccept());
  }

  /** Stop listening, drop the connection, unmap everything. */
  /**
   * Stop taking requests from every ring and wait until none is in flight
   * (e.g. to flush and switch the device's image underneath a running or
   * paused guest). Kicks that arrive meanwhile are served by thaw().
   */
  async freeze(): Promise<void> {
    this.frozen = true;
    for (const v of this.vrings) v.paused = true;
    await Promise.all(this.vrings.map((v) => v.drain()));
  }

  /** Take requests again after freeze(), starting with what queued up meanwhile. */
  thaw(): void {
    if (!this.frozen) return;
    this.frozen = false;
    for (const v of this.vrings) v.paused = false;
    for (const v of this.vrings) v.run();
  }

  get isFrozen(): boolean {
    return this.frozen;
  }

  async close(): Promise<void> {
    this.listenWatch?.close();
    this.listenWatch = null;
    closeQuiet(this.listenFd);
    this.listenFd = -1;
    try {
      if (fs.lstatSync(this.opts.socketPath).isSocket()) fs.unlinkSync(this.opts.socketPath);
    } catch {
      /* gone */
    }
    if (this.connFd >= 0) this.disconnect('backend closing');
    await this.cleaning;
  }

  private onAccept(): void {
    const fd = acceptUnix(this.listenFd);
    if (fd < 0) return;
    if (this.connFd >= 0 || this.cleaning !== null) {
      this.say('refusing a second front-end connection');
      closeQuiet(fd);
      return;
    }
    this.connFd = fd;
    setSocketTimeouts(fd, this.opts.socketTimeoutMs ?? 10_000);
    this.connWatch = watchFd(fd, () => this.onReadable());
    this.emit('connect');
  }

  private onReadable(): void {
    if (this.busy || this.connFd < 0) return;
    this.busy = true;
    this.connWatch?.pause();
    this.readOne()
      .catch((e: unknown) => this.disconnect(e instanceof Error ? e.message : String(e)))
      .finally(() => {
        this.busy = false;
        if (this.connFd >= 0) this.connWatch?.resume();
      });
  }

  private async readOne(): Promise<void> {
    const fd = this.connFd;
    const hdr = recvMsg(fd, HEADER_SIZE, { waitAll: true })!;
    if (hdr.data.length === 0) {
      for (const f of hdr.fds) closeQuiet(f);
      this.disconnect(null);
      return;
    }
    const fds = hdr.fds;
    try {
      if (hdr.data.length < HEADER_SIZE) throw new ProtocolError('short message header');
      const request = hdr.data.readUInt32LE(0);
      const flags = hdr.data.readUInt32LE(4);
      const size = hdr.data.readUInt32LE(8);
      if ((flags & 3) !== VERSION) throw new ProtocolError(`unsupported protocol version ${flags & 3}`);
      if (size > MAX_PAYLOAD) throw new ProtocolError(`payload of ${size} bytes is too large`);
      let payload: Buffer = Buffer.alloc(0);
      if (size > 0) {
        const p = recvMsg(fd, size, { waitAll: true })!;
        fds.push(...p.fds);
        if (p.data.length < size) throw new ProtocolError('connection closed inside a message');
        payload = p.data;
      }
      const name = REQ_NAMES[request] ?? `UNKNOWN_${request}`;
      this.messageCounts.set(name, (this.messageCounts.get(name) ?? 0) + 1);
      if (TRACE) this.say(`<- ${name} ${payload.subarray(0, 24).toString('hex')}${fds.length ? ` fds=${fds.length}` : ''}`);
      await this.dispatch(request, flags, payload, fds);
    } finally {
      // Every fd a handler kept was removed from the array; close the rest.
      for (const f of fds) closeQuiet(f);
    }
  }

  private send(request: number, payload: Buffer, fds: number[] = []): void {
    const msg = Buffer.alloc(HEADER_SIZE + payload.length);
    msg.writeUInt32LE(request, 0);
    msg.writeUInt32LE(VERSION | FLAG_REPLY, 4);
    msg.writeUInt32LE(payload.length, 8);
    payload.copy(msg, HEADER_SIZE);
    sendMsg(this.connFd, msg, fds);
  }

  private async dispatch(request: number, flags: number, payload: Buffer, fds: number[]): Promise<void> {
    // A front-end only sets NEED_REPLY after negotiating REPLY_ACK, but QEMU
    // 7.2 reconnecting while the guest is paused skips the negotiation and
    // reuses what it agreed with our predecessor: ack whenever asked.
    const wantsAck = (flags & FLAG_NEED_REPLY) !== 0 && (hasBit(this.ackedProtocol, PF.REPLY_ACK) || hasBit(this.offeredProtocol, PF.REPLY_ACK));
    let reply: Reply | null = null;
    let ok = true;
    try {
      reply = await this.handle(request, payload, fds);
    } catch (e) {
      ok = false;
      const name = REQ_NAMES[request] ?? `request ${request}`;
      this.say(`${name} failed: ${(e as Error).message}`);
      if (!wantsAck && repliesTo(request)) throw e; // QEMU waits for a reply we cannot give: drop the connection
    }
    if (this.connFd < 0) return;
    if (reply !== null) {
      this.send(request, reply.payload, reply.fds);
      for (const f of reply.fds ?? []) closeQuiet(f);
    } else if (wantsAck) {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(ok ? 0n : 1n);
      this.send(request, b);
    }
  }

  private ring(indexField: number): Vring {
    const idx = indexField & VRING_IDX_MASK;
    const v = this.vrings[idx];
    if (v === undefined) throw new ProtocolError(`queue index ${idx} ≥ ${this.vrings.length}`);
    return v;
  }

  private takeFd(fds: number[]): number {
    const f = fds.shift();
    if (f === undefined) throw new ProtocolError('message is missing its file descriptor');
    return f;
  }

  private u64(payload: Buffer): bigint {
    if (payload.length < 8) throw new ProtocolError('payload shorter than u64');
    return payload.readBigUInt64LE(0);
  }

  private need(payload: Buffer, n: number): void {
    if (payload.length < n) throw new ProtocolError(`payload of ${payload.length} bytes, expected ${n}`);
  }

  private async handle(request: number, p: Buffer, fds: number[]): Promise<Reply | null> {
    switch (request) {
      case Req.GET_FEATURES:
        return { payload: u64Buf(this.offeredFeatures) };
      case Req.SET_FEATURES: {
        const f = this.u64(p);
        if ((f & ~this.offeredFeatures) !== 0n) throw new ProtocolError(`front-end set features we did not offer: 0x${(f & ~this.offeredFeatures).toString(16)}`);
        this.acked = f;
        for (const v of this.vrings) if (v.queue !== null) v.queue.eventIdx = this.eventIdx;
        this.device.ackFeatures?.(f);
        return null;
      }
      case Req.GET_PROTOCOL_FEATURES:
        return { payload: u64Buf(this.offeredProtocol) };
      case Req.SET_PROTOCOL_FEATURES: {
        const f = this.u64(p);
        this.ackedProtocol = f & this.offeredProtocol;
        return null;
      }
      case Req.SET_OWNER:
        return null;
      case Req.RESET_OWNER:
      case Req.RESET_DEVICE:
        await this.resetState();
        return null;
      case Req.GET_QUEUE_NUM:
        return { payload: u64Buf(BigInt(this.vrings.length)) };
      case Req.GET_MAX_MEM_SLOTS:
        return { payload: u64Buf(BigInt(MAX_MEM_SLOTS)) };
      case Req.SET_MEM_TABLE:
        await this.setMemTable(p, fds);
        return null;
      case Req.ADD_MEM_REG: {
        this.need(p, 40);
        const fd = this.takeFd(fds);
        try {
          const r = GuestMemory.mapRegion({ gpa: readU64(p, 8), size: readU64(p, 16), uva: readU64(p, 24), mmapOffset: readU64(p, 32), fd });
          if (this.memory === null) this.memory = new GuestMemory();
          if (this.memory.regionList.length >= MAX_MEM_SLOTS) {
            r.unmap?.();
            throw new ProtocolError('too many memory regions');
          }
          try {
            this.memory.add(r);
          } catch (e) {
            r.unmap?.();
            throw e;
          }
          for (const v of this.vrings) if (v.queue !== null) v.refresh();
          this.startWaitingRings();
        } finally {
          closeQuiet(fd);
        }
        return null;
      }
      case Req.REM_MEM_REG: {
        this.need(p, 40);
        const gpa = readU64(p, 8);
        const size = readU64(p, 16);
        const mem = this.memory;
        if (mem === null) throw new ProtocolError('REM_MEM_REG without memory');
        const r = mem.regionList.find((x) => x.gpa === gpa && x.size === size);
        if (r === undefined) throw new ProtocolError(`no region at 0x${gpa.toString(16)} of 0x${size.toString(16)} bytes`);
        await this.withRingsPaused(() => {
          mem.remove(gpa, size);
        });
        return null;
      }
      case Req.SET_LOG_BASE: {
        this.need(p, 16);
        const size = readU64(p, 0);
        const off = readU64(p, 8);
        const fd = this.takeFd(fds);
        try {
          const m = mapShared(fd, size, off);
          this.log?.close();
          this.log = new DirtyLog(m.buf, () => m.unmap());
          this.say(`dirty log attached (${size} bytes, covers ${size * 8 * 4} KiB of guest memory)`);
        } finally {
          closeQuiet(fd);
        }
        return { payload: u64Buf(0n) };
      }
      case Req.SET_LOG_FD:
        closeQuiet(this.logFd);
        this.logFd = this.takeFd(fds);
        return null;
      case Req.SET_VRING_NUM: {
        this.need(p, 8);
        const v = this.ring(p.readUInt32LE(0));
        const num = p.readUInt32LE(4);
        if (!validQueueSize(num)) throw new ProtocolError(`bad queue size ${num}`);
        v.num = num;
        return null;
      }
      case Req.SET_VRING_ADDR: {
        this.need(p, 40);
        const v = this.ring(p.readUInt32LE(0));
        v.addrs = { flags: p.readUInt32LE(4), desc: readU64(p, 8), used: readU64(p, 16), avail: readU64(p, 24), log: readU64(p, 32) };
        if (v.queue !== null) v.refresh();
        return null;
      }
      case Req.SET_VRING_BASE: {
        this.need(p, 8);
        const v = this.ring(p.readUInt32LE(0));
        v.base = p.readUInt32LE(4) & 0xffff;
        if (v.queue !== null && !v.started) v.queue.lastAvail = v.base;
        return null;
      }
      case Req.GET_VRING_BASE: {
        this.need(p, 8);
        const idx = p.readUInt32LE(0);
        const v = this.ring(idx);
        v.stop(false);
        await v.drain();
        v.flush();
        const out = Buffer.alloc(8);
        out.writeUInt32LE(idx, 0);
        out.writeUInt32LE(v.base, 4);
        return { payload: out };
      }
      case Req.SET_VRING_KICK: {
        const u = this.u64(p);
        const v = this.ring(Number(u & 0xffn));
        const fd = (u & BigInt(VRING_NOFD_MASK)) !== 0n ? -1 : this.takeFd(fds);
        if (!hasBit(this.acked, VHOST_USER_F_PROTOCOL_FEATURES)) v.enabled = true;
        if (v.inflight !== null && v.inflight.size !== v.num) {
          this.say(`queue ${v.index}: inflight region is for ${v.inflight.size} entries, ring has ${v.num}: not tracking`);
          v.inflight = null;
        }
        try {
          v.start(fd);
        } catch (e) {
          if (e instanceof GuestMemoryError) throw new ProtocolError(`queue ${v.index}: ${e.message}`);
          throw e;
        }
        return null;
      }
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR: {
        const u = this.u64(p);
        const v = this.ring(Number(u & 0xffn));
        const fd = (u & BigInt(VRING_NOFD_MASK)) !== 0n ? -1 : this.takeFd(fds);
        if (request === Req.SET_VRING_CALL) {
          closeQuiet(v.callFd);
          v.callFd = fd;
        } else {
          closeQuiet(v.errFd);
          v.errFd = fd;
        }
        return null;
      }
      case Req.SET_VRING_ENABLE: {
        this.need(p, 8);
        const v = this.ring(p.readUInt32LE(0));
        v.enabled = p.readUInt32LE(4) === 1;
        if (v.enabled) v.run();
        return null;
      }
      case Req.GET_CONFIG: {
        this.need(p, 12);
        const off = p.readUInt32LE(0);
        const size = p.readUInt32LE(4);
        if (off + size > 256) throw new ProtocolError(`config access ${off}+${size} beyond 256 bytes`);
        const cfg = this.device.getConfig(off, size);
        const out = Buffer.alloc(12 + size);
        p.copy(out, 0, 0, 12);
        cfg.copy(out, 12, 0, Math.min(size, cfg.length));
        return { payload: out };
      }
      case Req.SET_CONFIG: {
        this.need(p, 12);
        const off = p.readUInt32LE(0);
        const size = p.readUInt32LE(4);
        this.need(p, 12 + size);
        if (off + size > 256) throw new ProtocolError(`config access ${off}+${size} beyond 256 bytes`);
        if (!this.device.setConfig?.(off, p.subarray(12, 12 + size))) throw new ProtocolError('config space is read-only');
        return null;
      }
      case Req.GET_INFLIGHT_FD: {
        this.need(p, 20);
        const numQueues = p.readUInt16LE(16);
        const queueSize = p.readUInt16LE(18);
        if (numQueues === 0 || numQueues > 256 || !validQueueSize(queueSize)) throw new ProtocolError(`bad inflight geometry ${numQueues}×${queueSize}`);
        const per = inflightQueueBytes(queueSize);
        const size = per * numQueues;
        const fd = memfdCreate('xvm-vhost-inflight', size);
        try {
          const m = mapShared(fd, size, 0);
          this.attachInflight(m, numQueues, queueSize);
        } catch (e) {
          closeQuiet(fd);
          throw e;
        }
        const out = Buffer.alloc(24);
        out.writeBigUInt64LE(BigInt(size), 0);
        out.writeBigUInt64LE(0n, 8);
        out.writeUInt16LE(numQueues, 16);
        out.writeUInt16LE(queueSize, 18);
        return { payload: out, fds: [fd] };
      }
      case Req.SET_INFLIGHT_FD: {
        this.need(p, 20);
        const size = readU64(p, 0);
        const off = readU64(p, 8);
        const numQueues = p.readUInt16LE(16);
        const queueSize = p.readUInt16LE(18);
        const fd = this.takeFd(fds);
        try {
          if (numQueues === 0 || !validQueueSize(queueSize)) throw new ProtocolError(`bad inflight geometry ${numQueues}×${queueSize}`);
          if (size < inflightQueueBytes(queueSize) * numQueues) throw new ProtocolError(`inflight area of ${size} bytes is too small`);
          const m = mapShared(fd, size, off);
          this.attachInflight(m, numQueues, queueSize);
        } finally {
          closeQuiet(fd);
        }
        return null;
      }
      case Req.SEND_RARP: {
        // QEMU sends this after an incoming migration, once per announce
        // round (vhost_user_migration_done): a u64 whose first 6 bytes are
        // the guest's MAC. Only devices that offer PF.RARP take it.
        if (this.device.sendRarp === undefined || !hasBit(this.offeredProtocol, PF.RARP)) throw new ProtocolError('unsupported request SEND_RARP');
        if (p.length !== 8) throw new ProtocolError(`SEND_RARP payload of ${p.length} bytes, expected 8`);
        this.device.sendRarp(Buffer.from(p.subarray(0, 6)));
        return null;
      }
      case Req.SET_SLAVE_REQ_FD:
      case Req.SET_VRING_ENDIAN:
      case Req.IOTLB_MSG:
      case Req.NET_SET_MTU:
      case Req.SET_STATUS:
      case Req.GET_STATUS:
      default:
        throw new ProtocolError(`unsupported request ${REQ_NAMES[request] ?? request}`);
    }
  }

  private attachInflight(m: Mapping, numQueues: number, queueSize: number): void {
    if (this.vrings.some((v) => v.started)) {
      m.unmap();
      throw new ProtocolError('inflight area changed while rings run');
    }
    for (const old of this.inflightMaps) old.unmap();
    this.inflightMaps = [m];
    const per = inflightQueueBytes(queueSize);
    this.vrings.forEach((v, i) => {
      v.inflight = i < numQueues ? new InflightQueue(m.buf.subarray(i * per, (i + 1) * per), queueSize) : null;
    });
  }

  private async withRingsPaused(fn: () => void): Promise<void> {
    for (const v of this.vrings) v.paused = true;
    await Promise.all(this.vrings.map((v) => v.drain()));
    try {
      fn();
    } finally {
      for (const v of this.vrings) {
        v.paused = this.frozen;
        try {
          if (v.queue !== null) v.refresh();
        } catch (e) {
          this.say(`queue ${v.index}: ring no longer in guest memory: ${(e as Error).message}`);
          v.broken = true;
        }
      }
      for (const v of this.vrings) v.run();
    }
  }

  private async setMemTable(p: Buffer, fds: number[]): Promise<void> {
    this.need(p, 8);
    const n = p.readUInt32LE(0);
    if (n === 0 || n > 8) throw new ProtocolError(`bad region count ${n}`);
    this.need(p, 8 + 32 * n);
    if (fds.length < n) throw new ProtocolError(`${n} regions but ${fds.length} fds`);
    const regions: Region[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const o = 8 + 32 * i;
        regions.push(GuestMemory.mapRegion({ gpa: readU64(p, o), size: readU64(p, o + 8), uva: readU64(p, o + 16), mmapOffset: readU64(p, o + 24), fd: fds[i] }));
      }
    } catch (e) {
      for (const r of regions) r.unmap?.();
      throw e;
    }
    let mem: GuestMemory;
    try {
      mem = new GuestMemory(regions);
    } catch (e) {
      for (const r of regions) r.unmap?.();
      throw e;
    }
    await this.withRingsPaused(() => {
      const old = this.memory;
      this.memory = mem;
      old?.close();
    });
    this.startWaitingRings();
  }

  /** Rings whose SET_VRING_KICK came before the memory table start now. */
  private startWaitingRings(): void {
    for (const v of this.vrings) {
      if (!v.awaitingMemory) continue;
      try {
        v.memoryChanged();
      } catch (e) {
        this.say(`queue ${v.index}: cannot start: ${(e as Error).message}`);
        v.awaitingMemory = false;
        v.broken = true;
      }
    }
  }

  /** Stop every ring, wait for in-flight I/O, forget the front-end's state. */
  private async resetState(): Promise<void> {
    for (const v of this.vrings) v.stop(true);
    await Promise.all(this.vrings.map((v) => v.drain()));
    for (const v of this.vrings) v.reset();
    this.memory?.close();
    this.memory = null;
    this.log?.close();
    this.log = null;
    closeQuiet(this.logFd);
    this.logFd = -1;
    for (const m of this.inflightMaps) m.unmap();
    this.inflightMaps = [];
    this.acked = 0n;
    this.device.reset?.();
  }

  private disconnect(reason: string | null): void {
    if (this.connFd < 0) return;
    if (reason !== null) this.say(`dropping front-end connection: ${reason}`);
    this.connWatch?.close();
    this.connWatch = null;
    closeQuiet(this.connFd);
    this.connFd = -1;
    this.ackedProtocol = 0n;
    this.cleaning = this.resetState()
      .catch((e: unknown) => this.say(`cleanup: ${(e as Error).message}`))
      .finally(() => {
        this.cleaning = null;
        this.emit('disconnect');
      });
  }
}

/** Requests whose reply QEMU always waits for. */
function repliesTo(request: number): boolean {
  return (
    request === Req.GET_FEATURES ||
    request === Req.GET_PROTOCOL_FEATURES ||
    request === Req.GET_VRING_BASE ||
    request === Req.SET_LOG_BASE ||
    request === Req.GET_INFLIGHT_FD ||
    request === Req.GET_CONFIG ||
    request === Req.GET_QUEUE_NUM ||
    request === Req.GET_MAX_MEM_SLOTS
  );
}

function u64Buf(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

function readU64(p: Buffer, off: number): number {
  const v = readAddr(p, off);
  if (v < 0) throw new ProtocolError(`64-bit field at offset ${off} is beyond 2^53`);
  return v;
}
