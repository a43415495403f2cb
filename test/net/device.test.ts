// The virtio-net device over synthetic rings: transmit parsing, mergeable
// receive buffers, and a hostile guest (random descriptors, runts,
// oversized frames, floods): errors counted, frames dropped, never a throw,
// and the switch keeps forwarding between the other ports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bit, VIRTIO_F_VERSION_1, Vring, type VringHost } from '../../src/vhost/index.js';
import { closeQuiet, createEventFd, eventFdConsume } from '../../src/sys/index.js';
import { NetDevice, RX_BACKLOG, VIRTIO_NET_F_MRG_RXBUF } from '../../src/devices/net/device.js';
import { ethFrame, parseMac } from '../../src/net/frame.js';
import { MAX_FRAME, Switch } from '../../src/net/switch.js';
import { layout, NEXT, pushAvail, rng, usedElem, usedIdx, view, WRITE, writeDesc, MEM_BASE, MEM_SIZE, type Layout } from '../vhost/helpers.js';

const MAC = Buffer.from([0x00, 0x16, 0x3e, 0, 0, 1]);

function ring(l: Layout, index: number, process: (r: Vring) => void): Vring {
  const host: VringHost = { memory: l.mem, log: null, logging: false, eventIdx: false, process, warn: () => undefined, onIdle: () => undefined };
  const r = new Vring(index, host);
  r.num = l.size;
  r.addrs = { flags: 0, desc: l.desc, avail: l.avail, used: l.used, log: 0 };
  r.enabled = true;
  return r;
}

function device(onFrame: (f: Buffer) => void, size = 16): { dev: NetDevice; tx: Layout; rx: Layout; txr: Vring; rxr: Vring } {
  const dev = new NetDevice({ mac: MAC, maxFrame: MAX_FRAME, onFrame, log: () => undefined });
  dev.ackFeatures(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF));
  const tx = layout(size);
  const rx = layout(size);
  const txr = ring(tx, 1, (r) => dev.processQueue(r));
  const rxr = ring(rx, 0, (r) => dev.processQueue(r));
  dev.rxRing = rxr;
  txr.start(-1);
  rxr.start(-1);
  return { dev, tx, rx, txr, rxr };
}

test('transmit: header + frame split over descriptors comes out as one frame', () => {
  const got: Buffer[] = [];
  const { tx, txr } = device((f) => got.push(f));
  const frame = ethFrame(0xffffffffffff, 0x00163e000001, 0x0800, Buffer.alloc(100, 7));
  // 12-byte header in one descriptor, the frame across two.
  view(tx, tx.data, 12).fill(0);
  frame.copy(view(tx, tx.data + 100, 50), 0, 0, 50);
  frame.copy(view(tx, tx.data + 300, frame.length - 50), 0, 50);
  writeDesc(tx, tx.desc, 0, tx.data, 12, NEXT, 1);
  writeDesc(tx, tx.desc, 1, tx.data + 100, 50, NEXT, 2);
  writeDesc(tx, tx.desc, 2, tx.data + 300, frame.length - 50, 0);
  pushAvail(tx, 0);
  txr.run();
  assert.equal(got.length, 1);
  assert.deepEqual(got[0], frame);
  assert.equal(usedIdx(tx), 1);
});

test('receive: a frame spread over mergeable buffers, num_buffers set; waits for buffers, then drains', () => {
  const { dev, rx, rxr } = device(() => undefined);
  const frame = ethFrame(0x00163e000001, 0x00163e000002, 0x0800, Buffer.from(Array.from({ length: 1186 }, (_, i) => i & 0xff)));
  assert.equal(dev.deliver(frame), true, 'queued: no buffers yet');
  assert.equal(dev.metrics.rxQueued, 1);
  for (let i = 0; i < 3; i++) writeDesc(rx, rx.desc, i, rx.data + 1024 * i, 512, WRITE);
  for (let i = 0; i < 3; i++) pushAvail(rx, i);
  rxr.run(); // the guest's kick
  assert.equal(usedIdx(rx), 3);
  const lens = [0, 1, 2].map((i) => usedElem(rx, i).len);
  assert.deepEqual(lens, [512, 512, 12 + frame.length - 1024]);
  const out = Buffer.concat([0, 1, 2].map((i) => view(rx, rx.data + 1024 * i, lens[i]!)));
  assert.equal(out.readUInt16LE(10), 3, 'num_buffers');
  assert.deepEqual(out.subarray(12), frame);
  assert.equal(dev.metrics.rxFrames, 1);
  assert.equal(dev.metrics.rxBuffers, 3);
});

