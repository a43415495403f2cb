// qcow2 microbenchmark: our Qcow2Image against our RawImage on the same file
// system, in the same run, through the same BlockImage interface.
//
//   node dist/bench/qcow2.js [--size-mib 256] [--qd 16] [--seconds 3] [--dir DIR] [--json FILE]
//   node dist/bench/qcow2.js --cpu [--size-mib 256] [--rounds 3] [--only LINE,...] [--dir DIR]
//
// --cpu: back-end CPU per request (process.cpuUsage, user+system µs), the
// way the block backend drives the image: inline I/O, readv/writev with a
// guest's O_DIRECT request shape (1 MiB = 256 separate 4 KiB buffers, 4 KiB
// = one buffer), qcow2 next to raw (the same I/O on a raw file through
// FileIo: the difference is the qcow2 layer's cost). Lines mirror
// `npm run bench -- blk`: 1 MiB sequential write into a fresh image, read,
// rewrite; 8 streams of sequential 4 KiB writes / reads (allocated image),
// and 4 KiB writes into a fresh image. Rounds alternate raw / qcow2; the
// minimum per line is printed.
//
// Lines (each timed including a final flush for writes):
//   seq-write-alloc  1 MiB writes into a fresh image (qcow2 allocates clusters)
//   seq-read         1 MiB reads
//   seq-write        1 MiB overwrites (qcow2: clusters already allocated)
//   rand-write-alloc 4 KiB random writes, --qd in flight, into a fresh image
//   rand-write       4 KiB random overwrites, --qd in flight
//   rand-read        4 KiB random reads, --qd in flight
// The host page cache is in play for both alike (this is a CPU/metadata
// path benchmark; the guest-level benchmark is bench/blk.ts).
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { BlockImage } from '../src/storage/image.js';
import { RawImage } from '../src/storage/raw.js';
import { Qcow2Image } from '../src/storage/qcow2.js';
import '../src/storage/open.js';

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '256' },
    qd: { type: 'string', default: '16' },
    seconds: { type: 'string', default: '3' },
    dir: { type: 'string' },
    json: { type: 'string' },
    cpu: { type: 'boolean', default: false },
    rounds: { type: 'string', default: '3' },
    only: { type: 'string' },
  },
});
const MiB = 1 << 20;
const SIZE = Number(values['size-mib']) * MiB;
const QD = Number(values.qd);
const SECONDS = Number(values.seconds);

type Line = 'seq-write-alloc' | 'seq-read' | 'seq-write' | 'rand-write-alloc' | 'rand-write' | 'rand-read';
const LINES: Line[] = ['seq-write-alloc', 'seq-read', 'seq-write', 'rand-write-alloc', 'rand-write', 'rand-read'];

async function seq(img: BlockImage, write: boolean): Promise<number> {
  const buf = crypto.randomBytes(MiB);
  const t0 = performance.now();
  let done = 0;
  // a few requests in flight, like a guest's readahead / writeback
  const depth = 4;
  let next = 0;
  await Promise.all(
    Array.from({ length: depth }, async () => {
      const b = write ? buf : Buffer.allocUnsafe(MiB);
      while (next < img.size) {
        const off = next;
        next += MiB;
        if (write) await img.write(b, off);
        else await img.read(b, off);
        done += MiB;
      }
    }),
  );
  if (write) await img.flush();
  return done / MiB / ((performance.now() - t0) / 1000);
}

async function rand(img: BlockImage, write: boolean): Promise<number> {
  const blocks = img.size / 4096;
  const deadline = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  let ops = 0;
  await Promise.all(
    Array.from({ length: QD }, async () => {
      const b = crypto.randomBytes(4096);
      while (performance.now() < deadline) {
        const off = crypto.randomInt(blocks) * 4096;
        if (write) await img.write(b, off);
        else await img.read(b, off);
        ops++;
      }
    }),
  );
  if (write) await img.flush();
  return ops / ((performance.now() - t0) / 1000);
}

async function run(kind: 'raw' | 'qcow2', dir: string): Promise<Record<Line, number>> {
  const out = {} as Record<Line, number>;
  const fresh = async (name: string): Promise<BlockImage> => {
    const f = path.join(dir, `${name}.${kind}`);
    fs.rmSync(f, { force: true });
    return kind === 'raw' ? RawImage.create(f, SIZE) : Qcow2Image.create(f, SIZE);
  };
  let img = await fresh('seq');
  out['seq-write-alloc'] = await seq(img, true);
  out['seq-read'] = await seq(img, false);
  out['seq-write'] = await seq(img, true);
  await img.close();
  img = await fresh('rand');
  out['rand-write-alloc'] = await rand(img, true);
  await seq(img, true); // fully allocate
  out['rand-write'] = await rand(img, true);
  out['rand-read'] = await rand(img, false);
  await img.close();
  return out;
}

// ---------------------------------------------------------------- --cpu

type CpuLine = 'w1M-fresh' | 'r1M' | 'w1M-over' | 'w4k-qd8' | 'r4k-qd8' | 'w4k-fresh-qd8';
const CPU_LINES: CpuLine[] = ['w1M-fresh', 'r1M', 'w1M-over', 'w4k-qd8', 'r4k-qd8', 'w4k-fresh-qd8'];
type VecImage = BlockImage & { readv(b: Uint8Array[], o: number): Promise<void>; writev(b: Uint8Array[], o: number): Promise<void> };

/** One 1 MiB request as a guest's O_DIRECT request arrives: 256 separate 4 KiB pages. */
function pages(): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < 256; i++) out.push(crypto.randomBytes(4096));
  return out;
}

async function cpuPhase(fn: () => Promise<number>): Promise<{ us: number; user: number }> {
  const c0 = process.cpuUsage();
  const n = await fn();
  const c = process.cpuUsage(c0);
  return { us: (c.user + c.system) / n, user: c.user / n };
}

