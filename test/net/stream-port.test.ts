// The stream port (emulated NICs' `-netdev stream`): the length-prefixed
// framing under hostile input (bad lengths, frames cut anywhere, garbage),
// and real unix-socket connections through a Switch: frames both ways,
// anti-spoofing, a malformed header closes only that connection, a peer
// that stops reading makes the port drop, not buffer without bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ethFrame, parseMac, readMac } from '../../src/net/frame.js';
import { Switch, type PortSink } from '../../src/net/switch.js';
import { StreamDecoder, StreamPort, encodeStreamFrame, MAX_STREAM_BACKLOG, MAX_STREAM_FRAME, STREAM_HEADER } from '../../src/net/stream-port.js';
import { rng } from '../helpers/random.js';
import { waitUntil } from '../helpers/xvm.js';

const A = parseMac('00:16:3e:00:01:0a');
const B = parseMac('00:16:3e:00:01:0b');
const C = parseMac('00:16:3e:00:01:0c');

function frame(dst: number, src: number, len: number, fill = 0x5a): Buffer {
  return ethFrame(dst, src, 0x88b5, Buffer.alloc(len - 14, fill));
}

test('decoder: frames cut at every byte boundary come out whole and in order', () => {
  const frames = [frame(B, A, 60, 1), frame(B, A, 1514, 2), frame(A, B, 15, 3)];
  const wire = Buffer.concat(frames.map(encodeStreamFrame));
  for (let cut = 0; cut <= wire.length; cut++) {
    const d = new StreamDecoder();
    const got: Buffer[] = [];
    assert.equal(d.push(wire.subarray(0, cut), (f) => got.push(Buffer.from(f))), null);
    assert.equal(d.push(wire.subarray(cut), (f) => got.push(Buffer.from(f))), null);
    assert.deepEqual(got, frames, `cut at ${cut}`);
    assert.equal(d.pendingBytes, 0);
  }
});

test('decoder fuzz: random frames in random chunks are recovered exactly; pending stays bounded', () => {
  for (let seed = 1; seed <= 50; seed++) {
    const r = rng(seed);
    const frames: Buffer[] = [];
    for (let i = 0; i < 40; i++) {
      const len = 1 + Math.floor(r() ** 3 * MAX_STREAM_FRAME);
      const f = Buffer.alloc(len);
      for (let j = 0; j < len; j += 97) f[j] = Math.floor(r() * 256);
      frames.push(f);
    }
    const wire = Buffer.concat(frames.map(encodeStreamFrame));
    const d = new StreamDecoder();
    const got: Buffer[] = [];
    for (let o = 0; o < wire.length; ) {
      const n = 1 + Math.floor(r() * 70000);
      assert.equal(d.push(wire.subarray(o, o + n), (f) => got.push(Buffer.from(f))), null, `seed ${seed}`);
      assert.ok(d.pendingBytes <= STREAM_HEADER + MAX_STREAM_FRAME, `seed ${seed}: pending ${d.pendingBytes}`);
      o += n;
    }
    assert.equal(got.length, frames.length, `seed ${seed}`);
    for (let i = 0; i < frames.length; i++) assert.ok(got[i]!.equals(frames[i]!), `seed ${seed} frame ${i}`);
  }
});

test('decoder: hostile lengths (0, 65536, 2^32-1) are errors; frames before them still come out', () => {
  for (const bad of [0, MAX_STREAM_FRAME + 1, 0xffffffff]) {
    const hdr = Buffer.alloc(4);
    hdr.writeUInt32BE(bad >>> 0);
    const good = frame(B, A, 60);
    const d = new StreamDecoder();
    const got: Buffer[] = [];
    const err = d.push(Buffer.concat([encodeStreamFrame(good), hdr, Buffer.alloc(100)]), (f) => got.push(Buffer.from(f)));
    assert.match(err ?? '', new RegExp(`bad frame length ${bad >>> 0}`));
    assert.equal(got.length, 1);
    assert.ok(got[0]!.equals(good));
  }
  // The largest legal length is taken.
  const d = new StreamDecoder();
  let n = 0;
  assert.equal(d.push(encodeStreamFrame(Buffer.alloc(MAX_STREAM_FRAME, 1)), (f) => (n = f.length)), null);
  assert.equal(n, MAX_STREAM_FRAME);
});

test('decoder fuzz: random garbage never throws and never holds more than one frame', () => {
  for (let seed = 100; seed < 400; seed++) {
    const r = rng(seed);
    const d = new StreamDecoder();
    for (let k = 0; k < 20; k++) {
      const b = Buffer.alloc(1 + Math.floor(r() * 3000));
      for (let j = 0; j < b.length; j++) b[j] = r() < 0.7 ? 0 : Math.floor(r() * 256);
      const err = d.push(b, (f) => assert.ok(f.length >= 1 && f.length <= MAX_STREAM_FRAME));
      assert.ok(d.pendingBytes <= STREAM_HEADER + MAX_STREAM_FRAME);
      if (err !== null) break;
    }
  }
});

