// The vhost-user back-end driven by a front-end written here (no QEMU): the
// message flow QEMU uses, REPLY_ACK, CONFIG, SET_MEM_TABLE, inflight fd,
// dirty logging, GET_VRING_BASE, malformed messages, reconnect. The device
// is a trivial "echo" device, which also shows the layer is device-neutral.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  closeQuiet, connectUnix, createEventFd, eventFdConsume, eventFdSignal, mapShared, memfdCreate, recvMsg, sendMsg,
} from '../../src/sys/index.js';
import {
  bit, PF, Req, VhostUserBackend, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, ringSizes, type Segment, type VhostUserDevice, type Vring,
} from '../../src/vhost/index.js';
import { NetDevice } from '../../src/devices/net/device.js';

const NEED_REPLY = 0x8;

class EchoDevice implements VhostUserDevice {
  readonly name = 'echo';
  readonly numQueues = 1;
  readonly features = 0n;
  readonly protocolFeatures = bit(PF.CONFIG);
  processQueue(ring: Vring): void {
    let c;
    while ((c = ring.pop()) !== null) {
      const data = Buffer.concat(c.readable.map((s) => s.buf));
      let o = 0;
      for (const s of c.writable) o += data.copy(s.buf, 0, o);
      ring.complete(c, o);
    }
  }
  getConfig(offset: number, size: number): Buffer {
    return Buffer.from('echo-config-space-0123456789').subarray(offset, offset + size);
  }
}

