// Guest memory as the back-end sees it: the regions QEMU shares (memfd +
// offset), mapped into this process, with bounds-checked translation of
// guest-physical (GPA) and front-end virtual (UVA) addresses to Buffers.
//
// Nothing outside a region is ever reachable: every translation checks
// [addr, addr+len) against the region table and throws GuestMemoryError.
import { addressOf, mapShared, type Mapping } from '../sys/index.js';

export class GuestMemoryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GuestMemoryError';
  }
}

export interface Region {
  /** Guest-physical start. */
  readonly gpa: number;
  readonly size: number;
  /** Start in the front-end's (QEMU's) address space; ring addresses use it. */
  readonly uva: number;
  /** The region's bytes, viewed in place. */
  readonly buf: Buffer;
  /** Offset of the region in the fd QEMU sent (kept for REM_MEM_REG matching). */
  readonly mmapOffset: number;
  unmap?: () => void;
}

/** A region with the host address of its first byte (set when added). */
interface MappedRegion extends Region {
  readonly addr: number;
}

/**
 * A piece of a guest buffer: where it is in the guest, its length, and
 * where it is mapped in this process (`addr`, for iovecs: src/sys/uio.ts).
 * The Buffer view is made only when asked for: a 1 MiB disk request is 256
 * page segments whose data the kernel moves by address, and a view per
 * page was most of the cost of walking its descriptors.
 */
export class Segment {
  private view: Buffer | null = null;
  constructor(
    readonly gpa: number,
    readonly byteLength: number,
    /** Host virtual address of the first byte (inside a mapped region). */
    readonly addr: number,
    private readonly region: Buffer,
    private readonly offset: number,
  ) {}

  /** The bytes, viewed in place in the mapped region. */
  get buf(): Buffer {
    return this.view ?? (this.view = this.region.subarray(this.offset, this.offset + this.byteLength));
  }

  /** Bytes [start, end) of this segment (0 ≤ start ≤ end ≤ byteLength). */
  slice(start: number, end: number): Segment {
    return new Segment(this.gpa + start, end - start, this.addr + start, this.region, this.offset + start);
  }
}

export interface RegionDescriptor {
  gpa: number;
  size: number;
  uva: number;
  mmapOffset: number;
  fd: number;
}

/** Largest guest address we accept (JS numbers are exact below 2^53). */
const MAX_ADDR = Number.MAX_SAFE_INTEGER;

export class GuestMemory {
  private regions: MappedRegion[] = [];
  private last: MappedRegion | null = null;

  constructor(regions: Region[] = []) {
    for (const r of regions) this.add(r);
  }

  /** Map regions described by a SET_MEM_TABLE / ADD_MEM_REG message. */
  static mapRegion(d: RegionDescriptor): Region {
    if (d.size <= 0 || !Number.isSafeInteger(d.size)) throw new GuestMemoryError(`bad region size ${d.size}`);
    if (d.gpa + d.size > MAX_ADDR || d.uva + d.size > MAX_ADDR) throw new GuestMemoryError('region beyond 2^53');
    if (d.size > 0xffffffff) throw new GuestMemoryError(`region of ${d.size} bytes is larger than this backend maps (4 GiB)`);
    let m: Mapping;
    try {
      m = mapShared(d.fd, d.size, d.mmapOffset);
    } catch (e) {
      throw new GuestMemoryError(`cannot map guest region at 0x${d.gpa.toString(16)}: ${(e as Error).message}`);
    }
    return { gpa: d.gpa, size: d.size, uva: d.uva, mmapOffset: d.mmapOffset, buf: m.buf, unmap: () => m.unmap() };
  }

  get regionList(): readonly Region[] {
    return this.regions;
  }

  get totalSize(): number {
    return this.regions.reduce((s, r) => s + r.size, 0);
  }

  add(r: Region): void {
    if (r.buf.length !== r.size) throw new GuestMemoryError('region buffer does not match its size');
    for (const o of this.regions) {
      if (r.gpa < o.gpa + o.size && o.gpa < r.gpa + r.size) {
        throw new GuestMemoryError(`region 0x${r.gpa.toString(16)}+0x${r.size.toString(16)} overlaps 0x${o.gpa.toString(16)}`);
      }
    }
    this.regions.push({ ...r, addr: addressOf(r.buf) });
    this.regions.sort((a, b) => a.gpa - b.gpa);
  }

