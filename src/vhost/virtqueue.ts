// Split virtqueues (virtio 1.1 §2.6): the descriptor table, the available
// ring the driver fills and the used ring the device fills, all in guest
// memory. This file walks them defensively: the guest is not trusted.
//
//   - a chain that visits more descriptors than its table holds (a loop) is
//     an error; so is one longer than queue size + 1024 in all
//   - descriptor indices ≥ queue size, addresses outside guest memory,
//     device-readable after device-writable descriptors, nested or chained
//     indirect tables, indirect tables whose length is not a multiple of 16
//     or longer than 1024 entries: all errors
//   - an available index that moved by more than the queue size stops the
//     queue (the ring is corrupt) instead of spinning
import { GuestMemory, GuestMemoryError, type Segment } from './memory.js';

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
export const DESC_SIZE = 16;
export const MAX_QUEUE_SIZE = 32768;

export class VirtqueueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VirtqueueError';
  }
}

export interface DescriptorChain {
  /** Head descriptor index: what goes back in the used ring. */
  head: number;
  /** Device-readable buffers (driver → device), in order. */
  readable: Segment[];
  /** Device-writable buffers (device → driver), in order. */
  writable: Segment[];
  readableLen: number;
  writableLen: number;
  /** Set when the chain is malformed; the segments hold what was walked before the fault. */
  error?: string;
}

export function ringSizes(size: number): { desc: number; avail: number; used: number } {
  return { desc: DESC_SIZE * size, avail: 6 + 2 * size, used: 6 + 8 * size };
}

export function validQueueSize(n: number): boolean {
  return Number.isInteger(n) && n > 0 && n <= MAX_QUEUE_SIZE && (n & (n - 1)) === 0;
}

/** Largest indirect table accepted (QEMU's VIRTQUEUE_MAX_SIZE). */
export const MAX_INDIRECT = 1024;

export interface WalkLimits {
  /** Most descriptors in one chain, direct + indirect (default: queue size + MAX_INDIRECT). */
  maxDescriptors?: number;
  /** Most entries in an indirect table (default MAX_INDIRECT). */
  maxIndirect?: number;
  /** Most bytes in one chain (default 256 MiB). */
  maxBytes?: number;
}

/**
 * A descriptor table as 32-bit words (little-endian hosts, like every host
 * QEMU's vhost-user runs on): reading a field is then an array load, not a
 * Buffer method call per field — a 1 MiB disk request has 258 descriptors.
 * A table that is not 4-byte aligned in our mapping is copied first.
 */
export function descWords(table: Buffer): Uint32Array {
  if (table.byteOffset % 4 === 0) return new Uint32Array(table.buffer, table.byteOffset, table.length >>> 2);
  const copy = new Uint32Array(table.length >>> 2);
  new Uint8Array(copy.buffer).set(table.subarray(0, copy.length * 4));
  return copy;
}

/**
 * Walk the chain starting at `head`. Never throws for guest faults: a
 * malformed chain comes back with `error` set.
 */
