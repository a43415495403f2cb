import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Qcow2Image } from '../../src/storage/qcow2.js';
import { RawImage } from '../../src/storage/raw.js';
import { openImage } from '../../src/storage/open.js';
import { ImageError } from '../../src/storage/image.js';
import { assertCheckClean, assertSameAs, prng, qemuImg, randomOps, readAll, tmpdir } from './helpers.js';

const MiB = 1 << 20;

for (const [clusterBits, size, ops] of [
  [16, 64 * MiB, 400],
  [9, 6 * MiB, 300], // tiny clusters: many L2 tables, refcount blocks and refcount table growth
  [21, 48 * MiB, 120],
] as const) {
  test(`qcow2 (cluster_bits ${clusterBits}): random writes, zeroes, discards vs model; qemu-img check + compare`, async (t) => {
    const dir = tmpdir(t);
    const file = path.join(dir, 'a.qcow2');
    const img = await Qcow2Image.create(file, size, { clusterBits });
    const model = Buffer.alloc(size);
    const rand = prng(clusterBits * 1000 + 1);
    await randomOps(img, model, rand, ops, { zeroes: true, concurrent: 6, maxLen: Math.min(size / 4, 300_000) });
    await img.flush(); // applies deferred frees
    await randomOps(img, model, rand, ops / 2, { zeroes: true, concurrent: 6, maxLen: 100_000 });
    assert.ok((await readAll(img)).equals(model), 'read back equals model');
    await img.close();
    assertCheckClean(file);
    assertSameAs(file, 'qcow2', model, dir);
    // and again through a fresh open (metadata from disk, not cache)
    const again = await Qcow2Image.open(file, { readOnly: true });
    assert.ok((await readAll(again)).equals(model));
    await again.close();
  });
}

