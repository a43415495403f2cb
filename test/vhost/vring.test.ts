// Vring as a device sees it: pop / unpop / complete, batched notifications,
// inflight bookkeeping, resubmission after a "restart".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createEventFd, eventFdConsume, closeQuiet } from '../../src/sys/index.js';
import { InflightQueue, inflightQueueBytes, Vring, type DescriptorChain, type VringHost } from '../../src/vhost/index.js';
import { layout, pushAvail, usedIdx, usedElem, WRITE, writeDesc, type Layout } from './helpers.js';

function ring(l: Layout, process: (r: Vring) => void, inflight?: Buffer): Vring {
  const host: VringHost = { memory: l.mem, log: null, logging: false, eventIdx: false, process, warn: () => undefined, onIdle: () => undefined };
  const r = new Vring(0, host);
  r.num = l.size;
  r.addrs = { flags: 0, desc: l.desc, avail: l.avail, used: l.used, log: 0 };
  r.enabled = true;
  if (inflight) r.inflight = new InflightQueue(inflight, l.size);
  return r;
}

test('pop / unpop / complete; one interrupt per batch', async () => {
  const l = layout(8);
  for (let i = 0; i < 4; i++) writeDesc(l, l.desc, i, l.data + 64 * i, 64, WRITE);
  const taken: DescriptorChain[] = [];
  let undone = false;
  const r = ring(l, (rr) => {
    let c;
    while ((c = rr.pop()) !== null) {
      if (!undone && c.head === 1) {
        undone = true;
        rr.unpop(c); // "did not fit": the same chain comes back next
        continue;
      }
      taken.push(c);
    }
  });
  const call = createEventFd();
  r.callFd = call;
  try {
    r.start(-1);
    for (const h of [0, 1, 2, 3]) pushAvail(l, h);
    assert.equal(r.hasAvailable(), true);
    r.run();
    assert.deepEqual(taken.map((c) => c.head), [0, 1, 2, 3]);
    assert.equal(r.hasAvailable(), false);
    assert.equal(r.inFlight, 4);
    for (const c of [...taken].reverse()) r.complete(c, 64);
    assert.equal(usedIdx(l), 4);
    assert.deepEqual([0, 1, 2, 3].map((i) => usedElem(l, i).id), [3, 2, 1, 0]);
    await new Promise((res) => setImmediate(res));
    assert.equal(eventFdConsume(call), 1, 'four completions, one interrupt');
    assert.equal(r.stats.notifications, 1);
    await r.drain();
  } finally {
    r.reset();
    closeQuiet(call);
  }
});

test('a restarted ring resubmits what was in flight, then continues with new requests', () => {
  const l = layout(8);
  const inf = Buffer.alloc(inflightQueueBytes(8));
  for (let i = 0; i < 8; i++) writeDesc(l, l.desc, i, l.data + 64 * i, 64, WRITE);
  const first: DescriptorChain[] = [];
  const a = ring(l, (rr) => {
    let c;
    while ((c = rr.pop()) !== null) first.push(c);
  }, inf);
  a.start(-1);
  for (const h of [5, 6, 7]) pushAvail(l, h);
  a.run();
  a.complete(first[1], 64); // 6 done; 5 and 7 in flight when the backend "dies"
  assert.equal(usedIdx(l), 1);

  const second: number[] = [];
  const b = ring(l, (rr) => {
    let c;
    while ((c = rr.pop()) !== null) {
      second.push(c.head);
      rr.complete(c, 64);
    }
  }, inf);
  b.base = 1; // what QEMU sends after a disconnect: used->idx
  pushAvail(l, 0); // a new request queued while the backend was down
  b.start(-1);
  assert.deepEqual(second, [5, 7, 0], 'in-flight first (oldest first), then the new one');
  assert.equal(b.stats.resubmitted, 2);
  assert.equal(usedIdx(l), 4);
  assert.deepEqual(new InflightQueue(inf, 8).recover(usedIdx(l)), [], 'nothing left in flight');
  a.reset();
  b.reset();
});
