import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InflightQueue, inflightQueueBytes } from '../../src/vhost/index.js';

test('inflight: taken requests come back in the order they were taken', () => {
  const buf = Buffer.alloc(inflightQueueBytes(8));
  const a = new InflightQueue(buf, 8);
  a.begin(5);
  a.begin(2);
  a.begin(7);
  // 2 completes normally (used idx 0 → 1)
  a.preComplete(2);
  a.postComplete(2, 1);
  // a restarted backend over the same memory
  const b = new InflightQueue(buf, 8);
  assert.deepEqual(b.recover(1), [5, 7]);
  // new requests continue the counter: taken after 5 and 7
  b.begin(1);
  assert.deepEqual(new InflightQueue(buf, 8).recover(1), [5, 7, 1]);
});

test('inflight: a crash after publishing but before clearing is repaired', () => {
  const buf = Buffer.alloc(inflightQueueBytes(4));
  const a = new InflightQueue(buf, 4);
  a.begin(0);
  a.begin(3);
  a.preComplete(3);
  // (used->idx became 1 in guest memory, then the backend died)
  assert.deepEqual(new InflightQueue(buf, 4).recover(1), [0]);
  // …and a crash before publishing keeps the request in flight
  const c = Buffer.alloc(inflightQueueBytes(4));
  const x = new InflightQueue(c, 4);
  x.begin(1);
  x.preComplete(1);
  assert.deepEqual(new InflightQueue(c, 4).recover(0), [1]);
});

test('inflight: a region for another queue size is reset, not trusted', () => {
  const buf = Buffer.alloc(inflightQueueBytes(16));
  const a = new InflightQueue(buf, 16);
  a.begin(12);
  assert.deepEqual(new InflightQueue(buf, 8).recover(0), []);
});