test('qcow2: backing chain 3 deep (raw base, qemu-img qcow2, our overlays); writes never touch lower layers', async (t) => {
  const dir = tmpdir(t);
  const size = 24 * MiB;
  const rand = prng(42);
  const base = path.join(dir, 'base.raw');
  const m0 = Buffer.alloc(size);
  const rawImg = await RawImage.create(base, size);
  await randomOps(rawImg, m0, rand, 60);
  await rawImg.close();
  // layer 1 made by qemu-img, written by us
  assert.equal(qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', path.join(dir, 'l1.qcow2')).status, 0);
  const l1 = await Qcow2Image.open(path.join(dir, 'l1.qcow2'));
  assert.equal(l1.backingFile, 'base.raw');
  const m1 = Buffer.from(m0);
  await randomOps(l1, m1, rand, 80, { zeroes: true, concurrent: 4 });
  await l1.close();
  // layers 2 and 3 by us, with relative backing names
  const l2 = await Qcow2Image.create(path.join(dir, 'l2.qcow2'), size, { backingFile: 'l1.qcow2' });
  assert.equal(l2.backingFormat, 'qcow2');
  const m2 = Buffer.from(m1);
  await randomOps(l2, m2, rand, 80, { zeroes: true, concurrent: 4 });
  await l2.close();
  const sub = path.join(dir, 'sub');
  fs.mkdirSync(sub);
  const l3 = await Qcow2Image.create(path.join(sub, 'l3.qcow2'), size + 3 * MiB, { backingFile: '../l2.qcow2', clusterBits: 12 });
  const m3 = Buffer.concat([m2, Buffer.alloc(3 * MiB)]);
  // partial-cluster writes everywhere force copy-on-write from the chain
  await randomOps(l3, m3, rand, 200, { zeroes: true, concurrent: 8, maxLen: 9000 });
  assert.ok((await readAll(l3)).equals(m3));
  await l3.close();
  for (const f of ['l1.qcow2', 'l2.qcow2', 'sub/l3.qcow2']) assertCheckClean(path.join(dir, f));
  assertSameAs(path.join(sub, 'l3.qcow2'), 'qcow2', m3, dir);
  assertSameAs(path.join(dir, 'l2.qcow2'), 'qcow2', m2, dir);
  assertSameAs(path.join(dir, 'l1.qcow2'), 'qcow2', m1, dir);
  assert.ok(fs.readFileSync(base).equals(m0), 'base untouched');
});

test('qcow2: compressed clusters written by qemu-img convert -c are read, and overwritten by copy-on-write', async (t) => {
  const dir = tmpdir(t);
  const size = 8 * MiB;
  const model = Buffer.alloc(size);
  // compressible but not trivial content, with holes
  for (let off = 0; off < size; off += 4096) {
    if ((off >> 12) % 7 === 3) continue;
    model.write(`block ${off} ${'xyz'.repeat((off >> 12) % 50)}`.padEnd(4096, String.fromCharCode(65 + ((off >> 12) % 26))), off, 'latin1');
  }
  fs.writeFileSync(path.join(dir, 'src.raw'), model);
  assert.equal(qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', path.join(dir, 'src.raw'), path.join(dir, 'c.qcow2')).status, 0);
  const chk = qemuImg('check', path.join(dir, 'c.qcow2')).stdout;
  const pct = Number(/([\d.]+)% compressed clusters/.exec(chk)?.[1]);
  assert.ok(pct > 50, `qemu-img produced compressed clusters (${pct}%)`);
  const ro = await Qcow2Image.open(path.join(dir, 'c.qcow2'), { readOnly: true });
  assert.ok((await readAll(ro, 12345)).equals(model), 'compressed read');
  await ro.close();
  const rw = await Qcow2Image.open(path.join(dir, 'c.qcow2'));
  await randomOps(rw, model, prng(5), 120, { zeroes: true, concurrent: 4, maxLen: 70_000 });
  assert.ok((await readAll(rw)).equals(model));
  await rw.close();
  assertCheckClean(path.join(dir, 'c.qcow2'));
  assertSameAs(path.join(dir, 'c.qcow2'), 'qcow2', model, dir);
});

test('qcow2: zero clusters (zero flag over a backing file, with and without unmap)', async (t) => {
  const dir = tmpdir(t);
  const size = 4 * MiB;
  const base = await Qcow2Image.create(path.join(dir, 'base.qcow2'), size);
  await base.write(Buffer.alloc(size, 0x5a), 0);
  await base.close();
  const top = await Qcow2Image.create(path.join(dir, 'top.qcow2'), size, { backingFile: 'base.qcow2' });
  const model = Buffer.alloc(size, 0x5a);
  await top.write(Buffer.alloc(MiB, 0x11), MiB); // allocated in top
  model.fill(0x11, MiB, 2 * MiB);
  await top.writeZeroes(0, 256 * 1024, false); // unallocated -> zero flag
  await top.writeZeroes(MiB, 128 * 1024, false); // allocated -> zero flag keeping the cluster
  await top.writeZeroes(MiB + 256 * 1024, 128 * 1024, true); // allocated -> zero flag, cluster freed
  await top.discard(3 * MiB, 100_000); // partial clusters at the end: written as zeros
  model.fill(0, 0, 256 * 1024);
  model.fill(0, MiB, MiB + 128 * 1024);
  model.fill(0, MiB + 256 * 1024, MiB + 384 * 1024);
  model.fill(0, 3 * MiB, 3 * MiB + 100_000);
  assert.ok((await readAll(top)).equals(model));
  // writing into a zero cluster keeps the rest of it zero
  await top.write(Buffer.from('hello'), 1000);
  model.write('hello', 1000);
  assert.ok((await readAll(top)).equals(model));
  await top.close();
  assertCheckClean(path.join(dir, 'top.qcow2'));
  assertSameAs(path.join(dir, 'top.qcow2'), 'qcow2', model, dir);
  const map = JSON.parse(qemuImg('map', '--output=json', path.join(dir, 'top.qcow2')).stdout) as { start: number; zero: boolean; data: boolean; depth: number }[];
  const first = map.find((e) => e.start === 0)!;
  assert.equal(first.depth, 0, 'zero cluster is in the top layer, not read through');
});

test('qcow2: images made by qemu-img create (with and without backing) are read and written correctly', async (t) => {
  const dir = tmpdir(t);
  const size = 16 * MiB;
  const plain = path.join(dir, 'plain.qcow2');
  assert.equal(qemuImg('create', '-q', '-f', 'qcow2', plain, String(size)).status, 0);
  const m = Buffer.alloc(size);
  const a = await openImage(plain);
  assert.equal(a.format, 'qcow2');
  await randomOps(a, m, prng(9), 150, { zeroes: true, concurrent: 4 });
  await a.close();
  assertCheckClean(plain);
  assertSameAs(plain, 'qcow2', m, dir);
  // qemu writes data into it, we read it
  assert.equal(qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', '-b', 'plain.qcow2', '-F', 'qcow2', path.join(dir, 'ov.qcow2')).status, 0);
  const ioRun = (await import('node:child_process')).spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 1M 1M', '-c', 'write -z 5M 64k', path.join(dir, 'ov.qcow2')]);
  assert.equal(ioRun.status, 0, String(ioRun.stderr));
  m.fill(0x77, MiB, 2 * MiB);
  m.fill(0, 5 * MiB, 5 * MiB + 65536);
  const b = await openImage(path.join(dir, 'ov.qcow2'));
  assert.ok((await readAll(b)).equals(m), 'data written by qemu-io read back');
  await randomOps(b, m, prng(10), 100, { zeroes: true, concurrent: 4, maxLen: 20_000 });
  await b.close();
  assertCheckClean(path.join(dir, 'ov.qcow2'));
  assertSameAs(path.join(dir, 'ov.qcow2'), 'qcow2', m, dir);
});

test('qcow2: many requests in flight on the same clusters (allocation is serialized, data is right)', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'c.qcow2');
  const img = await Qcow2Image.create(file, 8 * MiB, { clusterBits: 16 });
  const model = Buffer.alloc(8 * MiB);
  // 512-byte writes scattered over few clusters, all in flight at once
  const jobs: Promise<void>[] = [];
  const rand = prng(3);
  const order = [...Array(2048).keys()].sort(() => rand(3) - 1);
  for (const k of order) {
    const off = (k % 8) * 65536 * 3 + Math.floor(k / 8) * 512;
    const b = crypto.randomBytes(512);
    b.copy(model, off);
    jobs.push(img.write(b, off));
    if (k % 5 === 0) jobs.push(img.read(Buffer.alloc(4096), (k % 2000) * 4096));
  }
  await Promise.all(jobs);
  assert.ok((await readAll(img)).equals(model));
  await img.close();
  assertCheckClean(file);
  assertSameAs(file, 'qcow2', model, dir);
});

test('qcow2: resize grows (moving the L1 table) and shrinks only when allowed', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'r.qcow2');
  const img = await Qcow2Image.create(file, 1 * MiB, { clusterBits: 9 });
  const model = Buffer.alloc(1 * MiB, 0);
  await img.write(Buffer.alloc(MiB, 3), 0);
  model.fill(3);
  await img.resize(20 * MiB); // L1 of 1 MiB image fits one cluster; 20 MiB needs 10
  const grown = Buffer.concat([model, Buffer.alloc(19 * MiB)]);
  await img.write(Buffer.alloc(1000, 9), 19 * MiB);
  grown.fill(9, 19 * MiB, 19 * MiB + 1000);
  assert.ok((await readAll(img)).equals(grown));
  await assert.rejects(img.resize(MiB), /allowShrink/);
  await img.resize(MiB / 2 + 100, { allowShrink: true });
  assert.equal(img.size, MiB / 2 + 100);
  await img.resize(2 * MiB); // the tail comes back as zeros
  const expect = Buffer.alloc(2 * MiB);
  expect.fill(3, 0, MiB / 2 + 100);
  assert.ok((await readAll(img)).equals(expect));
  await img.close();
  assertCheckClean(file);
  assertSameAs(file, 'qcow2', expect, dir);
});