export function walkChain(
  mem: GuestMemory,
  table: Buffer,
  size: number,
  head: number,
  limits: WalkLimits = {},
  tableWords?: Uint32Array,
): DescriptorChain {
  const chain: DescriptorChain = { head, readable: [], writable: [], readableLen: 0, writableLen: 0 };
  const maxIndirect = limits.maxIndirect ?? MAX_INDIRECT;
  const maxDesc = limits.maxDescriptors ?? size + maxIndirect;
  const maxBytes = limits.maxBytes ?? 256 * 1024 * 1024;
  let count = 0;
  // Loops: a chain cannot visit more descriptors than its table holds.
  let inTable = 0;
  let bytes = 0;
  let seenWritable = false;
  try {
    if (head >= size) throw new VirtqueueError(`head index ${head} ≥ queue size ${size}`);
    let desc = tableWords ?? descWords(table);
    let tableSize = size;
    let i = head;
    let indirect = false;
    for (;;) {
      if (++inTable > tableSize) throw new VirtqueueError(`descriptor chain longer than its table of ${tableSize} (loop?)`);
      if (++count > maxDesc) throw new VirtqueueError(`descriptor chain longer than ${maxDesc}`);
      const w = i * 4;
      const hi = desc[w + 1];
      // An address ≥ 2^53 is never valid (-1: refused below).
      const addr = hi >= 0x200000 ? -1 : hi * 0x100000000 + desc[w];
      const len = desc[w + 2];
      const flagsNext = desc[w + 3];
      const flags = flagsNext & 0xffff;
      const next = flagsNext >>> 16;
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (indirect) throw new VirtqueueError('nested indirect descriptor table');
        if (flags & VIRTQ_DESC_F_NEXT) throw new VirtqueueError('indirect descriptor with NEXT set');
        if (len === 0 || len % DESC_SIZE !== 0) throw new VirtqueueError(`indirect table length ${len} is not a positive multiple of 16`);
        const n = len / DESC_SIZE;
        if (n > maxIndirect) throw new VirtqueueError(`indirect table of ${n} descriptors > ${maxIndirect}`);
        if (addr < 0) throw new VirtqueueError('indirect table address beyond 2^53');
        desc = descWords(mem.slice(addr, len));
        tableSize = n;
        indirect = true;
        i = 0;
        inTable = 0;
        count--; // the indirect descriptor itself carries no data
        continue;
      }
      if (addr < 0) throw new VirtqueueError('buffer address beyond 2^53');
      bytes += len;
      if (bytes > maxBytes) throw new VirtqueueError(`descriptor chain carries more than ${maxBytes} bytes`);
      if (flags & VIRTQ_DESC_F_WRITE) {
        seenWritable = true;
        if (len > 0) mem.segments(addr, len, chain.writable);
        chain.writableLen += len;
      } else {
        if (seenWritable) throw new VirtqueueError('device-readable descriptor after a device-writable one');
        if (len > 0) mem.segments(addr, len, chain.readable);
        chain.readableLen += len;
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      if (next >= tableSize) throw new VirtqueueError(`next index ${next} ≥ table size ${tableSize}`);
      i = next;
    }
  } catch (e) {
    if (e instanceof VirtqueueError || e instanceof GuestMemoryError) chain.error = e.message;
    else throw e;
  }
  return chain;
}

export interface SplitQueueAddrs {
  /** Host views of the three parts (already bounds-checked by the caller). */
  desc: Buffer;
  avail: Buffer;
  used: Buffer;
  /** Guest-physical address of the used ring (for dirty logging). */
  usedGpa?: number;
}

/**
 * One split virtqueue's rings. Index arithmetic is mod 2^16 like the
 * driver's. Reads of the driver's avail->idx and writes of used->idx go
 * through Atomics (sequentially consistent: they double as the memory
 * barriers the virtio spec asks for).
 */
export class SplitQueue {
  readonly size: number;
  readonly desc: Buffer;
  private readonly descWords: Uint32Array;
  private readonly avail: Buffer;
  private readonly used: Buffer;
  private readonly avail16: Uint16Array;
  private readonly used16: Uint16Array;
  /** Next available-ring slot we will read. */
  lastAvail = 0;
  /** Our copy of used->idx. */
  usedIdx: number;
  /** used->idx when we last notified the driver. */
  private signalledUsed: number;
  private signalledValid = false;
  eventIdx = false;
  limits: WalkLimits;

