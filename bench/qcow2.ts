// qcow2 microbenchmark: our Qcow2Image against our RawImage on the same file
// system, in the same run, through the same BlockImage interface.
//
//   node dist/bench/qcow2.js [--size-mib 256] [--qd 16] [--seconds 3] [--dir DIR] [--json FILE]
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

async function main(): Promise<void> {
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