test('qcow2: growing an overlay does not expose the bigger backing file past the old end', async (t) => {
  const dir = tmpdir(t);
  const base = await Qcow2Image.create(path.join(dir, 'b.qcow2'), 4 * MiB);
  await base.write(Buffer.alloc(4 * MiB, 0xee), 0);
  await base.close();
  const top = await Qcow2Image.create(path.join(dir, 't.qcow2'), 1 * MiB + 4096, { backingFile: 'b.qcow2' });
  await top.resize(4 * MiB);
  const expect = Buffer.alloc(4 * MiB);
  expect.fill(0xee, 0, MiB + 4096);
  assert.ok((await readAll(top)).equals(expect));
  // shrink, then grow again: the cut-off part comes back as zeros, not backing data
  await top.resize(512 * 1024 + 512, { allowShrink: true });
  await top.resize(3 * MiB);
  const expect2 = Buffer.alloc(3 * MiB);
  expect2.fill(0xee, 0, 512 * 1024 + 512);
  assert.ok((await readAll(top)).equals(expect2));
  await top.close();
  assertCheckClean(path.join(dir, 't.qcow2'));
  assertSameAs(path.join(dir, 't.qcow2'), 'qcow2', expect2, dir);
});

test('qcow2: refuses unknown incompatible features, dirty/corrupt images for writing, loops, bad input', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'f.qcow2');
  await (await Qcow2Image.create(file, MiB)).close();
  const patch = (name: string, off: number, bytes: number[]): string => {
    const p = path.join(dir, name);
    const b = fs.readFileSync(file);
    Buffer.from(bytes).copy(b, off);
    fs.writeFileSync(p, b);
    return p;
  };
  await assert.rejects(Qcow2Image.open(patch('unknown.qcow2', 72, [0, 0, 0, 0, 0, 0, 0, 0x20])), /unsupported incompatible feature bit 5/);
  await assert.rejects(Qcow2Image.open(patch('extl2.qcow2', 72, [0, 0, 0, 0, 0, 0, 0, 0x10])), /extended L2 entries/);
  const dirty = patch('dirty.qcow2', 72, [0, 0, 0, 0, 0, 0, 0, 1]);
  await assert.rejects(Qcow2Image.open(dirty), /dirty/);
  await (await Qcow2Image.open(dirty, { readOnly: true })).close();
  await assert.rejects(Qcow2Image.open(patch('corrupt.qcow2', 72, [0, 0, 0, 0, 0, 0, 0, 2])), /corrupt/);
  await assert.rejects(Qcow2Image.open(patch('v4.qcow2', 4, [0, 0, 0, 4])), /version 4/);
  await assert.rejects(Qcow2Image.open(patch('crypt.qcow2', 32, [0, 0, 0, 2])), /encrypted/);
  await assert.rejects(Qcow2Image.open(patch('l1huge.qcow2', 36, [0x7f, 0, 0, 0])), /L1 table size .* absurd/);
  await assert.rejects(Qcow2Image.open(patch('l1eof.qcow2', 40, [0, 0, 0, 1, 0, 0, 0, 0])), /past the end/);
  await assert.rejects(Qcow2Image.open(patch('l1unal.qcow2', 40, [0, 0, 0, 0, 0, 0, 2, 0])), /not cluster aligned/);
  // a loop a -> b -> a
  const a = path.join(dir, 'a.qcow2');
  const b = path.join(dir, 'b.qcow2');
  await (await Qcow2Image.create(path.join(dir, "seed.qcow2"), MiB)).close();
  await (await Qcow2Image.create(a, MiB, { backingFile: 'seed.qcow2' })).close();
  await (await Qcow2Image.create(b, MiB, { backingFile: 'a.qcow2' })).close();
  assert.equal(qemuImg('rebase', '-u', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', a).status, 0);
  await assert.rejects(Qcow2Image.open(b), (e: unknown) => e instanceof ImageError && /loops/.test(e.message));
  await assert.rejects(Qcow2Image.open(path.join(dir, 'missing.qcow2')), ImageError);
  fs.writeFileSync(path.join(dir, 'short.qcow2'), Buffer.from('QFI\xfb', 'latin1'));
  await assert.rejects(Qcow2Image.open(path.join(dir, 'short.qcow2')), ImageError);
});