type Cpu = { us: number; user: number };
async function cpuRun(kind: 'raw' | 'qcow2', dir: string, only: Set<CpuLine>): Promise<Partial<Record<CpuLine, Cpu>>> {
  const out: Partial<Record<CpuLine, Cpu>> = {};
  const f = path.join(dir, `cpu.${kind}`);
  const fresh = async (): Promise<VecImage> => {
    fs.rmSync(f, { force: true });
    const c = kind === 'raw' ? await RawImage.create(f, SIZE) : await Qcow2Image.create(f, SIZE);
    await c.close();
    return (kind === 'raw' ? RawImage.open(f, { inlineIo: true }) : Qcow2Image.open(f, { inlineIo: true })) as unknown as Promise<VecImage>;
  };
  const seq1M = (img: VecImage, write: boolean) => async (): Promise<number> => {
    const req = pages();
    let n = 0;
    for (let off = 0; off < SIZE; off += MiB, n++) {
      if (write) await img.writev(req, off);
      else await img.readv(req, off);
    }
    return n;
  };
  // 8 streams, each sequential 4 KiB over its own eighth of the first 64 MiB (bench blk's 4k lines).
  const streams4k = (img: VecImage, write: boolean) => async (): Promise<number> => {
    const span = Math.min(SIZE, 64 * MiB) / 8;
    let n = 0;
    await Promise.all(
      Array.from({ length: 8 }, async (_, s) => {
        const b = [crypto.randomBytes(4096)];
        for (let o = 0; o < span; o += 4096, n++) {
          if (write) await img.writev(b, s * span + o);
          else await img.readv(b, s * span + o);
        }
      }),
    );
    return n;
  };
  let img = await fresh();
  const line = async (l: CpuLine, fn: () => Promise<number>): Promise<void> => {
    if (only.has(l)) out[l] = await cpuPhase(fn);
    else await fn();
  };
  await line('w1M-fresh', seq1M(img, true));
  await img.flush();
  await line('r1M', seq1M(img, false));
  await line('w1M-over', seq1M(img, true));
  await line('w4k-qd8', streams4k(img, true));
  await line('r4k-qd8', streams4k(img, false));
  await img.close();
  if (only.has('w4k-fresh-qd8')) {
    img = await fresh();
    await line('w4k-fresh-qd8', streams4k(img, true));
    await img.close();
  }
  fs.rmSync(f, { force: true });
  return out;
}

async function cpuMain(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(values.dir ?? os.tmpdir(), 'xvm-bench-qcow2-'));
  const only = new Set((values.only ? values.only.split(',') : CPU_LINES) as CpuLine[]);
  const rounds = Number(values.rounds);
  const res: Record<'raw' | 'qcow2', Partial<Record<CpuLine, Cpu>>[]> = { raw: [], qcow2: [] };
  try {
    for (let r = 0; r < rounds; r++) {
      const order: ('raw' | 'qcow2')[] = r % 2 ? ['qcow2', 'raw'] : ['raw', 'qcow2'];
      for (const k of order) res[k].push(await cpuRun(k, dir, only));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // The round with the least total CPU, per line and format.
  const min = (k: 'raw' | 'qcow2', l: CpuLine): Cpu => res[k].map((x) => x[l]!).reduce((a, b) => (b.us < a.us ? b : a));
  console.log(`CPU µs per request (min of ${rounds} rounds), ${SIZE / MiB} MiB image, inline I/O, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log('line            raw (user)      qcow2 (user)    qcow2-raw  qcow2/raw');
  for (const l of CPU_LINES) {
    if (!only.has(l)) continue;
    const a = min('raw', l);
    const b = min('qcow2', l);
    const cell = (c: Cpu): string => `${c.us.toFixed(1).padStart(7)} (${c.user.toFixed(1).padStart(6)})`;
    console.log(`${l.padEnd(14)} ${cell(a)} ${cell(b)} ${(b.us - a.us).toFixed(1).padStart(10)} ${(b.us / a.us).toFixed(2).padStart(10)}`);
  }
}

async function main(): Promise<void> {
  if (values.cpu) return cpuMain();
  const dir = fs.mkdtempSync(path.join(values.dir ?? os.tmpdir(), 'xvm-bench-qcow2-'));
  try {
    // Alternate the order so that the page cache and machine load hit both alike.
    const raw1 = await run('raw', dir);
    const q1 = await run('qcow2', dir);
    const q2 = await run('qcow2', dir);
    const raw2 = await run('raw', dir);
    const best = (a: Record<Line, number>, b: Record<Line, number>): Record<Line, number> =>
      Object.fromEntries(LINES.map((l) => [l, Math.max(a[l], b[l])])) as Record<Line, number>;
    const raw = best(raw1, raw2);
    const q = best(q1, q2);
    console.log(`qcow2 vs raw, ${SIZE / MiB} MiB image in ${dir} (${os.cpus().length} CPUs), best of 2 runs each`);
    console.log('line               unit      raw      qcow2    qcow2/raw');
    const rows = LINES.map((l) => {
      const unit = l.startsWith('seq') ? 'MiB/s' : 'IOPS';
      const ratio = q[l] / raw[l];
      console.log(`${l.padEnd(18)} ${unit.padEnd(6)} ${raw[l].toFixed(0).padStart(8)} ${q[l].toFixed(0).padStart(10)} ${ratio.toFixed(2).padStart(11)}`);
      return { line: l, unit, raw: raw[l], qcow2: q[l], ratio };
    });
    if (values.json) fs.writeFileSync(values.json, JSON.stringify({ sizeMiB: SIZE / MiB, qd: QD, rows }, null, 2));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