  /** Remove (and unmap) the region that starts at `gpa` with `size`; false if absent. */
  remove(gpa: number, size: number): boolean {
    const i = this.regions.findIndex((r) => r.gpa === gpa && r.size === size);
    if (i < 0) return false;
    const [r] = this.regions.splice(i, 1);
    if (this.last === r) this.last = null;
    r.unmap?.();
    return true;
  }

  /** Unmap everything. Buffers handed out before are dead afterwards. */
  close(): void {
    for (const r of this.regions) r.unmap?.();
    this.regions = [];
    this.last = null;
  }

  private find(gpa: number): MappedRegion | null {
    const l = this.last;
    if (l !== null && gpa >= l.gpa && gpa < l.gpa + l.size) return l;
    for (const r of this.regions) {
      if (gpa >= r.gpa && gpa < r.gpa + r.size) {
        this.last = r;
        return r;
      }
    }
    return null;
  }

  /** A contiguous view of [gpa, gpa+len) that must lie inside one region. */
  slice(gpa: number, len: number): Buffer {
    checkRange(gpa, len);
    const r = this.find(gpa);
    if (r === null) throw new GuestMemoryError(`guest address 0x${gpa.toString(16)} is not in guest memory`);
    const off = gpa - r.gpa;
    if (off + len > r.size) {
      throw new GuestMemoryError(`guest range 0x${gpa.toString(16)}+0x${len.toString(16)} crosses the end of its memory region`);
    }
    return r.buf.subarray(off, off + len);
  }

  /**
   * Append to `out` the segments covering [gpa, gpa+len); a range may span
   * adjacent regions. Throws if any byte is outside guest memory.
   */
  segments(gpa: number, len: number, out: Segment[]): void {
    checkRange(gpa, len);
    let a = gpa;
    let left = len;
    while (left > 0) {
      const r = this.find(a);
      if (r === null) throw new GuestMemoryError(`guest address 0x${a.toString(16)} is not in guest memory`);
      const off = a - r.gpa;
      const n = Math.min(left, r.size - off);
      out.push(new Segment(a, n, r.addr + off, r.buf, off));
      a += n;
      left -= n;
    }
  }

  /** Translate a front-end virtual address range (vring addresses) to a view. */
  uvaSlice(uva: number, len: number): { gpa: number; buf: Buffer } {
    checkRange(uva, len);
    for (const r of this.regions) {
      if (uva >= r.uva && uva < r.uva + r.size) {
        const off = uva - r.uva;
        if (off + len > r.size) throw new GuestMemoryError(`ring at 0x${uva.toString(16)}+${len} crosses its region`);
        return { gpa: r.gpa + off, buf: r.buf.subarray(off, off + len) };
      }
    }
    throw new GuestMemoryError(`front-end address 0x${uva.toString(16)} is in no memory region`);
  }
}

function checkRange(addr: number, len: number): void {
  if (!Number.isSafeInteger(addr) || addr < 0 || !Number.isSafeInteger(len) || len < 0 || addr + len > MAX_ADDR) {
    throw new GuestMemoryError(`bad guest range 0x${addr.toString(16)}+${len}`);
  }
}

/** Read a little-endian u64 as a number, or -1 when it is ≥ 2^53 (never a valid address). */
export function readAddr(buf: Buffer, off: number): number {
  const lo = buf.readUInt32LE(off);
  const hi = buf.readUInt32LE(off + 4);
  if (hi >= 0x200000) return -1;
  return hi * 0x100000000 + lo;
}

export const LOG_PAGE = 4096;

/**
 * The dirty log QEMU shares for live migration (LOG_SHMFD): one bit per
 * 4 KiB guest page, set atomically (QEMU clears bits concurrently).
 */
export class DirtyLog {
  private readonly bytes: Uint8Array;
  constructor(
    readonly buf: Buffer,
    private readonly release?: () => void,
  ) {
    this.bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
  }
  mark(gpa: number, len: number): void {
    if (len <= 0) return;
    const first = Math.floor(gpa / LOG_PAGE);
    const last = Math.floor((gpa + len - 1) / LOG_PAGE);
    const max = this.bytes.length * 8;
    for (let p = first; p <= last && p < max; p++) {
      Atomics.or(this.bytes, p >>> 3, 1 << (p & 7));
    }
  }
  close(): void {
    this.release?.();
  }
}