test('qcow2: a used cluster with refcount 0 or overlapping metadata is refused for writing', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'x.qcow2');
  const img = await Qcow2Image.create(file, 4 * MiB);
  await img.write(Buffer.alloc(65536, 1), 0);
  await img.close();
  // Find the data cluster through qemu-img map and zero its refcount.
  const map = JSON.parse(qemuImg('map', '--output=json', file).stdout) as { start: number; offset?: number }[];
  const host = map.find((e) => e.start === 0)!.offset!;
  const buf = fs.readFileSync(file);
  const rtOff = Number(buf.readBigUInt64BE(48));
  const rb = Number(buf.readBigUInt64BE(rtOff));
  buf.writeUInt16BE(0, rb + (host / 65536) * 2);
  const bad = path.join(dir, 'bad.qcow2');
  fs.writeFileSync(bad, buf);
  await assert.rejects(Qcow2Image.open(bad), /refcount is 0/);
  const ro = await Qcow2Image.open(bad, { readOnly: true }); // reading needs no refcounts
  const b = Buffer.alloc(16);
  await ro.read(b, 0);
  assert.equal(b[0], 1);
  await ro.close();
  // L2 entry pointing at the L1 table
  const l1 = Number(buf.readBigUInt64BE(40));
  const l2 = Number(buf.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  const buf2 = fs.readFileSync(file);
  buf2.writeBigUInt64BE(0x8000000000000000n | BigInt(l1), l2);
  fs.writeFileSync(bad, buf2);
  const ro2 = await Qcow2Image.open(bad, { readOnly: true });
  await assert.rejects(ro2.read(Buffer.alloc(512), 0), /overlaps/);
  await ro2.close();
});

