// The virtio-blk device over synthetic guest memory and a real raw file:
// every request type, read-only refusal, hostile requests, out-of-order
// completion. No QEMU needed (the guest tests are in qemu.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Vring, type VringHost } from '../../src/vhost/index.js';
import { BlkDevice } from '../../src/devices/blk/device.js';
import { RawImage } from '../../src/storage/raw.js';
import { S_IOERR, S_OK, S_UNSUPP, T_DISCARD, T_FLUSH, T_GET_ID, T_IN, T_OUT, T_WRITE_ZEROES } from '../../src/devices/blk/request.js';
import type { BlockImage } from '../../src/storage/image.js';
import { layout, NEXT, WRITE, INDIRECT, writeDesc, pushAvail, usedIdx, usedElem, view, type Layout } from '../vhost/helpers.js';

const DISK = 1 << 20;

interface Rig {
  l: Layout;
  ring: Vring;
  dev: BlkDevice;
  file: string;
  image: RawImage;
  warnings: string[];
  nextDesc: number;
  nextBuf: number;
  done(): void;
}

async function rig(opts: { readOnly?: boolean; image?: (img: RawImage) => BlockImage } = {}): Promise<Rig> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-blkdev-'));
  const file = path.join(dir, 'disk.raw');
  const content = Buffer.alloc(DISK);
  for (let i = 0; i < DISK; i += 4) content.writeUInt32LE(i, i);
  fs.writeFileSync(file, content);
  const image = await RawImage.open(file, { inlineIo: true });
  const l = layout(64);
  const warnings: string[] = [];
  const dev = new BlkDevice({ image: opts.image ? opts.image(image) : image, numQueues: 1, readOnly: opts.readOnly, serial: 'SERIAL-123', log: (m) => warnings.push(m) });
  const host: VringHost = {
    memory: l.mem,
    log: null,
    logging: false,
    eventIdx: false,
    process: (r) => dev.processQueue(r),
    warn: (m) => warnings.push(m),
    onIdle: () => undefined,
  };
  const ring = new Vring(0, host);
  ring.num = 64;
  ring.addrs = { flags: 0, desc: l.desc, avail: l.avail, used: l.used, log: 0 };
  ring.enabled = true;
  ring.start(-1);
  return {
    l, ring, dev, file, image, warnings, nextDesc: 0, nextBuf: l.data,
    done() {
      void image.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function alloc(r: Rig, len: number): number {
  const a = r.nextBuf;
  r.nextBuf += Math.ceil(Math.max(len, 1) / 64) * 64;
  return a;
}

interface Built {
  head: number;
  data: number;
  status: number;
}

/** Put a request in the ring: header (readable), data (either way), status. */
function submit(r: Rig, type: number, sector: number, data: { len: number; write?: boolean; fill?: number } | Buffer | null): Built {
  const hdr = alloc(r, 16);
  const h = view(r.l, hdr, 16);
  h.writeUInt32LE(type, 0);
  h.writeBigUInt64LE(BigInt(sector), 8);
  const descs: [number, number, number][] = [[hdr, 16, 0]];
  let dataAddr = 0;
  if (Buffer.isBuffer(data)) {
    dataAddr = alloc(r, data.length);
    data.copy(view(r.l, dataAddr, data.length));
    descs.push([dataAddr, data.length, 0]);
  } else if (data) {
    dataAddr = alloc(r, data.len);
    view(r.l, dataAddr, data.len).fill(data.fill ?? 0);
    descs.push([dataAddr, data.len, data.write ? WRITE : 0]);
  }
  const status = alloc(r, 1);
  view(r.l, status, 1)[0] = 0xff;
  descs.push([status, 1, WRITE]);
  const head = r.nextDesc;
  descs.forEach(([a, len, f], i) => writeDesc(r.l, r.l.desc, head + i, a, len, f | (i < descs.length - 1 ? NEXT : 0), head + i + 1));
  r.nextDesc += descs.length;
  pushAvail(r.l, head);
  return { head, data: dataAddr, status };
}

async function kick(r: Rig, expectUsed: number): Promise<void> {
  r.ring.run();
  const t0 = Date.now();
  while (usedIdx(r.l) < expectUsed) {
    if (Date.now() - t0 > 20_000) throw new Error(`used index stuck at ${usedIdx(r.l)}, want ${expectUsed}`);
    await new Promise((res) => setTimeout(res, 2));
  }
}

const st = (r: Rig, b: Built) => view(r.l, b.status, 1)[0];

test('read, write, flush, get-id, discard, write-zeroes', async () => {
  const r = await rig();
  try {
    const pattern = Buffer.alloc(4096, 0xab);
    const w = submit(r, T_OUT, 16, pattern);
    await kick(r, 1);
    assert.equal(st(r, w), S_OK);
    assert.deepEqual(usedElem(r.l, 0), { id: w.head, len: 1 });
    const rd = submit(r, T_IN, 16, { len: 4096, write: true });
    const rd2 = submit(r, T_IN, 0, { len: 512, write: true });
    await kick(r, 3);
    assert.equal(st(r, rd), S_OK);
    assert.deepEqual(view(r.l, rd.data, 4096), pattern);
    assert.equal(view(r.l, rd2.data, 512).readUInt32LE(256), 256, 'read of the original content');
    const lens = [usedElem(r.l, 1), usedElem(r.l, 2)].find((e) => e.id === rd.head)!.len;
    assert.equal(lens, 4097, 'used length = data + status');
    assert.deepEqual(fs.readFileSync(r.file).subarray(16 * 512, 16 * 512 + 4096), pattern);

    const f = submit(r, T_FLUSH, 0, null);
    const id = submit(r, T_GET_ID, 0, { len: 20, write: true });
    await kick(r, 5);
    assert.equal(st(r, f), S_OK);
    assert.equal(st(r, id), S_OK);
    assert.equal(view(r.l, id.data, 20).toString('latin1').replace(/\0+$/, ''), 'SERIAL-123');

    const range = (sector: number, n: number, flags: number) => {
      const b = Buffer.alloc(16);
      b.writeBigUInt64LE(BigInt(sector), 0);
      b.writeUInt32LE(n, 8);
      b.writeUInt32LE(flags, 12);
      return b;
    };
    const d = submit(r, T_DISCARD, 0, range(16, 8, 0));
    const z = submit(r, T_WRITE_ZEROES, 0, range(100, 2, 1));
    const bad = submit(r, T_DISCARD, 0, range(16, 8, 1));
    await kick(r, 8);
    assert.equal(st(r, d), S_OK);
    assert.equal(st(r, z), S_OK);
    assert.equal(st(r, bad), S_UNSUPP, 'discard with the unmap flag');
    const disk = fs.readFileSync(r.file);
    assert.ok(disk.subarray(16 * 512, 24 * 512).every((x) => x === 0));
    assert.ok(disk.subarray(100 * 512, 102 * 512).every((x) => x === 0));
    assert.equal(disk.readUInt32LE(102 * 512), 102 * 512);
    const m = r.dev.metrics;
    assert.equal(m.readRequests, 2);
    assert.equal(m.writeRequests, 1);
    assert.equal(m.discardRequests, 1);
    assert.equal(m.writeZeroesRequests, 1);
    assert.equal(m.unsupportedRequests, 1);
  } finally {
    r.done();
  }
});

test('malformed requests get an error status, never touch the disk', async () => {
  const r = await rig();
  try {
    const before = fs.readFileSync(r.file);
    const cases = [
      submit(r, T_IN, DISK / 512, { len: 512, write: true }), // past the end
      submit(r, T_IN, DISK / 512 - 1, { len: 1024, write: true }), // runs past the end
      submit(r, T_OUT, 0, Buffer.alloc(100)), // not a multiple of 512
      submit(r, T_OUT, 2 ** 52, Buffer.alloc(512)), // absurd sector
      submit(r, T_IN, 0, { len: 512, write: false }), // read with readable data
      submit(r, T_OUT, 0, { len: 512, write: true }), // write with writable data
    ];
    const unsupp = submit(r, 99, 0, null);
    await kick(r, cases.length + 1);
    for (const c of cases) assert.equal(st(r, c), S_IOERR);
    assert.equal(st(r, unsupp), S_UNSUPP);
    assert.deepEqual(fs.readFileSync(r.file), before);
    assert.equal(r.dev.metrics.invalidRequests, cases.length);
  } finally {
    r.done();
  }
});

test('a read-only disk refuses writes, discards and write-zeroes with IOERR', async () => {
  const r = await rig({ readOnly: true });
  try {
    const before = fs.readFileSync(r.file);
    const w = submit(r, T_OUT, 0, Buffer.alloc(512, 1));
    const d = submit(r, T_DISCARD, 0, Buffer.alloc(16));
    const z = submit(r, T_WRITE_ZEROES, 0, Buffer.alloc(16));
    const rd = submit(r, T_IN, 0, { len: 512, write: true });
    await kick(r, 4);
    assert.equal(st(r, w), S_IOERR);
    assert.equal(st(r, d), S_IOERR);
    assert.equal(st(r, z), S_IOERR);
    assert.equal(st(r, rd), S_OK);
    assert.deepEqual(fs.readFileSync(r.file), before);
    assert.ok(r.dev.features & (1n << 5n), 'VIRTIO_BLK_F_RO offered');
  } finally {
    r.done();
  }
});

test('hostile chains: error status where possible, the ring keeps working', async () => {
  const r = await rig();
  try {
    const l = r.l;
    // 1. a loop: header → status(write) → header …
    const hdr = alloc(r, 16);
    const status = alloc(r, 1);
    view(l, status, 1)[0] = 0xff;
    writeDesc(l, l.desc, 60, hdr, 16, NEXT, 61);
    writeDesc(l, l.desc, 61, status, 1, NEXT | WRITE, 60);
    pushAvail(l, 60);
    // 2. data pointing outside guest memory
    writeDesc(l, l.desc, 62, hdr, 16, NEXT, 63);
    writeDesc(l, l.desc, 63, 0x10, 512, WRITE);
    pushAvail(l, 62);
    // 3. no writable byte at all
    writeDesc(l, l.desc, 59, hdr, 16, 0);
    pushAvail(l, 59);
    // 4. an indirect table pointing at itself
    const t = alloc(r, 32);
    writeDesc(l, t, 0, t, 32, INDIRECT);
    writeDesc(l, l.desc, 58, t, 32, INDIRECT);
    pushAvail(l, 58);
    await kick(r, 4);
    assert.equal(view(l, status, 1)[0], S_IOERR, 'the looping chain got IOERR in its status byte');
    const used = [0, 1, 2, 3].map((i) => usedElem(l, i).id).sort();
    assert.deepEqual(used, [58, 59, 60, 62]);
    assert.equal(r.ring.stats.badChains, 3);
    // and a good request still works afterwards
    const ok = submit(r, T_IN, 0, { len: 512, write: true });
    await kick(r, 5);
    assert.equal(st(r, ok), S_OK);
    // a head ≥ queue size breaks the ring (and only that): no crash, no spin
    pushAvail(l, 1000);
    r.ring.run();
    assert.equal(r.ring.broken, true);
    assert.equal(r.ring.stats.ringErrors, 1);
  } finally {
    r.done();
  }
});

test('requests complete out of order as their I/O finishes', async () => {
  let release: (() => void) | null = null;
  const r = await rig({
    image: (img) => ({
      size: img.size,
      format: img.format,
      readOnly: img.readOnly,
      // the read at offset 0 waits until released
      read: async (buf, off) => {
        if (off === 0) await new Promise<void>((res) => (release = res));
        return img.read(buf, off);
      },
      write: (b, o) => img.write(b, o),
      flush: () => img.flush(),
      discard: (o, n) => img.discard(o, n),
      writeZeroes: (o, n, u) => img.writeZeroes(o, n, u),
      close: () => img.close(),
    }),
  });
  try {
    const slow = submit(r, T_IN, 0, { len: 512, write: true });
    const fast = submit(r, T_IN, 8, { len: 512, write: true });
    await kick(r, 1);
    assert.equal(usedElem(r.l, 0).id, fast.head, 'the second request finished first');
    assert.equal(r.ring.inFlight, 1);
    release!();
    await kick(r, 2);
    assert.equal(usedElem(r.l, 1).id, slow.head);
    assert.equal(st(r, slow), S_OK);
    await r.ring.drain();
  } finally {
    r.done();
  }
});