class FrontEnd {
  constructor(readonly fd: number) {}
  send(req: number, payload: Buffer = Buffer.alloc(0), fds: number[] = [], flags = 1): void {
    const h = Buffer.alloc(12);
    h.writeUInt32LE(req, 0);
    h.writeUInt32LE(flags, 4);
    h.writeUInt32LE(payload.length, 8);
    sendMsg(this.fd, Buffer.concat([h, payload]), fds);
  }
  /** Wait for a reply without blocking the event loop (the back-end runs in this process). */
  async reply(req: number): Promise<{ payload: Buffer; fds: number[] }> {
    const t0 = Date.now();
    for (;;) {
      const h = recvMsg(this.fd, 12, { dontWait: true });
      if (h !== null) {
        if (h.data.length === 0) throw new Error('back-end closed the connection');
        const wholeHeader = h.data.length === 12 ? h.data : Buffer.concat([h.data, recvMsg(this.fd, 12 - h.data.length, { waitAll: true })!.data]);
        assert.equal(wholeHeader.readUInt32LE(0), req, 'reply to the right request');
        assert.equal(wholeHeader.readUInt32LE(4) & 0x4, 0x4, 'reply flag');
        const size = wholeHeader.readUInt32LE(8);
        const p = size > 0 ? recvMsg(this.fd, size, { waitAll: true })! : { data: Buffer.alloc(0), fds: [] };
        return { payload: p.data, fds: [...h.fds, ...p.fds] };
      }
      if (Date.now() - t0 > 10_000) throw new Error(`no reply to request ${req}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  }
  async call(req: number, payload?: Buffer, fds?: number[]): Promise<Buffer> {
    this.send(req, payload, fds);
    return (await this.reply(req)).payload;
  }
  /** Send with NEED_REPLY; resolve with the ack value (0 = success). */
  async acked(req: number, payload?: Buffer, fds?: number[]): Promise<bigint> {
    this.send(req, payload, fds, 1 | NEED_REPLY);
    return (await this.reply(req)).payload.readBigUInt64LE(0);
  }
  async closed(): Promise<boolean> {
    const t0 = Date.now();
    while (Date.now() - t0 < 10_000) {
      try {
        const r = recvMsg(this.fd, 1, { dontWait: true });
        if (r !== null && r.data.length === 0) return true;
      } catch {
        return true;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    return false;
  }
}

const u64 = (v: bigint | number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
};
const u32x2 = (a: number, b: number) => {
  const x = Buffer.alloc(8);
  x.writeUInt32LE(a, 0);
  x.writeUInt32LE(b, 4);
  return x;
};

const RAM = 1 << 20;
const GPA = 0x40000; // guest-physical base of the region
const UVA = 0x7f00_0000_0000; // where "QEMU" has it mapped
const QSIZE = 16;

test('vhost-user message flow: negotiation, memory, rings, inflight, dirty log, errors, reconnect', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-vu-'));
  const sock = path.join(dir, 'vu.sock');
  const logs: string[] = [];
  const be = new VhostUserBackend(new EchoDevice(), { socketPath: sock, memSlots: false, log: (m) => logs.push(m) });
  be.listen();
  const ramFd = memfdCreate('ram', RAM);
  const ram = mapShared(ramFd, RAM);
  const logFd = memfdCreate('log', 4096);
  const logMap = mapShared(logFd, 4096);
  const kick = createEventFd();
  const call = createEventFd();
  let fe = new FrontEnd(connectUnix(sock));
  const extra: number[] = [];
  try {
    // --- negotiation
    const features = (await fe.call(Req.GET_FEATURES)).readBigUInt64LE(0);
    for (const b of [VIRTIO_F_VERSION_1, VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES]) {
      assert.ok(features & bit(b), `feature bit ${b} offered`);
    }
    const pf = (await fe.call(Req.GET_PROTOCOL_FEATURES)).readBigUInt64LE(0);
    for (const b of [PF.MQ, PF.LOG_SHMFD, PF.REPLY_ACK, PF.CONFIG, PF.INFLIGHT_SHMFD]) assert.ok(pf & bit(b), `protocol feature ${b}`);
    assert.equal(pf & bit(PF.CONFIGURE_MEM_SLOTS), 0n, 'mem slots off when asked');
    fe.send(Req.SET_PROTOCOL_FEATURES, u64(pf));
    assert.equal((await fe.call(Req.GET_QUEUE_NUM)).readBigUInt64LE(0), 1n);
    assert.equal(await fe.acked(Req.SET_OWNER), 0n);
    const cfgReq = Buffer.alloc(12 + 8);
    cfgReq.writeUInt32LE(5, 0);
    cfgReq.writeUInt32LE(8, 4);
    assert.equal((await fe.call(Req.GET_CONFIG, cfgReq)).subarray(12).toString(), 'config-s');
    assert.equal(await fe.acked(Req.SET_FEATURES, u64(bit(60))), 1n, 'a feature we never offered is refused');
    const want = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VHOST_F_LOG_ALL);
    assert.equal(await fe.acked(Req.SET_FEATURES, u64(want)), 0n);
    assert.equal(be.features, want);

    // --- memory
    const mt = Buffer.alloc(8 + 32);
    mt.writeUInt32LE(1, 0);
    mt.writeBigUInt64LE(BigInt(GPA), 8);
    mt.writeBigUInt64LE(BigInt(RAM), 16);
    mt.writeBigUInt64LE(BigInt(UVA), 24);
    mt.writeBigUInt64LE(0n, 32);
    assert.equal(await fe.acked(Req.SET_MEM_TABLE, mt, [ramFd]), 0n);
    assert.equal(be.memory?.regionList.length, 1);
    const bad = Buffer.from(mt);
    bad.writeUInt32LE(9, 0);
    assert.equal(await fe.acked(Req.SET_MEM_TABLE, bad, [ramFd]), 1n, '9 regions refused');

    // --- inflight area
    const inf = Buffer.alloc(24);
    inf.writeUInt16LE(1, 16);
    inf.writeUInt16LE(QSIZE, 18);
    fe.send(Req.GET_INFLIGHT_FD, inf);
    const ir = await fe.reply(Req.GET_INFLIGHT_FD);
    assert.equal(ir.fds.length, 1);
    extra.push(...ir.fds);
    assert.ok(ir.payload.readBigUInt64LE(0) > 0n);
    assert.equal(await fe.acked(Req.SET_INFLIGHT_FD, ir.payload, ir.fds), 0n);

    // --- dirty log
    const lb = Buffer.alloc(16);
    lb.writeBigUInt64LE(4096n, 0);
    assert.equal((await fe.call(Req.SET_LOG_BASE, lb, [logFd])).readBigUInt64LE(0), 0n);

    // --- ring: desc at +0, avail at +0x1000, used at +0x2000 (guest-physical GPA+…)
    const s = ringSizes(QSIZE);
    const [D, A, U, BUF] = [0, 0x1000, 0x2000, 0x10000];
    assert.equal(await fe.acked(Req.SET_VRING_NUM, u32x2(0, QSIZE)), 0n);
    assert.equal(await fe.acked(Req.SET_VRING_NUM, u32x2(7, QSIZE)), 1n, 'queue index out of range refused');
    assert.equal(await fe.acked(Req.SET_VRING_NUM, u32x2(0, 12)), 1n, 'queue size not a power of two refused');
    const addr = Buffer.alloc(40);
    addr.writeUInt32LE(0, 0);
    addr.writeUInt32LE(1, 4); // VHOST_VRING_F_LOG
    addr.writeBigUInt64LE(BigInt(UVA + D), 8);
    addr.writeBigUInt64LE(BigInt(UVA + U), 16);
    addr.writeBigUInt64LE(BigInt(UVA + A), 24);
    addr.writeBigUInt64LE(BigInt(GPA + U), 32);
    assert.equal(await fe.acked(Req.SET_VRING_ADDR, addr), 0n);
    assert.equal(await fe.acked(Req.SET_VRING_BASE, u32x2(0, 0)), 0n);
    assert.equal(await fe.acked(Req.SET_VRING_CALL, u64(0), [call]), 0n);
    assert.equal(await fe.acked(Req.SET_VRING_KICK, u64(0), [kick]), 0n);
    assert.equal(await fe.acked(Req.SET_VRING_ENABLE, u32x2(0, 1)), 0n);

    // --- the "driver": one request, readable "hello vhost" → writable 64 bytes at page 0x20000
    const m = ram.buf;
    const desc = (i: number, a: number, len: number, flags: number, next: number) => {
      m.writeBigUInt64LE(BigInt(a), D + 16 * i);
      m.writeUInt32LE(len, D + 16 * i + 8);
      m.writeUInt16LE(flags, D + 16 * i + 12);
      m.writeUInt16LE(next, D + 16 * i + 14);
    };
    m.write('hello vhost', BUF);
    desc(0, GPA + BUF, 11, 1, 1);
    desc(1, GPA + 0x20000, 64, 2, 0);
    m.writeUInt16LE(0, A + 4); // ring[0] = head 0
    m.writeUInt16LE(1, A + 2); // avail idx = 1
    eventFdSignal(kick);
    const t0 = Date.now();
    while (eventFdConsume(call) === 0) {
      assert.ok(Date.now() - t0 < 10_000, 'no call notification');
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.equal(m.readUInt16LE(U + 2), 1, 'used idx');
    assert.equal(m.readUInt32LE(U + 4), 0, 'used id');
    assert.equal(m.readUInt32LE(U + 8), 11, 'used len');
    assert.equal(m.subarray(0x20000, 0x20000 + 11).toString(), 'hello vhost');
    assert.equal(m.readUInt16LE(U + 4 + 8 * QSIZE), 1, 'avail_event published (EVENT_IDX)');
    const dirty = (gpa: number) => (logMap.buf[Math.floor(gpa / 4096 / 8)] >> (Math.floor(gpa / 4096) % 8)) & 1;
    assert.equal(dirty(GPA + 0x20000), 1, 'the page the device wrote is marked dirty');
    assert.equal(dirty(GPA + U), 1, 'the used ring page is marked dirty');
    assert.equal(dirty(GPA + BUF), 0, 'a page only read is not');
    void s;

    // --- GET_VRING_BASE stops the ring and reports where to resume
    const base = await fe.call(Req.GET_VRING_BASE, u32x2(0, 0));
    assert.equal(base.readUInt32LE(4), 1);
    assert.equal(be.vrings[0].started, false);

    // --- an unknown request with NEED_REPLY gets a failure ack, the connection stays
    assert.equal(await fe.acked(99), 1n);
    assert.equal(await fe.acked(Req.SET_OWNER), 0n);

    // --- a malformed message (huge payload size) drops the connection…
    const dropped = new Promise((r) => be.once('disconnect', r));
    const h = Buffer.alloc(12);
    h.writeUInt32LE(Req.SET_OWNER, 0);
    h.writeUInt32LE(1, 4);
    h.writeUInt32LE(1 << 30, 8);
    sendMsg(fe.fd, h);
    assert.ok(await fe.closed(), 'back-end closed the connection');
    await dropped;
    assert.equal(be.memory, null, 'state forgotten after disconnect');
    closeQuiet(fe.fd);

    // --- …and the next front-end is served from scratch
    fe = new FrontEnd(connectUnix(sock));
    assert.equal((await fe.call(Req.GET_QUEUE_NUM)).readBigUInt64LE(0), 1n);
    assert.ok(logs.some((l) => /payload of \d+ bytes is too large/.test(l)), logs.join('\n'));
  } finally {
    closeQuiet(fe.fd);
    await be.close();
    for (const f of [ramFd, logFd, kick, call, ...extra]) closeQuiet(f);
    ram.unmap();
    logMap.unmap();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('CONFIGURE_MEM_SLOTS: ADD_MEM_REG / REM_MEM_REG, GET_MAX_MEM_SLOTS', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-vu-'));
  const sock = path.join(dir, 'vu.sock');
  const be = new VhostUserBackend(new EchoDevice(), { socketPath: sock, log: () => undefined });
  be.listen();
  const fdA = memfdCreate('a', 1 << 16);
  const fdB = memfdCreate('b', 1 << 16);
  const fe = new FrontEnd(connectUnix(sock));
  try {
    const pf = (await fe.call(Req.GET_PROTOCOL_FEATURES)).readBigUInt64LE(0);
    assert.ok(pf & bit(PF.CONFIGURE_MEM_SLOTS));
    fe.send(Req.SET_PROTOCOL_FEATURES, u64(pf));
    assert.ok((await fe.call(Req.GET_MAX_MEM_SLOTS)).readBigUInt64LE(0) >= 8n);
    const reg = (gpa: number, uva: number) => {
      const b = Buffer.alloc(40);
      b.writeBigUInt64LE(BigInt(gpa), 8);
      b.writeBigUInt64LE(1n << 16n, 16);
      b.writeBigUInt64LE(BigInt(uva), 24);
      return b;
    };
    assert.equal(await fe.acked(Req.ADD_MEM_REG, reg(0, 0x10000000), [fdA]), 0n);
    assert.equal(await fe.acked(Req.ADD_MEM_REG, reg(0x10000, 0x20000000), [fdB]), 0n);
    assert.equal(await fe.acked(Req.ADD_MEM_REG, reg(0x8000, 0x30000000), [fdB]), 1n, 'overlapping region refused');
    assert.equal(be.memory?.regionList.length, 2);
    // a buffer spanning both regions is reachable as two segments
    const segs: Segment[] = [];
    be.memory!.segments(0xff00, 0x200, segs);
    assert.equal(segs.length, 2);
    assert.equal(await fe.acked(Req.REM_MEM_REG, reg(0, 0x10000000)), 0n);
    assert.equal(be.memory?.regionList.length, 1);
    assert.throws(() => be.memory!.slice(0x100, 4), /not in guest memory/);
    assert.equal(await fe.acked(Req.REM_MEM_REG, reg(0x40000, 0)), 1n, 'removing an unknown region fails');
  } finally {
    closeQuiet(fe.fd);
    await be.close();
    closeQuiet(fdA);
    closeQuiet(fdB);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('SEND_RARP: offered with PROTOCOL_F_RARP by a net port that can announce; its MAC reaches the device; short, long, foreign-MAC and unoffered requests are refused, never fatal', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-vu-'));
  const mac = Buffer.from([0x00, 0x16, 0x3e, 0x12, 0x34, 0x56]);
  const announced: string[] = [];
  const logs: string[] = [];
  const net = new NetDevice({ mac, maxFrame: 1518, onFrame: () => undefined, onAnnounce: (m) => announced.push(m.toString('hex')), log: () => undefined });
  const be = new VhostUserBackend(net, { socketPath: path.join(dir, 'net.sock'), log: (m) => logs.push(m) });
  // The echo device implements no sendRarp: the generic layer neither offers nor takes it.
  const echo = new VhostUserBackend(new EchoDevice(), { socketPath: path.join(dir, 'echo.sock'), log: (m) => logs.push(m) });
  be.listen();
  echo.listen();
  const fe = new FrontEnd(connectUnix(path.join(dir, 'net.sock')));
  const fe2 = new FrontEnd(connectUnix(path.join(dir, 'echo.sock')));
  try {
    const pf = (await fe.call(Req.GET_PROTOCOL_FEATURES)).readBigUInt64LE(0);
    assert.ok(pf & bit(PF.RARP), 'PROTOCOL_F_RARP offered');
    fe.send(Req.SET_PROTOCOL_FEATURES, u64(pf));
    // As QEMU's vhost_user_migration_done sends it: a u64 whose first 6 bytes are the MAC, NEED_REPLY with REPLY_ACK.
    const req = Buffer.alloc(8);
    mac.copy(req);
    assert.equal(await fe.acked(Req.SEND_RARP, req), 0n);
    fe.send(Req.SEND_RARP, req); // and without NEED_REPLY (no REPLY_ACK): no answer, still taken
    assert.equal(await fe.acked(Req.SEND_RARP, req), 0n);
    assert.deepEqual(announced, ['00163e123456', '00163e123456', '00163e123456']);
    assert.equal(net.metrics.rarpRequests, 3);

    // Malformed: short (6 bytes, 0 bytes) or long payloads, another MAC, a broadcast MAC.
    assert.equal(await fe.acked(Req.SEND_RARP, mac), 1n, 'a 6-byte payload is refused');
    assert.equal(await fe.acked(Req.SEND_RARP), 1n, 'an empty payload is refused');
    assert.equal(await fe.acked(Req.SEND_RARP, Buffer.concat([req, req])), 1n, 'a 16-byte payload is refused');
    const other = Buffer.from('00163e000001' + '0000', 'hex');
    assert.equal(await fe.acked(Req.SEND_RARP, other), 1n, "another port's MAC is refused");
    assert.equal(await fe.acked(Req.SEND_RARP, Buffer.from('ffffffffffff0000', 'hex')), 1n, 'the broadcast MAC is refused');
    fe.send(Req.SEND_RARP, Buffer.alloc(3)); // without NEED_REPLY: refused in the log, connection kept
    assert.equal(announced.length, 3, 'nothing refused reached the device');
    assert.equal(net.metrics.rarpRefused, 2);
    assert.ok(logs.some((l) => /SEND_RARP failed: SEND_RARP payload of 6 bytes, expected 8/.test(l)), logs.join('\n'));
    assert.ok(logs.some((l) => /SEND_RARP for MAC 00:16:3e:00:00:01, but this port's MAC is 00:16:3e:12:34:56/.test(l)), logs.join('\n'));
    assert.equal((await fe.call(Req.GET_QUEUE_NUM)).readBigUInt64LE(0), 2n, 'the connection survived every refusal');
    assert.ok(be.connected);

    // A device without sendRarp: not offered, and the request is refused as unsupported.
    const pf2 = (await fe2.call(Req.GET_PROTOCOL_FEATURES)).readBigUInt64LE(0);
    assert.equal(pf2 & bit(PF.RARP), 0n);
    fe2.send(Req.SET_PROTOCOL_FEATURES, u64(pf2));
    assert.equal(await fe2.acked(Req.SEND_RARP, req), 1n);
    assert.ok(logs.some((l) => /SEND_RARP failed: unsupported request SEND_RARP/.test(l)), logs.join('\n'));
    assert.ok(echo.connected);
    // A net port whose host cannot announce does not offer it either.
    assert.equal(new NetDevice({ mac, maxFrame: 1518, onFrame: () => undefined }).protocolFeatures & bit(PF.RARP), 0n);
  } finally {
    closeQuiet(fe.fd);
    closeQuiet(fe2.fd);
    await be.close();
    await echo.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