test('qcow2: every refcount width (1..64 bits), ours and qemu-img\'s, and version 2 images', async (t) => {
  const dir = tmpdir(t);
  const size = 3 * MiB;
  for (const order of [0, 3, 5, 6]) {
    const file = path.join(dir, `o${order}.qcow2`);
    const img = await Qcow2Image.create(file, size, { clusterBits: 10, refcountOrder: order });
    const model = Buffer.alloc(size);
    await randomOps(img, model, prng(order + 100), 80, { zeroes: true, concurrent: 4, maxLen: 40_000 });
    await img.close();
    assertCheckClean(file);
    assertSameAs(file, 'qcow2', model, dir);
  }
  for (const opts of ['refcount_bits=1,cluster_size=4096', 'refcount_bits=64', 'compat=0.10', 'compat=0.10,cluster_size=1024', 'lazy_refcounts=on', 'preallocation=metadata', 'preallocation=falloc,cluster_size=16384']) {
    const file = path.join(dir, `q-${opts.replace(/[=,.]/g, '_')}.qcow2`);
    assert.equal(qemuImg('create', '-q', '-f', 'qcow2', '-o', opts, file, String(size)).status, 0);
    const img = await Qcow2Image.open(file);
    const model = Buffer.alloc(size);
    await randomOps(img, model, prng(opts.length), 80, { zeroes: true, concurrent: 4, maxLen: 40_000 });
    assert.ok((await readAll(img)).equals(model), opts);
    await img.close();
    assertCheckClean(file);
    assertSameAs(file, 'qcow2', model, dir);
  }
});

test('qcow2: discarded clusters are reused after flush and the file does not grow', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'reuse.qcow2');
  const img = await Qcow2Image.create(file, 32 * MiB);
  for (let round = 0; round < 5; round++) {
    await img.write(Buffer.alloc(8 * MiB, round + 1), round * MiB);
    await img.discard(round * MiB, 8 * MiB);
    await img.flush();
  }
  await img.write(Buffer.alloc(8 * MiB, 9), 0);
  await img.close();
  assertCheckClean(file);
  const st = fs.statSync(file);
  assert.ok(st.size < 10 * MiB, `file size ${st.size} stays near 8 MiB of data`);
  const model = Buffer.alloc(32 * MiB);
  model.fill(9, 0, 8 * MiB);
  assertSameAs(file, 'qcow2', model, dir);
});

