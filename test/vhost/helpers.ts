// Synthetic guest memory and ring builders for virtqueue tests.
import { GuestMemory, ringSizes, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT } from '../../src/vhost/index.js';

export { VIRTQ_DESC_F_NEXT as NEXT, VIRTQ_DESC_F_WRITE as WRITE, VIRTQ_DESC_F_INDIRECT as INDIRECT };

export const MEM_BASE = 0x100000;
export const MEM_SIZE = 1 << 20;

export interface Layout {
  mem: GuestMemory;
  ram: Buffer;
  size: number;
  desc: number;
  avail: number;
  used: number;
  /** Free area for buffers / indirect tables. */
  data: number;
}

/** One region of `MEM_SIZE` bytes at MEM_BASE (uva == gpa), rings at its start. */
export function layout(size = 16): Layout {
  const ram = Buffer.alloc(MEM_SIZE);
  const mem = new GuestMemory([{ gpa: MEM_BASE, size: MEM_SIZE, uva: MEM_BASE, mmapOffset: 0, buf: ram }]);
  const s = ringSizes(size);
  const desc = MEM_BASE;
  const avail = align(desc + s.desc, 16);
  const used = align(avail + s.avail, 16);
  const data = align(used + s.used, 4096);
  return { mem, ram, size, desc, avail, used, data };
}

export function align(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

export function view(l: Layout, gpa: number, len: number): Buffer {
  return l.ram.subarray(gpa - MEM_BASE, gpa - MEM_BASE + len);
}

export function writeDesc(l: Layout, table: number, i: number, addr: number, len: number, flags: number, next = 0): void {
  const b = view(l, table + i * 16, 16);
  b.writeBigUInt64LE(BigInt(addr), 0);
  b.writeUInt32LE(len, 8);
  b.writeUInt16LE(flags, 12);
  b.writeUInt16LE(next, 14);
}

export function availIdx(l: Layout): number {
  return view(l, l.avail, 4).readUInt16LE(2);
}

export function pushAvail(l: Layout, head: number): void {
  const a = view(l, l.avail, 6 + 2 * l.size);
  const idx = a.readUInt16LE(2);
  a.writeUInt16LE(head, 4 + 2 * (idx % l.size));
  a.writeUInt16LE((idx + 1) & 0xffff, 2);
}

export function usedIdx(l: Layout): number {
  return view(l, l.used, 4).readUInt16LE(2);
}

export function usedElem(l: Layout, i: number): { id: number; len: number } {
  const u = view(l, l.used + 4 + 8 * (i % l.size), 8);
  return { id: u.readUInt32LE(0), len: u.readUInt32LE(4) };
}

export function queueViews(l: Layout): { desc: Buffer; avail: Buffer; used: Buffer } {
  const s = ringSizes(l.size);
  return { desc: view(l, l.desc, s.desc), avail: view(l, l.avail, s.avail), used: view(l, l.used, s.used) };
}

/** Deterministic PRNG (xorshift32) so a failing fuzz run can be replayed from its seed. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}
