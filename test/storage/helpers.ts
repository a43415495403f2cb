// Shared helpers for the storage tests: temp dirs, qemu-img, an in-memory model.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BlockImage } from '../../src/storage/image.js';

export function tmpdir(t: { after: (fn: () => void) => void }, prefix = 'xvm-storage-', base = os.tmpdir()): string {
  const dir = fs.mkdtempSync(path.join(base, prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface Run {
  status: number;
  stdout: string;
  stderr: string;
}

export function qemuImg(...args: string[]): Run {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  if (r.error) throw new Error(`qemu-img not runnable (apt-get install qemu-utils): ${r.error.message}`);
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** qemu-img check must report no errors and no leaks. */
export function assertCheckClean(file: string): void {
  const r = qemuImg('check', '-f', 'qcow2', file);
  if (r.status !== 0) throw new Error(`qemu-img check ${file} exited ${r.status}:\n${r.stdout}${r.stderr}`);
}

/** qemu-img compare of an image against a raw export of the model. */
export function assertSameAs(file: string, format: 'qcow2' | 'raw', model: Buffer, dir: string): void {
  const raw = path.join(dir, `model-${crypto.randomBytes(4).toString('hex')}.raw`);
  fs.writeFileSync(raw, model);
  try {
    const r = qemuImg('compare', '-f', format, '-F', 'raw', file, raw);
    if (r.status !== 0) throw new Error(`qemu-img compare ${file} exited ${r.status}:\n${r.stdout}${r.stderr}`);
  } finally {
    fs.rmSync(raw, { force: true });
  }
}

/** A deterministic PRNG (xorshift32) so failures can be replayed. */
export function prng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

export function randomBytes(rand: (n: number) => number, len: number): Buffer {
  const b = crypto.randomBytes(len);
  b[0] = rand(256);
  return b;
}

/** Random writes (and some zeroes/discards) applied to an image and a model. */
export async function randomOps(
  img: BlockImage,
  model: Buffer,
  rand: (n: number) => number,
  count: number,
  opts: { maxLen?: number; zeroes?: boolean; concurrent?: number } = {},
): Promise<void> {
  const maxLen = opts.maxLen ?? 200_000;
  const conc = opts.concurrent ?? 1;
  for (let i = 0; i < count; i += conc) {
    // Concurrent requests get disjoint byte ranges (a guest would not overlap them either).
    const batch: Promise<void>[] = [];
    const used: [number, number][] = [];
    for (let k = 0; k < conc && i + k < count; k++) {
      const len = 1 + rand(Math.min(maxLen, model.length));
      const off = rand(model.length - len + 1);
      if (used.some(([a, b]) => off < b && a < off + len)) continue;
      used.push([off, off + len]);
      const op = opts.zeroes ? rand(10) : 0;
      if (op === 8) {
        batch.push(img.writeZeroes(off, len, rand(2) === 0));
        model.fill(0, off, off + len);
      } else if (op === 9) {
        batch.push(img.discard(off, len));
        model.fill(0, off, off + len);
      } else {
        const b = randomBytes(rand, len);
        b.copy(model, off);
        batch.push(img.write(b, off));
      }
    }
    await Promise.all(batch);
  }
}

export async function readAll(img: BlockImage, chunk = 1 << 20): Promise<Buffer> {
  const out = Buffer.alloc(img.size);
  const jobs: Promise<void>[] = [];
  for (let off = 0; off < img.size; off += chunk) jobs.push(img.read(out.subarray(off, Math.min(img.size, off + chunk)), off));
  await Promise.all(jobs);
  return out;
}