/** `buf` cut into 1..4 pieces at random points (vectored I/O as the block backend issues it). */
function pieces(buf: Buffer, rand: (n: number) => number): Buffer[] {
  const cuts = [...new Set(Array.from({ length: rand(4) }, () => rand(buf.length)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let o = 0;
  for (const c of [...cuts, buf.length]) {
    out.push(buf.subarray(o, c));
    o = c;
  }
  return out;
}

for (const [cb, cache, vectored] of [[12, undefined, false], [9, 2048, false], [12, undefined, true]] as const) {
test(`qcow2: stress (cluster_bits ${cb}, L2 cache ${cache ?? 'default'}${vectored ? ', readv/writev with inline I/O' : ''}) — 16 requests in flight sharing clusters, flushes, racing reads`, async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 's.qcow2');
  const base = path.join(dir, 'sb.qcow2');
  const size = 4 * MiB;
  const b = await Qcow2Image.create(base, size, { clusterBits: 12 });
  const model = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4096) model.fill((i >> 12) & 0xff, i, i + 4096);
  await b.write(model, 0);
  await b.close();
  await (await Qcow2Image.create(file, size, { clusterBits: cb, backingFile: 'sb.qcow2' })).close();
  const img = await Qcow2Image.open(file, { l2CacheBytes: cache, inlineIo: vectored });
  const rand = prng(77);
  for (let round = 0; round < 60; round++) {
    const jobs: Promise<void>[] = [];
    const used: [number, number][] = [];
    for (let k = 0; k < 16; k++) {
      const len = 1 + rand(20_000);
      const off = rand(size - len);
      if (used.some(([a, e]) => off < e && a < off + len)) continue;
      used.push([off, off + len]);
      const op = rand(6);
      if (op === 0) {
        jobs.push(img.discard(off, len));
        model.fill(0, off, off + len);
      } else if (op === 1) {
        jobs.push(img.writeZeroes(off, len, rand(2) === 0));
        model.fill(0, off, off + len);
      } else {
        const data = Buffer.alloc(len, rand(256));
        data.copy(model, off);
        jobs.push(vectored ? img.writev(pieces(data, rand), off) : img.write(data, off));
      }
    }
    // reads of untouched ranges must see the model while the others run
    for (let k = 0; k < 4; k++) {
      const len = 1 + rand(8000);
      const off = rand(size - len);
      if (used.some(([a, e]) => off < e && a < off + len)) continue;
      const expect = Buffer.from(model.subarray(off, off + len));
      const got = Buffer.alloc(len);
      const read = vectored ? img.readv(pieces(got, rand), off) : img.read(got, off);
      jobs.push(read.then(() => assert.ok(got.equals(expect), `racing read at ${off}+${len} in round ${round}`)));
    }
    if (rand(3) === 0) jobs.push(img.flush());
    await Promise.all(jobs);
  }
  assert.ok((await readAll(img)).equals(model));
  await img.close();
  assertCheckClean(file);
  assertSameAs(file, 'qcow2', model, dir);
});
}

test('qcow2: huge virtual size (4 TiB): writes at the far end, multi-cluster L1', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'big.qcow2');
  const size = 4 * 2 ** 40;
  const img = await Qcow2Image.create(file, size);
  const data = Buffer.alloc(200_000, 0x3c);
  await img.write(data, size - data.length);
  await img.write(data, 2 ** 40 + 12345);
  const back = Buffer.alloc(data.length);
  await img.read(back, size - data.length);
  assert.ok(back.equals(data));
  await img.close();
  assertCheckClean(file);
  assert.ok(fs.statSync(file).size < 4 * MiB);
  const again = await Qcow2Image.open(file, { readOnly: true });
  await again.read(back, 2 ** 40 + 12345);
  assert.ok(back.equals(data));
  await again.close();
});

test('images: one read-write user at a time (flock); readers are not blocked', async (t) => {
  const dir = tmpdir(t);
  const q = path.join(dir, 'l.qcow2');
  const r = path.join(dir, 'l.raw');
  const a = await Qcow2Image.create(q, MiB);
  const b = await RawImage.create(r, MiB);
  await assert.rejects(Qcow2Image.open(q), /in use by another writer/);
  await assert.rejects(RawImage.open(r), /in use by another writer/);
  const ro = await openImage(q, { readOnly: true });
  await ro.read(Buffer.alloc(512), 0);
  await ro.close();
  await a.close();
  await b.close();
  await (await Qcow2Image.open(q)).close();
  await (await RawImage.open(r)).close();
});