  constructor(
    readonly mem: GuestMemory,
    size: number,
    addrs: SplitQueueAddrs,
    opts: { eventIdx?: boolean; lastAvail?: number; limits?: WalkLimits } = {},
  ) {
    if (!validQueueSize(size)) throw new VirtqueueError(`bad queue size ${size}`);
    const s = ringSizes(size);
    if (addrs.desc.length < s.desc || addrs.avail.length < s.avail || addrs.used.length < s.used) {
      throw new VirtqueueError('ring views are smaller than the queue size needs');
    }
    // The spec asks for 16, 2 and 4; we need 4 for the table (read as words in place).
    if (addrs.desc.byteOffset % 4 !== 0 || addrs.avail.byteOffset % 2 !== 0 || addrs.used.byteOffset % 4 !== 0) {
      throw new VirtqueueError('misaligned descriptor table, available or used ring');
    }
    this.size = size;
    this.desc = addrs.desc;
    this.descWords = descWords(addrs.desc);
    this.avail = addrs.avail;
    this.used = addrs.used;
    this.avail16 = new Uint16Array(addrs.avail.buffer, addrs.avail.byteOffset, 3 + size);
    this.used16 = new Uint16Array(addrs.used.buffer, addrs.used.byteOffset, 3 + 4 * size);
    this.eventIdx = opts.eventIdx ?? false;
    this.lastAvail = (opts.lastAvail ?? 0) & 0xffff;
    this.limits = opts.limits ?? {};
    this.usedIdx = Atomics.load(this.used16, 1);
    this.signalledUsed = this.usedIdx;
  }

  /** The driver's avail->idx. */
  availIdx(): number {
    return Atomics.load(this.avail16, 1);
  }

  /** The guest's used->idx as stored in guest memory. */
  guestUsedIdx(): number {
    return Atomics.load(this.used16, 1);
  }

  /** Entries the driver made available that we have not taken yet. */
  pending(): number {
    const n = (this.availIdx() - this.lastAvail) & 0xffff;
    if (n > this.size) {
      throw new VirtqueueError(`available index moved by ${n} > queue size ${this.size}: ring corrupt`);
    }
    return n;
  }

  /** Take the next available head index, or null. Throws VirtqueueError if the ring is corrupt. */
  popHead(): number | null {
    if (this.pending() === 0) return null;
    const head = Atomics.load(this.avail16, 2 + (this.lastAvail % this.size));
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return head;
  }

  /** Walk the chain at `head` (see walkChain). */
  chain(head: number): DescriptorChain {
    return walkChain(this.mem, this.desc, this.size, head, this.limits, this.descWords);
  }

  /** Put one element in the used ring and publish it (used->idx += 1). */
  pushUsed(head: number, len: number): number {
    const slot = this.usedIdx % this.size;
    const o = 4 + slot * 8;
    this.used.writeUInt32LE(head >>> 0, o);
    this.used.writeUInt32LE(len >>> 0, o + 4);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    Atomics.store(this.used16, 1, this.usedIdx);
    return o;
  }

  /** Byte offsets in the used ring of the idx field and of the avail_event field. */
  get usedIdxOffset(): number {
    return 2;
  }
  get availEventOffset(): number {
    return 4 + 8 * this.size;
  }

  /**
   * Ask for a kick when more buffers arrive (EVENT_IDX: publish avail_event).
   * Returns true when buffers arrived meanwhile (the caller should keep going).
   */
  armNotification(): boolean {
    if (this.eventIdx) {
      Atomics.store(this.used16, 2 + 4 * this.size, this.lastAvail);
    }
    return this.availIdx() !== this.lastAvail;
  }

  /** Whether the driver wants an interrupt for what we used since the last one. */
  needsNotify(): boolean {
    const newIdx = this.usedIdx;
    if (!this.eventIdx) {
      const flags = Atomics.load(this.avail16, 0);
      return (flags & VRING_AVAIL_F_NO_INTERRUPT) === 0;
    }
    const old = this.signalledUsed;
    const valid = this.signalledValid;
    this.signalledUsed = newIdx;
    this.signalledValid = true;
    if (!valid) return true;
    const usedEvent = Atomics.load(this.avail16, 2 + this.size);
    // vring_need_event: did new_idx pass used_event since old?
    return ((newIdx - usedEvent - 1) & 0xffff) < ((newIdx - old) & 0xffff);
  }
}
