import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory, SplitQueue, walkChain, VirtqueueError, type DescriptorChain, type Segment } from '../../src/vhost/index.js';
import { addressOf } from '../../src/sys/index.js';
import { INDIRECT, layout, MEM_BASE, MEM_SIZE, NEXT, WRITE, writeDesc, pushAvail, queueViews, view, usedIdx, usedElem, rng, type Layout } from './helpers.js';

function walk(l: Layout, head: number, limits = {}): DescriptorChain {
  return walkChain(l.mem, view(l, l.desc, 16 * l.size), l.size, head, limits);
}

test('a well-formed chain: readable header, writable data and status', () => {
  const l = layout();
  writeDesc(l, l.desc, 0, l.data, 16, NEXT, 1);
  writeDesc(l, l.desc, 1, l.data + 4096, 4096, NEXT | WRITE, 2);
  writeDesc(l, l.desc, 2, l.data + 8192, 1, WRITE);
  const c = walk(l, 0);
  assert.equal(c.error, undefined);
  assert.equal(c.readableLen, 16);
  assert.equal(c.writableLen, 4097);
  assert.deepEqual(c.readable.map((s) => s.gpa), [l.data]);
  assert.deepEqual(c.writable.map((s) => [s.gpa, s.buf.length]), [[l.data + 4096, 4096], [l.data + 8192, 1]]);
  // the segments are views of guest memory, not copies
  c.writable[1].buf[0] = 0x5a;
  assert.equal(view(l, l.data + 8192, 1)[0], 0x5a);
});

test('an indirect table is followed', () => {
  const l = layout();
  const t = l.data + 0x10000;
  writeDesc(l, t, 0, l.data, 16, NEXT, 1);
  writeDesc(l, t, 1, l.data + 512, 512, NEXT | WRITE, 2);
  writeDesc(l, t, 2, l.data + 1024, 1, WRITE);
  writeDesc(l, l.desc, 3, t, 48, INDIRECT);
  const c = walk(l, 3);
  assert.equal(c.error, undefined);
  assert.equal(c.head, 3);
  assert.equal(c.readableLen, 16);
  assert.equal(c.writableLen, 513);
  // The same table at an address that is not 4-byte aligned (read from a copy) walks the same.
  const u = l.data + 0x20002;
  view(l, u, 48).set(view(l, t, 48));
  writeDesc(l, l.desc, 4, u, 48, INDIRECT);
  const cu = walk(l, 4);
  assert.equal(cu.error, undefined);
  assert.deepEqual([cu.readableLen, cu.writableLen], [16, 513]);
  assert.deepEqual(cu.writable.map((s) => [s.gpa, s.byteLength]), c.writable.map((s) => [s.gpa, s.byteLength]));
});

const hostile: [string, (l: Layout) => number, RegExp][] = [
  ['a loop in the table', (l) => { writeDesc(l, l.desc, 0, l.data, 16, NEXT, 1); writeDesc(l, l.desc, 1, l.data, 16, NEXT, 0); return 0; }, /longer than its table of 16/],
  ['a self loop', (l) => { writeDesc(l, l.desc, 5, l.data, 1, NEXT | WRITE, 5); return 5; }, /longer than/],
  ['a loop inside an indirect table', (l) => {
    const t = l.data + 0x8000;
    writeDesc(l, t, 0, l.data, 16, NEXT, 1);
    writeDesc(l, t, 1, l.data, 16, NEXT, 0);
    writeDesc(l, l.desc, 0, t, 32, INDIRECT);
    return 0;
  }, /longer than/],
  ['a head out of range', () => 16, /head index 16/],
  ['a next index out of range', (l) => { writeDesc(l, l.desc, 0, l.data, 16, NEXT, 40); return 0; }, /next index 40/],
  ['an address outside guest memory', (l) => { writeDesc(l, l.desc, 0, 0x10, 16, 0); return 0; }, /not in guest memory/],
  ['a buffer crossing the end of memory', (l) => { writeDesc(l, l.desc, 0, MEM_BASE + MEM_SIZE - 8, 16, WRITE); return 0; }, /not in guest memory|crosses/],
  ['an address ≥ 2^53', (l) => { writeDesc(l, l.desc, 0, 0, 16, 0); view(l, l.desc + 4, 4).writeUInt32LE(0xffffffff); return 0; }, /2\^53/],
  ['readable after writable', (l) => { writeDesc(l, l.desc, 0, l.data, 1, NEXT | WRITE, 1); writeDesc(l, l.desc, 1, l.data, 16, 0); return 0; }, /readable descriptor after/],
  ['nested indirect tables', (l) => {
    const t = l.data + 0x8000;
    writeDesc(l, t, 0, t, 16, INDIRECT);
    writeDesc(l, l.desc, 0, t, 16, INDIRECT);
    return 0;
  }, /nested indirect/],
  ['indirect with NEXT', (l) => { writeDesc(l, l.desc, 0, l.data, 16, INDIRECT | NEXT, 1); return 0; }, /NEXT/],
  ['indirect length not a multiple of 16', (l) => { writeDesc(l, l.desc, 0, l.data, 20, INDIRECT); return 0; }, /multiple of 16/],
  ['indirect length zero', (l) => { writeDesc(l, l.desc, 0, l.data, 0, INDIRECT); return 0; }, /multiple of 16/],
  ['an indirect table larger than 1024 entries', (l) => { writeDesc(l, l.desc, 0, l.data, 1025 * 16, INDIRECT); return 0; }, /1025 descriptors/],
  ['an indirect table outside memory', (l) => { writeDesc(l, l.desc, 0, 0x1000, 32, INDIRECT); return 0; }, /not in guest memory/],
  ['an indirect next out of its table', (l) => {
    const t = l.data + 0x8000;
    writeDesc(l, t, 0, l.data, 16, NEXT, 2);
    writeDesc(l, l.desc, 0, t, 32, INDIRECT);
    return 0;
  }, /next index 2 ≥ table size 2/],
];