test('qcow2: writes into a preallocated image (zero clusters that keep their allocation) stay in place', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'pre.qcow2');
  assert.equal(qemuImg('create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', file, String(8 * MiB)).status, 0);
  const before = fs.statSync(file).size;
  const img = await Qcow2Image.open(file);
  const model = Buffer.alloc(8 * MiB);
  await img.writeZeroes(0, 8 * MiB, false); // zero flag, allocation kept
  await randomOps(img, model, prng(31), 60, { concurrent: 4, maxLen: 50_000 });
  assert.ok((await readAll(img)).equals(model));
  await img.close();
  assert.equal(fs.statSync(file).size, before, 'no new clusters were needed');
  assertCheckClean(file);
  assertSameAs(file, 'qcow2', model, dir);
});

test('qcow2: one vectored request over in-place, fresh, punched-and-reused, zero-flag and copy-on-write clusters, repeated with odd pieces', async (t) => {
  const dir = tmpdir(t);
  const cs = 4096;
  const size = 256 * cs;
  const base = path.join(dir, 'mix-base.qcow2');
  const file = path.join(dir, 'mix.qcow2');
  const b = await Qcow2Image.create(base, size, { clusterBits: 12 });
  const model = Buffer.alloc(size);
  for (let i = 0; i < size; i += cs) model.fill(0x40 + ((i / cs) % 64), i, i + cs);
  await b.write(model, 0);
  await b.close();
  const img = await Qcow2Image.create(file, size, { clusterBits: 12, backingFile: 'mix-base.qcow2', backingFormat: 'qcow2' });
  const rand = prng(77);
  const put = async (bufs: Buffer[], off: number): Promise<void> => {
    await img.writev(bufs, off);
    Buffer.concat(bufs).copy(model, off);
  };
  // Guest clusters 2 and 5 allocated (in place later); 8..11 allocated, then
  // discarded: zero flags over the backing file, their host clusters freed
  // and punched at the flush (known zeros when reserved again).
  await put([crypto.randomBytes(cs)], 2 * cs);
  await put([crypto.randomBytes(cs)], 5 * cs);
  await put([crypto.randomBytes(4 * cs)], 8 * cs);
  await img.discard(8 * cs, 4 * cs);
  model.fill(0, 8 * cs, 12 * cs);
  await img.flush();
  // Starts mid cluster 1 (copy-on-write from the backing file), ends mid
  // cluster 10 (a zero-flag cluster: only the new bytes on a zero host cluster).
  const start = cs + 1000;
  const len = 9 * cs + 123 - 1000;
  for (let round = 0; round < 3; round++) {
    const data = crypto.randomBytes(len);
    await put(pieces(data, rand), start + round * 17 * cs);
  }
  // Partial writes over unallocated clusters (copy-on-write at both ends) and into a zero-flag cluster.
  await put(pieces(crypto.randomBytes(3 * cs), rand), 100 * cs + 512);
  await put([Buffer.alloc(700, 9)], 11 * cs + 3000);
  assert.ok((await readAll(img)).equals(model), 'read back equals model');
  const r = Buffer.alloc(len);
  await img.readv(pieces(r, rand), start);
  assert.ok(r.equals(model.subarray(start, start + len)), 'vectored read of the mixed range');
  await img.close();
  assertCheckClean(file);
  assertSameAs(file, 'qcow2', model, dir);
});

test('qcow2: corruption met while running marks the image corrupt and refuses further writes', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'm.qcow2');
  const img = await Qcow2Image.create(file, 4 * MiB);
  await img.write(Buffer.alloc(65536, 1), 0);
  await img.close();
  // point guest cluster 0 at the refcount table
  const buf = fs.readFileSync(file);
  const l1 = Number(buf.readBigUInt64BE(40));
  const l2 = Number(buf.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  buf.writeBigUInt64BE(0x8000000000000000n | buf.readBigUInt64BE(48), l2);
  fs.writeFileSync(file, buf);
  const rw = await Qcow2Image.open(file, { check: false }); // skip the open-time scan
  await assert.rejects(rw.write(Buffer.alloc(512, 2), 0), /corrupt image: .*overlaps/);
  await assert.rejects(rw.write(Buffer.alloc(512, 2), 65536), /marked corrupt/);
  await rw.close();
  assert.match(qemuImg('info', file).stdout, /corrupt: true/);
  await assert.rejects(Qcow2Image.open(file), /marked corrupt/);
  await (await Qcow2Image.open(file, { readOnly: true })).close();
});
