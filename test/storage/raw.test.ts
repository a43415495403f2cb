import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { RawImage } from '../../src/storage/raw.js';
import { ImageError } from '../../src/storage/image.js';
import { assertCheckClean, prng, randomOps, readAll, tmpdir } from './helpers.js';

test('raw: create is sparse, random writes/zeroes/discards match a model', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'disk.raw');
  const img = await RawImage.create(file, 32 << 20);
  assert.equal(img.size, 32 << 20);
  assert.ok(fs.statSync(file).blocks * 512 < 1 << 20, 'new raw file is sparse');
  const model = Buffer.alloc(img.size);
  await randomOps(img, model, prng(7), 300, { zeroes: true, concurrent: 8 });
  await img.flush();
  assert.ok((await readAll(img)).equals(model));
  await img.close();
  assert.ok(fs.readFileSync(file).equals(model));
});

test('raw: discard punches a hole; bounds and read-only are enforced', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'disk.raw');
  const img = await RawImage.create(file, 8 << 20);
  await img.write(Buffer.alloc(4 << 20, 0xab), 0);
  await img.flush();
  const before = await img.allocatedBytes();
  await img.discard(0, 4 << 20);
  assert.ok((await img.allocatedBytes()) < before, 'discard released blocks');
  const b = Buffer.alloc(4096, 1);
  await img.read(b, 4096);
  assert.ok(b.every((x) => x === 0));
  await assert.rejects(img.read(Buffer.alloc(2), (8 << 20) - 1), ImageError);
  await assert.rejects(img.write(Buffer.alloc(1), -1), ImageError);
  await img.close();
  const ro = await RawImage.open(file, { readOnly: true });
  await assert.rejects(ro.write(Buffer.alloc(1), 0), /read-only/);
  await ro.close();
  await assert.rejects(RawImage.create(file, 1), ImageError, 'create refuses to overwrite');
  await assert.rejects(RawImage.open(path.join(dir, 'nope')), ImageError);
});

test('raw and qcow2: vectored reads and writes (readv/writev) for the block backend', async (t) => {
  const dir = tmpdir(t);
  const { Qcow2Image } = await import('../../src/storage/qcow2.js');
  const imgs = [await RawImage.create(path.join(dir, 'v.raw'), 4 << 20), await Qcow2Image.create(path.join(dir, 'v.qcow2'), 4 << 20, { clusterBits: 12 })];
  for (const img of imgs) {
    const segs = [Buffer.alloc(100, 1), Buffer.alloc(5000, 2), Buffer.alloc(0), Buffer.alloc(70_000, 3)];
    await img.writev(segs, 12345);
    const out = [Buffer.alloc(6000), Buffer.alloc(69_100)];
    await img.readv(out, 12345);
    assert.ok(Buffer.concat(out).equals(Buffer.concat(segs)), img.format);
    await assert.rejects(img.readv([Buffer.alloc(10)], (4 << 20) - 5), ImageError);
    await img.close();
  }
});

test('FileIo.writev: writes of more than WRITE_CHUNK go out in pieces, byte for byte (inline and pooled)', async (t) => {
  const { FileIo, splitBufs, WRITE_CHUNK } = await import('../../src/storage/io.js');
  // splitBufs: never more than `max` bytes in front, nothing lost or reordered.
  const bufs = [Buffer.alloc(3, 1), Buffer.alloc(10, 2), Buffer.alloc(0), Buffer.alloc(7, 3)];
  for (const max of [1, 3, 4, 13, 14, 20, 100]) {
    const [head, rest] = splitBufs(bufs, max);
    const h = Buffer.concat(head);
    assert.ok(h.length >= 1 && h.length <= max, `max ${max}: head of ${h.length}`);
    assert.ok(Buffer.concat([h, ...rest]).equals(Buffer.concat(bufs)), `max ${max}`);
  }
  const dir = tmpdir(t);
  for (const inline of [true, false]) {
    const file = path.join(dir, `chunks-${inline}.raw`);
    fs.writeFileSync(file, Buffer.alloc(0));
    const fd = fs.openSync(file, 'r+');
    const io = new FileIo(fd, inline);
    // 1 MiB + a bit in 4 KiB pages plus odd-sized pieces, at an unaligned offset.
    const r = prng(11);
    const segs: Buffer[] = [];
    for (let i = 0; i < 300; i++) segs.push(Buffer.from(Array.from({ length: i % 7 === 0 ? 1000 : 4096 }, () => r(256))));
    const all = Buffer.concat(segs);
    assert.ok(all.length > 4 * WRITE_CHUNK);
    await io.writev(segs, 777);
    const back = fs.readFileSync(file);
    assert.equal(back.length, 777 + all.length);
    assert.ok(back.subarray(777).equals(all));
    assert.ok(io.stats.inlineWrites + io.stats.poolWrites >= Math.ceil(all.length / WRITE_CHUNK), 'one system call per chunk at least');
    fs.closeSync(fd);
  }
});

