// Fuzz the qcow2 metadata reader: mutated header, extensions, L1, L2,
// refcount table and refcount blocks of a small image. Every open must
// either succeed or throw ImageError, and so must every request after a
// successful open; nothing may read past the end of the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Qcow2Image } from '../../src/storage/qcow2.js';
import { ImageError } from '../../src/storage/image.js';
import '../../src/storage/open.js';
import { prng, qemuImg, tmpdir } from './helpers.js';

interface Region {
  name: string;
  start: number;
  end: number;
  entries: boolean; // 8-byte table entries
}

function regions(img: Buffer): Region[] {
  const cs = 2 ** img.readUInt32BE(20);
  const out: Region[] = [{ name: 'header', start: 0, end: 512, entries: false }];
  const l1 = Number(img.readBigUInt64BE(40));
  const l1Size = img.readUInt32BE(36);
  out.push({ name: 'L1', start: l1, end: l1 + l1Size * 8, entries: true });
  const rt = Number(img.readBigUInt64BE(48));
  const rtc = img.readUInt32BE(56);
  out.push({ name: 'reftable', start: rt, end: rt + 64, entries: true });
  for (let i = 0; i < (rtc * cs) / 8; i++) {
    const rb = Number(img.readBigUInt64BE(rt + i * 8));
    if (rb) out.push({ name: `refblock ${i}`, start: rb, end: rb + 256, entries: false });
  }
  for (let i = 0; i < l1Size; i++) {
    const l2 = Number(img.readBigUInt64BE(l1 + i * 8) & 0x00fffffffffffe00n);
    if (l2) out.push({ name: `L2 ${i}`, start: l2, end: l2 + cs, entries: true });
  }
  return out;
}