test('receive interrupt moderation: a lone frame is signalled at once, a stream in batches, a full batch without waiting', async () => {
  const { dev, rx, rxr } = device(() => undefined, 256);
  const call = createEventFd();
  rxr.callFd = call;
  rxr.notifyIntervalMs = 50;
  rxr.notifyBatch = 8;
  const tick = () => new Promise((r) => setImmediate(r));
  const f = ethFrame(0x00163e000001, 0x00163e000002, 0x0800, Buffer.alloc(100));
  for (let i = 0; i < 40; i++) writeDesc(rx, rx.desc, i, rx.data + 2048 * i, 2048, WRITE);
  for (let i = 0; i < 40; i++) pushAvail(rx, i);
  rxr.run();
  try {
    assert.equal(dev.deliver(f), true);
    await tick();
    assert.equal(eventFdConsume(call), 1, 'the first frame after a quiet spell: an interrupt at once');
    // Within the interval: held back…
    for (let i = 0; i < 3; i++) dev.deliver(f);
    await tick();
    assert.equal(eventFdConsume(call), 0, 'later frames wait for the interval');
    // …until the interval ends: one interrupt for all three.
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(eventFdConsume(call), 1, 'one interrupt at the end of the interval');
    // A full batch (8 buffers) is signalled without waiting out the interval.
    for (let i = 0; i < 8; i++) dev.deliver(f);
    await tick();
    assert.equal(eventFdConsume(call), 1, 'a full batch goes at once');
    assert.equal(usedIdx(rx), 12);
  } finally {
    rxr.callFd = -1;
    rxr.reset();
    closeQuiet(call);
  }
});

test('a receive flood with no buffers is bounded and counted', () => {
  const { dev } = device(() => undefined);
  const f = ethFrame(0x00163e000001, 0x00163e000002, 0x0800, Buffer.alloc(46));
  let dropped = 0;
  for (let i = 0; i < 10_000; i++) if (!dev.deliver(f)) dropped++;
  assert.equal(dev.metrics.rxQueued, RX_BACKLOG);
  assert.equal(dropped, 10_000 - RX_BACKLOG);
  assert.equal(dev.metrics.rxDropped, dropped);
});

test('fuzz: hostile transmit descriptors never throw, every chain is accounted for, the switch keeps working', () => {
  const sw = new Switch('fuzz');
  const seen = { b: 0 };
  const hostile = device((f) => sw.input('evil', f), 64);
  sw.addPort({ id: 'evil', mac: parseMac('00:16:3e:00:00:01') }, { deliver: () => true });
  sw.addPort({ id: 'b', mac: parseMac('00:16:3e:00:00:0b') }, { deliver: () => (seen.b++, true) });
  sw.addPort({ id: 'c', mac: parseMac('00:16:3e:00:00:0c') }, { deliver: () => true });
  const { tx, txr, dev } = hostile;
  const rand = rng(0xc0ffee);
  const pick = (n: number) => rand() % n;
  let pushed = 0;
  for (let round = 0; round < 400; round++) {
    const n = 1 + pick(6);
    for (let i = 0; i < tx.size; i++) {
      const kind = pick(10);
      const addr = kind === 0 ? MEM_BASE + MEM_SIZE - pick(64) : kind === 1 ? pick(0x1000) : tx.data + pick(MEM_SIZE - (tx.data - MEM_BASE) - 4096);
      const len = kind === 2 ? 0xffffffff : kind === 3 ? pick(14) : kind === 4 ? 1600 + pick(70000) : pick(1600);
      const flags = pick(8) & (NEXT | WRITE | (pick(8) === 0 ? 4 : 0));
      writeDesc(tx, tx.desc, i, addr, len, flags, pick(tx.size + 4));
    }
    // Random bytes in the buffers: frames with random sources are forged and dropped.
    for (let k = 0; k < 8; k++) view(tx, tx.data + pick(60000), 64).fill(pick(256));
    for (let i = 0; i < n; i++) {
      pushAvail(tx, pick(tx.size + 2) % tx.size);
      pushed++;
    }
    txr.run();
    assert.equal(txr.broken, false, `round ${round}: the ring stays usable`);
  }
  const m = dev.metrics;
  assert.equal(m.txFrames + m.txMalformed + m.txRunt + m.txOversize, pushed, 'every chain was either forwarded or refused');
  assert.ok(m.txMalformed > 0 && m.txOversize > 0 && m.txRunt > 0, JSON.stringify(m));
  const evil = sw.portInfo().find((p) => p.id === 'evil')!.counters;
  assert.equal(evil.rxFrames + evil.spoofedMac + evil.badSize + evil.badVlan + evil.spoofedIp, m.txFrames);
  // Meanwhile, b and c still talk.
  const before = seen.b;
  sw.input('c', ethFrame(parseMac('00:16:3e:00:00:0b'), parseMac('00:16:3e:00:00:0c'), 0x0800, Buffer.alloc(46)));
  assert.equal(seen.b, before + 1);
});
