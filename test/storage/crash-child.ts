// Child process for crash.test.ts: writes to a qcow2 image in a loop until
// it is killed. Region A (first half) gets random writes, zeroes and
// discards, many in flight; region B (second half) gets sequential 4 KiB
// blocks with a known pattern, and after each flush we print how many of
// them are durable.
import { Qcow2Image } from '../../src/storage/qcow2.js';
import '../../src/storage/open.js';

const [file, seedArg] = process.argv.slice(2);
let seed = Number(seedArg) >>> 0 || 1;
const rand = (n: number): number => {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed % n;
};

export function blockPattern(i: number): Buffer {
  const b = Buffer.alloc(4096, i & 0xff);
  b.writeUInt32BE(i, 0);
  b.write('xvm-crash', 8);
  return b;
}

async function main(): Promise<void> {
  const img = await Qcow2Image.open(file);
  const half = Math.floor(img.size / 2);
  const blocks = Math.floor(half / 4096);
  let next = Number(process.argv[4] ?? 0);
  process.stdout.write(`ready ${next}\n`);
  for (;;) {
    const jobs: Promise<void>[] = [];
    for (let k = 0; k < 8; k++) {
      const len = 1 + rand(150_000);
      const off = rand(half - len);
      const op = rand(10);
      if (op === 0) jobs.push(img.discard(off, len));
      else if (op === 1) jobs.push(img.writeZeroes(off, len, rand(2) === 0));
      else jobs.push(img.write(Buffer.alloc(len, rand(256)), off));
    }
    for (let k = 0; k < 4 && next < blocks; k++, next++) jobs.push(img.write(blockPattern(next), half + next * 4096));
    await Promise.all(jobs);
    if (rand(4) === 0) {
      await img.flush();
      process.stdout.write(`durable ${next}\n`);
    }
  }
}

if (file) {
  main().catch((err) => {
    process.stderr.write(`crash-child: ${(err as Error).stack}\n`);
    process.exit(1);
  });
}