test('FileIo spans (memory by address) and buffers: neighbours joined into one iovec, more pieces than IOV_MAX, end of file, thread-pool fallback', async (t) => {
  const { FileIo } = await import('../../src/storage/io.js');
  const { addressOf, IOV_MAX } = await import('../../src/sys/uio.js');
  const dir = tmpdir(t);
  const r = prng(5);
  // Pieces of one big buffer: runs of neighbours (joined), gaps, odd sizes,
  // and a tail of more tiny pieces than one preadv/pwritev takes.
  const mem = Buffer.alloc(4 << 20);
  const pieces: Buffer[] = [];
  let at = 0;
  for (let i = 0; i < 200; i++) {
    const len = i % 9 === 0 ? 1 + r(5000) : 4096;
    if (i % 4 === 0) at += 512 * (1 + r(4)); // a gap: not joined to the previous piece
    pieces.push(mem.subarray(at, at + len));
    at += len;
  }
  for (let i = 0; i < IOV_MAX + 300; i++) {
    pieces.push(mem.subarray(at, at + 8));
    at += 16; // never adjacent
  }
  const span = (b: Buffer) => ({ addr: addressOf(b), byteLength: b.length, buf: b });
  const spans = pieces.map(span);
  const total = pieces.reduce((n, b) => n + b.length, 0);
  for (const inline of [true, false]) {
    for (const bySpan of [true, false]) {
      const file = path.join(dir, `spans-${inline}-${bySpan}.raw`);
      fs.writeFileSync(file, Buffer.alloc(0));
      const fd = fs.openSync(file, 'r+');
      const io = new FileIo(fd, inline);
      for (const p of pieces) for (let k = 0; k < p.length; k++) p[k] = r(256);
      const want = Buffer.concat(pieces);
      if (bySpan) await io.writeSpans(spans, 333);
      else await io.writev(pieces, 333);
      assert.ok(fs.readFileSync(file).subarray(333).equals(want), `written bytes (inline ${inline}, spans ${bySpan})`);
      for (const p of pieces) p.fill(0xee);
      const n = bySpan ? await io.readSpans(spans, 333) : await io.readv(pieces, 333);
      assert.equal(n, total);
      assert.ok(Buffer.concat(pieces).equals(want), `read back (inline ${inline}, spans ${bySpan})`);
      // Past the end of the file: a short count, the rest untouched.
      for (const p of pieces) p.fill(0xee);
      const short = bySpan ? await io.readSpans(spans, 333 + total - 100) : await io.readv(pieces, 333 + total - 100);
      assert.equal(short, 100);
      assert.ok(Buffer.concat(pieces).subarray(0, 100).equals(want.subarray(total - 100)));
      assert.equal(Buffer.concat(pieces)[100], 0xee);
      if (inline) assert.ok(io.stats.inlineReads > 0 && io.stats.inlineWrites > 0, 'served on the calling thread');
      else assert.ok(io.stats.poolReads > 0 && io.stats.poolWrites > 0, 'served by the thread pool');
      fs.closeSync(fd);
    }
  }
});

test('raw and qcow2: spans of memory by address (readSpans/writeSpans) agree with a model, on fresh, allocated, discarded and out-of-range areas', async (t) => {
  const dir = tmpdir(t);
  const { Qcow2Image } = await import('../../src/storage/qcow2.js');
  const { addressOf } = await import('../../src/sys/uio.js');
  const size = 4 << 20;
  const imgs = [
    await RawImage.create(path.join(dir, 's.raw'), size),
    await Qcow2Image.create(path.join(dir, 's.qcow2'), size, { clusterBits: 12 }),
    await Qcow2Image.create(path.join(dir, 's64.qcow2'), size),
  ];
  for (const img of imgs) {
    const r = prng(21);
    const model = Buffer.alloc(size);
    // Pieces of one buffer, some neighbours, some not: what a guest request looks like.
    const mem = Buffer.alloc(1 << 20);
    const spansOf = (lens: number[]) => {
      let at = 0;
      return lens.map((len, i) => {
        if (i % 3 === 2) at += 4096; // not adjacent to the previous piece
        const b = mem.subarray(at, at + len);
        at += len;
        return { addr: addressOf(b), byteLength: len, buf: b };
      });
    };
    for (let round = 0; round < 40; round++) {
      const lens = Array.from({ length: 1 + r(12) }, () => 512 * (1 + r(16)));
      const total = lens.reduce((a, b) => a + b, 0);
      const offset = 512 * r((size - total) / 512);
      const spans = spansOf(lens);
      const op = r(4);
      if (op <= 1) {
        for (const s of spans) for (let k = 0; k < s.byteLength; k++) s.buf[k] = r(256);
        await img.writeSpans(spans, offset);
        Buffer.concat(spans.map((s) => s.buf)).copy(model, offset);
      } else if (op === 2) {
        await img.discard(offset, total);
        model.fill(0, offset, offset + total);
      }
      for (const s of spans) s.buf.fill(0xee);
      await img.readSpans(spans, offset);
      assert.ok(Buffer.concat(spans.map((s) => s.buf)).equals(model.subarray(offset, offset + total)), `${img.format} round ${round}`);
    }
    const one = spansOf([4096]);
    await assert.rejects(img.readSpans(one, size - 512), ImageError);
    await assert.rejects(img.writeSpans(one, size - 512), ImageError);
    await img.close();
  }
  assertCheckClean(path.join(dir, 's.qcow2'));
  assertCheckClean(path.join(dir, 's64.qcow2'));
});