class Sink implements PortSink {
  frames: Buffer[] = [];
  deliver(f: Buffer): boolean {
    this.frames.push(Buffer.from(f));
    return true;
  }
}

/** A client of a stream socket (what QEMU is), collecting decoded frames. */
async function client(sock: string): Promise<{ c: net.Socket; frames: Buffer[]; closed: () => boolean }> {
  const c = net.createConnection(sock);
  await new Promise<void>((res, rej) => c.once('connect', res).once('error', rej));
  const frames: Buffer[] = [];
  const d = new StreamDecoder();
  let closed = false;
  c.on('data', (b: Buffer) => d.push(b, (f) => frames.push(Buffer.from(f))));
  c.on('close', () => (closed = true));
  c.on('error', () => undefined);
  return { c, frames, closed: () => closed };
}

test('stream ports on a switch: frames both ways, spoofing counted, a bad header closes only that connection, floods are dropped', { timeout: 60_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-stream-'));
  const sw = new Switch('t');
  const mk = (id: string, mac: number) => {
    const p: StreamPort = new StreamPort({ socketPath: path.join(dir, `${id}.sock`), onFrame: (f) => sw.input(id, f), log: () => undefined });
    sw.addPort({ id, mac }, p);
    p.listen();
    return p;
  };
  const pa = mk('a', A);
  const pb = mk('b', B);
  const sink = new Sink();
  sw.addPort({ id: 'c', mac: C }, sink);
  try {
    const a = await client(path.join(dir, 'a.sock'));
    const b = await client(path.join(dir, 'b.sock'));
    await waitUntil(() => pa.connected && pb.connected, 10_000, 'both ports connected');

    // a → c (learned via c's frame first, then unicast), c → b.
    sw.input('c', frame(A, C, 60));
    await waitUntil(() => a.frames.length === 1, 10_000, 'a gets c\'s frame');
    assert.equal(readMac(a.frames[0]!, 6), C);
    a.c.write(encodeStreamFrame(frame(C, A, 100)));
    await waitUntil(() => sink.frames.length === 1, 10_000, 'c gets a\'s frame');
    assert.equal(readMac(sink.frames[0]!, 6), A);
    // A forged source MAC from a's guest reaches no one and is counted.
    a.c.write(encodeStreamFrame(frame(C, B, 60)));
    await waitUntil(() => sw.port('a')!.counters.spoofedMac === 1, 10_000, 'spoofed frame counted');
    // An oversized but well-framed frame is the switch's badSize, the connection stays.
    a.c.write(encodeStreamFrame(frame(C, A, 9000)));
    await waitUntil(() => sw.port('a')!.counters.badSize === 1, 10_000, 'oversized frame counted');
    assert.equal(a.closed(), false);

    // A malformed header: a's connection is closed and counted; b is untouched.
    const bad = Buffer.alloc(8);
    bad.writeUInt32BE(0);
    a.c.write(bad);
    await waitUntil(() => a.closed() && !pa.connected, 10_000, 'a\'s connection closed');
    assert.equal(pa.metrics.malformed, 1);
    sw.input('c', frame(B, C, 60));
    await waitUntil(() => b.frames.length === 1, 10_000, 'b still gets frames');
    // a connects again (a restarted QEMU) and works.
    const a2 = await client(path.join(dir, 'a.sock'));
    await waitUntil(() => pa.connected, 10_000, 'a reconnected');
    a2.c.write(encodeStreamFrame(frame(C, A, 60)));
    await waitUntil(() => sink.frames.length === 2, 10_000, 'c gets a\'s frame after the reconnect');

    // Flood toward b while b does not read: the port drops instead of queueing.
    b.c.pause();
    const big = frame(B, C, 1514);
    for (let i = 0; i < 3000; i++) sw.input('c', big);
    assert.ok(pb.metrics.dropped > 0, `dropped ${pb.metrics.dropped}`);
    assert.ok(sw.port('b')!.counters.txDropped > 0);
    b.c.resume();
    await waitUntil(() => b.frames.length === pb.metrics.framesOut, 30_000, 'b drains what was queued');
    assert.ok(pb.metrics.framesOut * (big.length + 4) <= MAX_STREAM_BACKLOG + 2 * 1024 * 1024, `bounded queue: ${pb.metrics.framesOut} frames sent`);

    a2.c.destroy();
    b.c.destroy();
  } finally {
    await pa.close();
    await pb.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(fs.existsSync(path.join(dir, 'a.sock')), false);
});

test('decoder: a maximal frame trickled one byte at a time costs linear work', () => {
  const f = Buffer.alloc(MAX_STREAM_FRAME, 7);
  const wire = encodeStreamFrame(f);
  const d = new StreamDecoder();
  let got: Buffer | null = null;
  const t0 = Date.now();
  for (let i = 0; i < wire.length; i++) assert.equal(d.push(wire.subarray(i, i + 1), (x) => (got = Buffer.from(x))), null);
  assert.ok(got !== null && (got as Buffer).equals(f));
  assert.equal(d.pendingBytes, 0);
  assert.ok(Date.now() - t0 < 20_000, 'no quadratic re-copying');
});
