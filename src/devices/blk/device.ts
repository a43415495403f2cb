// virtio-blk over vhost-user: feature bits, config space, and the request
// state machine (parse → I/O → status → used ring). Requests run
// concurrently and complete in whatever order their I/O finishes.
import type { BlockImage } from '../../storage/image.js';
import { bit, MAX_INDIRECT, PF, type DescriptorChain, type VhostUserDevice, type Vring } from '../../vhost/index.js';
import { IoEngine } from './io/engine.js';
import { BlkMetrics } from './metrics.js';
import { ID_BYTES, parseRequest, S_IOERR, S_OK, SECTOR, type BlkOp, type ParseLimits } from './request.js';

export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

/** struct virtio_blk_config is 60 bytes; reads past it return zeros. */
export const CONFIG_SIZE = 60;
/** Per request: 4 MiB worth of sectors for discard / write-zeroes (as QEMU's default-ish limits). */
const MAX_ZERO_SECTORS = 8192 * 1024 / SECTOR;

export interface BlkDeviceOptions {
  image: BlockImage;
  numQueues: number;
  /** Refuse writes even if the image is writable. */
  readOnly?: boolean;
  /** The disk's serial number (GET_ID), at most 20 bytes. */
  serial?: string;
  /**
   * Most data segments per request (seg_max). Default 1022: with indirect
   * descriptors a request (+ header + status) fills at most one 1024-entry
   * indirect table, the walker's limit; a guest's 1 MiB O_DIRECT request
   * (256 scattered pages) is then one request, not two (qemu-storage-daemon
   * says 126: three).
   */
  segMax?: number;
  log?: (msg: string) => void;
}

export class BlkDevice implements VhostUserDevice {
  readonly name = 'blk';
  readonly numQueues: number;
  readonly features: bigint;
  readonly protocolFeatures = bit(PF.CONFIG);
  readonly metrics = new BlkMetrics();
  readonly readOnly: boolean;
  readonly capacitySectors: number;
  private readonly config = Buffer.alloc(CONFIG_SIZE);
  private readonly io: IoEngine;
  private readonly id: Buffer;
  private readonly limits: ParseLimits;
  private readonly say: (msg: string) => void;
  private warned = 0;

  constructor(readonly opts: BlkDeviceOptions) {
    if (!Number.isInteger(opts.numQueues) || opts.numQueues < 1 || opts.numQueues > 64) throw new Error(`bad queue count ${opts.numQueues}`);
    this.numQueues = opts.numQueues;
    this.readOnly = (opts.readOnly ?? false) || opts.image.readOnly;
    this.io = new IoEngine(opts.image);
    this.capacitySectors = Math.floor(opts.image.size / SECTOR);
    this.say = opts.log ?? ((m) => process.stderr.write(`blk: ${m}\n`));
    this.id = Buffer.alloc(ID_BYTES);
    Buffer.from(opts.serial ?? '').copy(this.id, 0, 0, ID_BYTES);

    let f =
      bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_TOPOLOGY) | bit(VIRTIO_BLK_F_MQ);
    if (this.readOnly) f |= bit(VIRTIO_BLK_F_RO);
    else f |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
    this.features = f;

