// The relocation framing over a loopback TCP connection: control messages
// and binary disk data (BLK) frames arrive in order, whatever the socket's
// chunking; a malformed BLK frame destroys the connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import crypto from 'node:crypto';
import { FrameReader, sendBlk, sendControl } from '../../src/migrate/wire.js';

async function pair(): Promise<{ a: net.Socket; b: net.Socket; close: () => void }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const a = net.createConnection({ host: '127.0.0.1', port });
  await new Promise<void>((r) => a.once('connect', () => r()));
  const b = await accepted;
  return { a, b, close: () => (a.destroy(), b.destroy(), server.close()) };
}

test('BLK frames carry disk bytes in order with control messages', async () => {
  const { a, b, close } = await pair();
  try {
    const reader = new FrameReader(b);
    const big = crypto.randomBytes(1 << 20);
    const small = crypto.randomBytes(4096);
    sendControl(a, { type: 'blk', vdev: 'xvda', off: 0, zero: 65536 });
    sendBlk(a, 'xvda', 2 ** 40 + 512, big);
    sendBlk(a, 'xvdb', 0, small);
    sendControl(a, { type: 'blk-sync', seq: 1 });
    const m1 = await reader.control(5000, 'zero');
    assert.deepEqual(m1, { type: 'blk', vdev: 'xvda', off: 0, zero: 65536 });
    const m2 = await reader.control(5000, 'blk 1');
    assert.equal(m2.vdev, 'xvda');
    assert.equal(m2.off, 2 ** 40 + 512);
    assert.ok(Buffer.isBuffer(m2.data) && big.equals(m2.data));
    const m3 = await reader.control(5000, 'blk 2');
    assert.equal(m3.vdev, 'xvdb');
    assert.ok(Buffer.isBuffer(m3.data) && small.equals(m3.data));
    assert.deepEqual(await reader.control(5000, 'sync'), { type: 'blk-sync', seq: 1 });
  } finally {
    close();
  }
});

test('a malformed BLK frame closes the connection with a reason', async () => {
  const { a, b, close } = await pair();
  try {
    const reader = new FrameReader(b);
    // type 4, 12 bytes: vdev length 0 is not allowed.
    const f = Buffer.alloc(5 + 12);
    f[0] = 4;
    f.writeUInt32BE(12, 1);
    a.write(f);
    await assert.rejects(reader.control(5000, 'a frame'), /bad relocation disk data frame/);
  } finally {
    close();
  }
});