for (const [name, build, re] of hostile) {
  test(`hostile chain refused: ${name}`, () => {
    const l = layout();
    const head = build(l);
    const c = walk(l, head);
    assert.ok(c.error, 'expected an error');
    assert.match(c.error!, re);
  });
}

test('limits: too many descriptors, too many bytes', () => {
  const l = layout();
  for (let i = 0; i < 8; i++) writeDesc(l, l.desc, i, l.data, 4096, NEXT | WRITE, i + 1);
  writeDesc(l, l.desc, 8, l.data, 1, WRITE);
  assert.equal(walk(l, 0).error, undefined);
  assert.match(walk(l, 0, { maxDescriptors: 4 }).error!, /longer than 4/);
  // an indirect table may be longer than the queue (Linux sizes it by seg_max), up to its limit
  const t = l.data + 0x10000;
  for (let i = 0; i < 40; i++) writeDesc(l, t, i, l.data, 512, (i < 39 ? NEXT : 0) | WRITE, i + 1);
  writeDesc(l, l.desc, 10, t, 40 * 16, INDIRECT);
  assert.equal(walk(l, 10).error, undefined);
  assert.equal(walk(l, 10).writable.length, 40);
  assert.match(walk(l, 10, { maxIndirect: 32 }).error!, /40 descriptors > 32/);
  assert.match(walk(l, 0, { maxBytes: 8192 }).error!, /more than 8192 bytes/);
  // a huge length on one descriptor
  writeDesc(l, l.desc, 9, l.data, 0xffffffff, WRITE);
  assert.match(walk(l, 9).error!, /more than|not in guest memory|crosses/);
});

test('a buffer spanning two adjacent regions gives two segments; a gap is refused', () => {
  const a = Buffer.alloc(4096);
  const b = Buffer.alloc(4096);
  const c = Buffer.alloc(4096);
  const mem = new GuestMemory([
    { gpa: 0x1000, size: 4096, uva: 0x7000_0000, mmapOffset: 0, buf: a },
    { gpa: 0x2000, size: 4096, uva: 0x7100_0000, mmapOffset: 0, buf: b },
    { gpa: 0x4000, size: 4096, uva: 0x7200_0000, mmapOffset: 0, buf: c },
  ]);
  const segs: Segment[] = [];
  mem.segments(0x1f00, 0x200, segs);
  assert.deepEqual(segs.map((s) => [s.gpa, s.buf.length, s.byteLength]), [[0x1f00, 0x100, 0x100], [0x2000, 0x100, 0x100]]);
  // The address of a segment is where its bytes are mapped here: its view starts there.
  assert.equal(segs[1].addr, addressOf(b));
  assert.equal(segs[1].slice(0x10, 0x20).addr, addressOf(b) + 0x10);
  assert.equal(segs[1].slice(0x10, 0x20).buf.byteOffset, b.byteOffset + 0x10);
  assert.throws(() => mem.segments(0x2f00, 0x200, []), /not in guest memory/);
  assert.throws(() => mem.slice(0x1f00, 0x200), /crosses/);
  assert.equal(mem.uvaSlice(0x7100_0010, 16).gpa, 0x2010);
  assert.throws(() => mem.uvaSlice(0x7300_0000, 16), /no memory region/);
  assert.throws(() => mem.add({ gpa: 0x1800, size: 4096, uva: 0, mmapOffset: 0, buf: Buffer.alloc(4096) }), /overlaps/);
});