    this.limits = {
      capacitySectors: this.capacitySectors,
      readOnly: this.readOnly,
      maxDiscardSectors: MAX_ZERO_SECTORS,
      maxDiscardSeg: 1,
      maxWriteZeroesSectors: MAX_ZERO_SECTORS,
      maxWriteZeroesSeg: 1,
    };
    const c = this.config;
    c.writeBigUInt64LE(BigInt(this.capacitySectors), 0); // capacity
    c.writeUInt32LE(0, 8); // size_max (feature not offered)
    c.writeUInt32LE(opts.segMax ?? MAX_INDIRECT - 2, 12); // seg_max
    c.writeUInt32LE(SECTOR, 20); // blk_size
    c.writeUInt8(3, 24); // physical_block_exp: 4 KiB physical blocks
    c.writeUInt8(0, 25); // alignment_offset
    c.writeUInt16LE(8, 26); // min_io_size (in logical blocks)
    c.writeUInt32LE(0, 28); // opt_io_size
    c.writeUInt16LE(this.numQueues, 34); // num_queues
    c.writeUInt32LE(MAX_ZERO_SECTORS, 36); // max_discard_sectors
    c.writeUInt32LE(1, 40); // max_discard_seg
    c.writeUInt32LE(8, 44); // discard_sector_alignment
    c.writeUInt32LE(MAX_ZERO_SECTORS, 48); // max_write_zeroes_sectors
    c.writeUInt32LE(1, 52); // max_write_zeroes_seg
    c.writeUInt8(1, 56); // write_zeroes_may_unmap
  }

  getConfig(offset: number, size: number): Buffer {
    const out = Buffer.alloc(size);
    if (offset < CONFIG_SIZE) this.config.copy(out, 0, offset, Math.min(CONFIG_SIZE, offset + size));
    return out;
  }

  processQueue(ring: Vring): void {
    let chain: DescriptorChain | null;
    while ((chain = ring.pop()) !== null) this.start(ring, chain);
  }

  private warn(msg: string): void {
    // A hostile guest must not flood the log.
    if (this.warned < 100) this.say(msg);
    else if (this.warned === 100) this.say('further request warnings suppressed');
    this.warned++;
  }

  private start(ring: Vring, chain: DescriptorChain): void {
    const { op, status } = parseRequest(chain, this.limits);
    if (status === null) {
      // Nowhere to put a status: give the buffers back untouched.
      this.metrics.droppedRequests++;
      ring.complete(chain, 0);
      return;
    }
    if (op.kind === 'fail') {
      if (op.status === S_IOERR) this.metrics.invalidRequests++;
      else this.metrics.unsupportedRequests++;
      this.warn(`queue ${ring.index}: request refused: ${op.reason}`);
      status[0] = op.status;
      ring.complete(chain, chain.writableLen);
      return;
    }
    const m = this.metrics;
    m.inFlight++;
    if (m.inFlight > m.maxInFlight) m.maxInFlight = m.inFlight;
    this.execute(op).then(
      () => this.finish(ring, chain, status, S_OK),
      (e: unknown) => {
        m.ioErrors++;
        this.warn(`queue ${ring.index}: ${op.kind} failed: ${(e as Error).message}`);
        this.finish(ring, chain, status, S_IOERR);
      },
    );
  }

  private finish(ring: Vring, chain: DescriptorChain, status: Buffer, code: number): void {
    this.metrics.inFlight--;
    status[0] = code;
    ring.complete(chain, chain.writableLen);
  }

  private execute(op: Exclude<BlkOp, { kind: 'fail' }>): Promise<void> {
    const m = this.metrics;
    switch (op.kind) {
      case 'read':
        m.readRequests++;
        m.readBytes += op.bytes;
        m.dataSegments += op.data.length;
        return this.io.read(op.data, op.sector * SECTOR);
      case 'write':
        m.writeRequests++;
        m.writeBytes += op.bytes;
        m.dataSegments += op.data.length;
        return this.io.write(op.data, op.sector * SECTOR);
      case 'flush':
        m.flushRequests++;
        return this.io.flush();
      case 'get-id': {
        m.getIdRequests++;
        let o = 0;
        for (const s of op.data) {
          this.id.copy(s.buf, 0, o, o + s.buf.length);
          o += s.buf.length;
        }
        return Promise.resolve();
      }
      case 'discard':
        m.discardRequests++;
        return this.ranges(op.ranges, (r) => this.io.discard(r.sector * SECTOR, r.sectors * SECTOR));
      case 'write-zeroes':
        m.writeZeroesRequests++;
        return this.ranges(op.ranges, (r) => this.io.writeZeroes(r.sector * SECTOR, r.sectors * SECTOR, r.unmap));
    }
  }

  private async ranges<R>(ranges: R[], fn: (r: R) => Promise<void>): Promise<void> {
    for (const r of ranges) await fn(r);
  }
}