test('fuzz: mutated qcow2 metadata is refused with ImageError or handled, never crashes or reads past EOF', { timeout: 60_000 }, async (t) => {
  // tmpfs when there is one: this test is about metadata, not fdatasync latency
  const dir = tmpdir(t, 'xvm-fuzz-', fs.existsSync('/dev/shm') ? '/dev/shm' : undefined);
  const size = 2 << 20;
  // A backing file, then an image with normal, zero and compressed clusters.
  const base = await Qcow2Image.create(path.join(dir, 'base.qcow2'), size, { clusterBits: 12 });
  await base.write(Buffer.alloc(size, 0x42), 0);
  await base.close();
  const raw = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4096) if ((i >> 12) % 3 === 0) raw.write(`compressible ${i} `.repeat(100), i);
  fs.writeFileSync(path.join(dir, 'src.raw'), raw);
  const seedFile = path.join(dir, 'seed.qcow2');
  assert.equal(qemuImg('convert', '-c', '-o', 'cluster_size=4096', '-f', 'raw', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', path.join(dir, 'src.raw'), seedFile).status, 0);
  const img = await Qcow2Image.open(seedFile);
  await img.write(Buffer.alloc(40_000, 7), 100_000);
  await img.writeZeroes(600_000, 50_000, false);
  await img.close();
  const seed = fs.readFileSync(seedFile);
  const regs = regions(seed);
  assert.ok(regs.some((r) => r.name.startsWith('L2')) && regs.some((r) => r.name.startsWith('refblock')));

  // Watch every positional read for reads past the end of the file.
  const violations: string[] = [];
  let watched = 0;
  const origRead = fs.read;
  (fs as { read: unknown }).read = function (fd: number, buf: Uint8Array, off: number, len: number, pos: number | null, cb: unknown) {
    watched++;
    if (typeof pos === 'number' && len > 0) {
      const sz = fs.fstatSync(fd).size;
      if (pos + len > sz) violations.push(`read [${pos}, +${len}) of a ${sz}-byte file`);
    }
    return (origRead as (...a: unknown[]) => unknown).call(fs, fd, buf, off, len, pos, cb);
  };
  t.after(() => {
    (fs as { read: unknown }).read = origRead;
  });

  const file = path.join(dir, 'fuzz.qcow2');
  const rand = prng(20261125);
  const interesting = (fileLen: number): bigint[] => [
    0n, 1n, 0xffffffffffffffffn, 0x8000000000000000n, 0x4000000000000000n, BigInt(fileLen), BigInt(fileLen - 512),
    BigInt(fileLen) | 0x8000000000000000n, 4096n | 0x8000000000000000n, 0x8000000000000000n | BigInt(Number(seed.readBigUInt64BE(40))),
    0x8000000000000000n | 512n, 1n << 55n, 0x7fffffffn, 0x8000000000000001n,
  ];
  const stats = { opened: 0, refused: 0, iterations: 0, rwOpened: 0, rwRefused: 0 };
  const unexpected: string[] = [];
  const deadline = Date.now() + 6000;
  const expectImageError = (err: unknown, what: string): void => {
    if (!(err instanceof ImageError)) unexpected.push(`${what}: ${(err as Error)?.stack ?? String(err)}`);
  };
  while (Date.now() < deadline && stats.iterations < 3000) {
    stats.iterations++;
    const b = Buffer.from(seed);
    const nmut = 1 + rand(3);
    const what: string[] = [];
    let data = b;
    for (let m = 0; m < nmut; m++) {
      const r = regs[rand(regs.length)];
      const kind = rand(4);
      if (kind === 0 && r.entries) {
        const i = r.start + 8 * rand(Math.max(1, (r.end - r.start) / 8));
        const vals = interesting(b.length);
        const v = vals[rand(vals.length)];
        b.writeBigUInt64BE(v, i);
        what.push(`${r.name}@${i}=${v}`);
      } else if (kind === 1) {
        const i = r.start + rand(r.end - r.start);
        b[i] ^= 1 << rand(8);
        what.push(`${r.name}@${i} bitflip`);
      } else if (kind === 2) {
        const i = r.start + rand(r.end - r.start);
        b[i] = rand(256);
        what.push(`${r.name}@${i} byte`);
      } else if (rand(8) === 0) {
        data = b.subarray(0, rand(b.length));
        what.push(`truncate ${data.length}`);
      } else {
        const i = r.start + rand(r.end - r.start);
        b[i] = 0xff;
        what.push(`${r.name}@${i}=ff`);
      }
    }
    fs.writeFileSync(file, data);
    const label = what.join(', ');
    // read-only
    let ro: Qcow2Image | null = null;
    try {
      ro = await Qcow2Image.open(file, { readOnly: true });
      stats.opened++;
    } catch (err) {
      stats.refused++;
      expectImageError(err, `open ro [${label}]`);
    }
    if (ro) {
      const buf = Buffer.alloc(64 << 10);
      const spots = [0, 64 << 10, 128 << 10, 512 << 10, 1 << 20, ro.size - buf.length, rand(Math.max(1, ro.size - buf.length))];
      for (const off of spots) {
        if (off < 0 || off + buf.length > ro.size) continue;
        await ro.read(buf, off).catch((err) => expectImageError(err, `read [${label}]`));
      }
      await ro.close().catch((err) => expectImageError(err, `close ro [${label}]`));
    }
    // read-write: the metadata scan, then some writes, a flush and a close
    fs.writeFileSync(file, data);
    let rw: Qcow2Image | null = null;
    try {
      rw = await Qcow2Image.open(file);
      stats.rwOpened++;
    } catch (err) {
      stats.rwRefused++;
      expectImageError(err, `open rw [${label}]`);
    }
    if (rw) {
      const img2 = rw;
      const ops = [
        () => img2.write(Buffer.alloc(5000, 1), 3000),
        () => img2.write(Buffer.alloc(70_000, 2), rand(Math.max(1, img2.size - 70_000))),
        () => img2.discard(0, Math.min(img2.size, 300_000)),
        () => img2.writeZeroes(Math.min(img2.size, 1 << 20) - 4096 * 3, 4096 * 2, true),
        () => img2.flush(),
      ];
      for (const op of ops) await op().catch((err) => expectImageError(err, `rw op [${label}]`));
      await img2.close().catch((err) => expectImageError(err, `close rw [${label}]`));
    }
    if (unexpected.length > 3) break;
  }
  t.diagnostic(`${stats.iterations} mutated images: read-only ${stats.opened} opened / ${stats.refused} refused; read-write ${stats.rwOpened} opened / ${stats.rwRefused} refused`);
  assert.deepEqual(unexpected, [], 'only ImageError may escape');
  assert.deepEqual(violations.slice(0, 5), [], 'no read past end of file');
  assert.ok(stats.iterations >= 100, 'enough iterations');
  assert.ok(watched > stats.iterations * 5, `the read watch saw the image's reads (${watched})`);
  assert.ok(stats.opened > 0 && stats.refused > 0, 'mutations both pass and fail');
});