test('SplitQueue: pop, used ring, avail index sanity, EVENT_IDX', () => {
  const l = layout(8);
  const q = new SplitQueue(l.mem, 8, queueViews(l), { eventIdx: true });
  assert.equal(q.popHead(), null);
  writeDesc(l, l.desc, 2, l.data, 1, WRITE);
  pushAvail(l, 2);
  assert.equal(q.pending(), 1);
  assert.equal(q.popHead(), 2);
  q.pushUsed(2, 1);
  assert.equal(usedIdx(l), 1);
  assert.deepEqual(usedElem(l, 0), { id: 2, len: 1 });
  // first completion always notifies; used_event = 0 means "notify when used passes 0"
  assert.equal(q.needsNotify(), true);
  q.pushUsed(2, 1);
  // used_event still 0: the driver asked only for the first one
  assert.equal(q.needsNotify(), false);
  view(l, l.avail + 4 + 2 * 8, 2).writeUInt16LE(2); // used_event = 2
  q.pushUsed(2, 1);
  assert.equal(q.needsNotify(), true);
  // avail_event published when arming
  assert.equal(q.armNotification(), false);
  assert.equal(view(l, l.used + 4 + 8 * 8, 2).readUInt16LE(), 1);
  // the driver's index jumping by more than the queue size is a corrupt ring
  view(l, l.avail + 2, 2).writeUInt16LE(500);
  assert.throws(() => q.popHead(), (e: unknown) => e instanceof VirtqueueError && /ring corrupt/.test(e.message));
});

test('SplitQueue: NO_INTERRUPT without EVENT_IDX; misaligned rings refused', () => {
  const l = layout(8);
  const q = new SplitQueue(l.mem, 8, queueViews(l));
  q.pushUsed(0, 0);
  assert.equal(q.needsNotify(), true);
  view(l, l.avail, 2).writeUInt16LE(1);
  assert.equal(q.needsNotify(), false);
  const v = queueViews(l);
  assert.throws(() => new SplitQueue(l.mem, 8, { ...v, used: view(l, l.used + 2, v.used.length) }), /misaligned/);
  assert.throws(() => new SplitQueue(l.mem, 12, v), /bad queue size/);
});

test('fuzz: random descriptor tables never crash, hang, or escape guest memory', () => {
  const seed = Number(process.env.XVM_FUZZ_SEED ?? Date.now() % 0xffffffff);
  const rand = rng(seed);
  const deadline = Date.now() + 3000;
  let chains = 0;
  let errors = 0;
  const size = 64;
  const l = layout(size);
  const lo = MEM_BASE;
  const hi = MEM_BASE + MEM_SIZE;
  // addresses: mostly inside memory (to get deep chains), sometimes anywhere
  const addr = (): number => {
    const r = rand() % 8;
    if (r === 0) return rand() * 0x1000; // anywhere (mostly outside)
    if (r === 1) return hi - (rand() % 64);
    return lo + (rand() % MEM_SIZE);
  };
  const tables = [l.desc, l.data + 0x1000, l.data + 0x2000];
  try {
    while (Date.now() < deadline) {
      for (const t of tables) {
        for (let i = 0; i < size; i++) {
          const fr = rand();
          let flags = fr & 7;
          if ((fr >>> 3) % 4 === 0) flags |= rand() & 0xfff8;
          const len = rand() % 5 === 0 ? rand() : (rand() % 8) * 16;
          const tgt = flags & INDIRECT && rand() % 2 ? tables[rand() % 3] : addr();
          writeDesc(l, t, i, tgt, len, flags, rand() % 3 === 0 ? rand() & 0xffff : rand() % size);
        }
      }
      for (let k = 0; k < 200; k++) {
        const head = rand() % 3 === 0 ? rand() & 0xffff : rand() % size;
        const c = walk(l, head);
        chains++;
        if (c.error !== undefined) errors++;
        let count = 0;
        for (const s of [...c.readable, ...c.writable]) {
          count++;
          assert.ok(s.gpa >= lo && s.gpa + s.buf.length <= hi, `segment 0x${s.gpa.toString(16)}+${s.buf.length} outside memory`);
          assert.equal(s.buf.buffer, l.ram.buffer, 'segment is not a view of guest memory');
          assert.equal(s.buf.byteOffset - l.ram.byteOffset, s.gpa - MEM_BASE);
        }
        assert.ok(count <= 2 * (size + 1024), `chain of ${count} segments`);
      }
      // random avail ring contents against a SplitQueue
      const q = new SplitQueue(l.mem, size, queueViews(l), { eventIdx: true, lastAvail: rand() & 0xffff });
      const a = view(l, l.avail, 6 + 2 * size);
      for (let i = 0; i < a.length; i++) a[i] = rand() & 0xff;
      for (let k = 0; k < size + 2; k++) {
        let h: number | null;
        try {
          h = q.popHead();
        } catch (e) {
          assert.ok(e instanceof VirtqueueError);
          break;
        }
        if (h === null) break;
        q.chain(h);
        q.pushUsed(h & 0xffff, rand());
        q.needsNotify();
      }
    }
  } catch (e) {
    (e as Error).message += ` (XVM_FUZZ_SEED=${seed})`;
    throw e;
  }
  assert.ok(chains > 1000, `only ${chains} chains walked`);
  assert.ok(errors > 0 && errors < chains, `errors ${errors} of ${chains}: the fuzzer should produce both kinds`);
});
