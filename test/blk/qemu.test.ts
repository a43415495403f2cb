// The block backend under a real guest (QEMU, TCG): the guest's virtio-blk
// driver talks to our backend over vhost-user. The guest writes patterns and
// checksums, the host verifies the image file; then the backend is killed
// with requests in flight and restarted, and the guest's I/O completes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Backend, Guest, guestImage, md5, Qmp } from './guest.js';

const MiB = 1 << 20;

function makeDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-blk-qemu-'));
}

function makeImage(file: string, size: number, fill?: (b: Buffer) => void): void {
  const b = Buffer.alloc(size);
  fill?.(b);
  fs.writeFileSync(file, b);
}

function vhostDisk(id: string, sock: string, queues: number): string[] {
  return ['-chardev', `socket,id=${id},path=${sock},reconnect=1`, '-device', `vhost-user-blk-pci,chardev=${id},num-queues=${queues}`];
}

async function metrics(b: Backend, file: string): Promise<{ device: Record<string, number>; queues: { popped: number }[] }> {
  fs.rmSync(file, { force: true });
  b.proc.kill('SIGUSR1');
  for (let i = 0; i < 200 && !fs.existsSync(file); i++) await new Promise((r) => setTimeout(r, 50));
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

function sumOf(out: string): string {
  const m = out.match(/\b([0-9a-f]{32})\b/);
  assert.ok(m, `no checksum in guest output: ${out}`);
  return m[1];
}

test('guest I/O through the vhost-user block backend: 2 queues, pattern + checksum, discard, serial, read-only disk, qcow2', { timeout: 300_000 }, async () => {
  const img = await guestImage();
  const dir = makeDir();
  const rw = path.join(dir, 'rw.raw');
  const ro = path.join(dir, 'ro.raw');
  const host = Buffer.alloc(MiB);
  for (let i = 0; i < MiB; i += 4) host.writeUInt32LE((i * 2654435761) >>> 0, i);
  makeImage(rw, 64 * MiB, (b) => host.copy(b, 40 * MiB));
  makeImage(ro, 8 * MiB, (b) => host.copy(b, 0));
  const roBefore = md5(fs.readFileSync(ro));
  const q = path.join(dir, 'q.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', q, '32M']);
  const mfile = path.join(dir, 'metrics.json');
  let a: Backend | undefined;
  let b: Backend | undefined;
  let c: Backend | undefined;
  let g: Guest | undefined;
  try {
    a = await Backend.start(['--socket', path.join(dir, 'rw.sock'), '--image', rw, '--queues', '2', '--serial', 'xvm-disk-7', '--metrics', mfile]);
    b = await Backend.start(['--socket', path.join(dir, 'ro.sock'), '--image', ro, '--readonly']);
    c = await Backend.start(['--socket', path.join(dir, 'q.sock'), '--image', q]);
    assert.match(c.out, /format=qcow2/);
    g = await Guest.boot(
      img,
      [...vhostDisk('d0', path.join(dir, 'rw.sock'), 2), ...vhostDisk('d1', path.join(dir, 'ro.sock'), 1), ...vhostDisk('d2', path.join(dir, 'q.sock'), 1)],
      { smp: 2 },
    );

    assert.equal((await g.run('cat /sys/block/vda/size')).out.match(/^(\d+)\s*$/m)?.[1], String((64 * MiB) / 512));
    assert.match((await g.run('cat /sys/block/vda/serial')).out, /xvm-disk-7/);
    assert.match((await g.run('ls /sys/block/vda/mq')).out, /0\s+1/);

    // data the host put there reads back in the guest
    let r = await g.run('dd if=/dev/vda bs=1M skip=40 count=1 iflag=direct 2>/dev/null | md5sum');
    assert.equal(sumOf(r.out), md5(host));

    // the guest writes a pattern from each CPU (so both queues carry I/O)
    r = await g.run('dd if=/dev/urandom of=/tmp/p bs=1M count=8 2>/dev/null && md5sum /tmp/p');
    const sum = sumOf(r.out);
    r = await g.run(
      'taskset 1 dd if=/tmp/p of=/dev/vda bs=1M count=4 seek=8 oflag=direct 2>/dev/null & ' +
        'taskset 2 dd if=/tmp/p of=/dev/vda bs=1M skip=4 count=4 seek=12 oflag=direct 2>/dev/null & wait; sync',
    );
    assert.equal(r.rc, 0);
    r = await g.run('dd if=/dev/vda bs=1M skip=8 count=8 iflag=direct 2>/dev/null | md5sum');
    assert.equal(sumOf(r.out), sum, 'guest reads back what it wrote');
    // small unaligned-in-memory requests through the page cache, then fsync
    r = await g.run('dd if=/tmp/p of=/dev/vda bs=4k count=256 seek=8192 conv=fsync 2>/dev/null; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=4k count=256 skip=8192 2>/dev/null | md5sum');
    const small = sumOf(r.out);
    r = await g.run('dd if=/tmp/p bs=4k count=256 2>/dev/null | md5sum');
    assert.equal(small, sumOf(r.out));

    // discard: the range reads back as zeros in the guest and on the host
    r = await g.run(`blkdiscard -o ${20 * MiB} -l ${MiB} /dev/vda`);
    assert.equal(r.rc, 0);

    // read-only disk: the guest sees it read-only and cannot write; reads work
    assert.match((await g.run('cat /sys/block/vdb/ro')).out, /^1\s*$/m);
    r = await g.run('dd if=/dev/zero of=/dev/vdb bs=4k count=1 oflag=direct');
    assert.notEqual(r.rc, 0, 'write to the read-only disk must fail');
    r = await g.run('dd if=/dev/vdb bs=1M count=1 iflag=direct 2>/dev/null | md5sum');
    assert.equal(sumOf(r.out), md5(host));

    // qcow2 through the storage layer: the guest writes a pattern at 5 MiB
    r = await g.run('dd if=/tmp/p of=/dev/vdc bs=1M count=3 seek=5 oflag=direct conv=fsync 2>/dev/null; dd if=/dev/vdc bs=1M skip=5 count=3 iflag=direct 2>/dev/null | md5sum');
    const qsum = sumOf(r.out);
    r = await g.run('dd if=/tmp/p bs=1M count=3 2>/dev/null | md5sum');
    assert.equal(qsum, sumOf(r.out));

    const m = await metrics(a, mfile);
    assert.ok(m.device.flushRequests > 0, 'flushes reached the backend');
    assert.ok(m.device.discardRequests > 0, 'discard reached the backend');
    assert.ok(m.queues[0].popped > 0 && m.queues[1].popped > 0, `both queues used: ${JSON.stringify(m.queues)}`);
    assert.equal(m.device.invalidRequests, 0);

    await g.poweroff();
    const disk = fs.readFileSync(rw);
    const p = disk.subarray(8 * MiB, 16 * MiB);
    assert.equal(md5(p), sum, 'host sees the guest pattern');
    assert.equal(md5(disk.subarray(32 * MiB, 33 * MiB)), md5(p.subarray(0, MiB)), 'page-cache writes landed');
    assert.ok(disk.subarray(20 * MiB, 21 * MiB).every((x) => x === 0), 'discarded range is zero');
    assert.equal(md5(disk.subarray(40 * MiB, 41 * MiB)), md5(host), 'untouched data intact');
    assert.equal(md5(fs.readFileSync(ro)), roBefore, 'read-only image unchanged');
    await c.kill('SIGTERM');
    execFileSync('qemu-img', ['check', '-q', q]);
    const qraw = path.join(dir, 'q.raw');
    execFileSync('qemu-img', ['convert', '-O', 'raw', q, qraw]);
    const qdisk = fs.readFileSync(qraw);
    assert.equal(md5(qdisk.subarray(5 * MiB, 8 * MiB)), qsum, 'qemu-img reads the guest pattern from the qcow2');
    assert.ok(qdisk.subarray(0, 5 * MiB).every((x) => x === 0), 'the rest of the qcow2 reads as zeros');
  } finally {
    await g?.poweroff();
    await a?.kill('SIGTERM');
    await b?.kill('SIGTERM');
    await c?.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('kill -9 the backend during guest I/O, restart it: QEMU reconnects, in-flight requests are replayed', { timeout: 300_000 }, async () => {
  const img = await guestImage();
  const dir = makeDir();
  const file = path.join(dir, 'disk.raw');
  const sock = path.join(dir, 'disk.sock');
  makeImage(file, 64 * MiB);
  const args = ['--socket', sock, '--image', file, '--queues', '1'];
  let be: Backend | undefined;
  let g: Guest | undefined;
  try {
    // Every request waits 300 ms in the first backend: a kill certainly hits requests in flight.
    be = await Backend.start(args, { XVM_BLK_FAULT_DELAY_MS: '300' });
    g = await Guest.boot(img, vhostDisk('d0', sock, 1));
    const r = await g.run('dd if=/dev/urandom of=/tmp/p bs=1M count=16 2>/dev/null && md5sum /tmp/p');
    const sum = sumOf(r.out);
    g.send('dd if=/tmp/p of=/dev/vda bs=1M seek=4 oflag=direct 2>/dev/null; echo "WRITE_RC_$((6*7))=$?"');
    // wait until the first MiB reached the image, then kill the backend mid-stream
    const t0 = Date.now();
    for (;;) {
      const fd = fs.openSync(file, 'r');
      const b = Buffer.alloc(4096);
      fs.readSync(fd, b, 0, 4096, 4 * MiB);
      fs.closeSync(fd);
      if (b.some((x) => x !== 0)) break;
      if (Date.now() - t0 > 120_000) throw new Error('guest writes never reached the image');
      await new Promise((res) => setTimeout(res, 20));
    }
    // Kill -9 while requests wait in the backend (each waits 300 ms), restart
    // on the same socket; repeat (up to 3 times) until a restart replayed
    // requests from the inflight area, which a kill in the gap between two
    // guest requests would not exercise.
    let replayed = 0;
    for (let cycle = 0; cycle < 3 && replayed === 0 && !/WRITE_RC_42/.test(g.out); cycle++) {
      await new Promise((res) => setTimeout(res, 150));
      await be.kill('SIGKILL');
      be = await Backend.start(args, { XVM_BLK_FAULT_DELAY_MS: '300' });
      const t1 = Date.now();
      while (Date.now() - t1 < 10_000 && !/resubmitting/.test(be.out) && !/WRITE_RC_42/.test(g.out)) {
        await new Promise((res) => setTimeout(res, 50));
      }
      replayed = Number(be.out.match(/resubmitting (\d+) in-flight request/)?.[1] ?? 0);
    }
    const m = await g.waitOutput(/WRITE_RC_42=(\d+)/, 180_000, 'guest dd after the backend restart');
    assert.equal(m[1], '0', 'the guest saw no I/O error');
    assert.ok(replayed > 0, 'a restarted backend replayed in-flight requests');
    const back = await g.run('dd if=/dev/vda bs=1M skip=4 count=16 iflag=direct 2>/dev/null | md5sum');
    assert.equal(sumOf(back.out), sum);
    await g.poweroff();
    assert.equal(md5(fs.readFileSync(file).subarray(4 * MiB, 20 * MiB)), sum, 'the image holds exactly what the guest wrote');
  } finally {
    await g?.poweroff();
    await be?.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});


test('kill -9 the backend while the domain is paused: after unpause the guest\'s I/O completes with correct data', { timeout: 300_000 }, async () => {
  const img = await guestImage();
  const dir = makeDir();
  const file = path.join(dir, 'disk.raw');
  const sock = path.join(dir, 'disk.sock');
  const qmpSock = path.join(dir, 'qmp.sock');
  makeImage(file, 64 * MiB);
  const args = ['--socket', sock, '--image', file, '--queues', '1'];
  let be: Backend | undefined;
  let g: Guest | undefined;
  let qmp: Qmp | undefined;
  try {
    be = await Backend.start(args, { XVM_VHOST_TRACE: '1' });
    g = await Guest.boot(img, [...vhostDisk('d0', sock, 1), '-qmp', `unix:${qmpSock},server=on,wait=off`]);
    const r = await g.run('dd if=/dev/urandom of=/tmp/p bs=1M count=8 2>/dev/null && md5sum /tmp/p && dd if=/tmp/p of=/dev/vda bs=1M seek=2 oflag=direct 2>/dev/null && echo WROTE');
    assert.match(r.out, /WROTE/);
    const sum = sumOf(r.out);
    qmp = await Qmp.connect(qmpSock);
    await qmp.cmd('stop');
    await be.kill('SIGKILL');
    be = await Backend.start(args, { XVM_VHOST_TRACE: '1' });
    // QEMU reconnects to the new backend while the guest is still paused.
    // QEMU 7.2 connects while paused and sets the rings up at unpause,
    // without renegotiating (XVM_VHOST_TRACE shows the messages).
    await be.waitOutput(/front-end connected/, 60_000, 'QEMU reconnecting while paused');
    await qmp.cmd('cont');
    const back = await g.run('dd if=/dev/vda bs=1M skip=2 count=8 iflag=direct 2>/dev/null | md5sum', 120_000);
    assert.match(be.out, /<- SET_MEM_TABLE/, 'QEMU sent the memory table to the new backend');
    assert.equal(sumOf(back.out), sum, 'the guest reads back what it wrote before the pause');
    const w = await g.run('dd if=/tmp/p of=/dev/vda bs=1M seek=20 oflag=direct 2>/dev/null && echo WROTE2', 120_000);
    assert.match(w.out, /WROTE2/);
    await g.poweroff();
    assert.equal(md5(fs.readFileSync(file).subarray(20 * MiB, 28 * MiB)), sum, 'a write after unpause reached the image');
  } finally {
    qmp?.close();
    await g?.poweroff();
    await be?.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Requests over the backend's control socket, framed by hand as the channel
 * defines it (src/devices/blk/control.ts): u32 BE JSON length, JSON, u32 BE
 * payload length, payload.
 */
class Ctl {
  private buf = Buffer.alloc(0);
  private waiters: ((m: Record<string, unknown>) => void)[] = [];
  private constructor(readonly sock: import('node:net').Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      for (;;) {
        if (this.buf.length < 4) return;
        const jl = this.buf.readUInt32BE(0);
        if (this.buf.length < 8 + jl) return;
        const dl = this.buf.readUInt32BE(4 + jl);
        if (this.buf.length < 8 + jl + dl) return;
        const m = JSON.parse(this.buf.subarray(4, 4 + jl).toString('utf8')) as Record<string, unknown>;
        this.buf = this.buf.subarray(8 + jl + dl);
        this.waiters.shift()?.(m);
      }
    });
  }
  static async connect(file: string): Promise<Ctl> {
    const net = await import('node:net');
    return new Promise((resolve, reject) => {
      const s = net.createConnection(file);
      s.once('connect', () => resolve(new Ctl(s)));
      s.once('error', reject);
    });
  }
  /** One message whose JSON part is `json` as given (valid or not). */
  raw(json: string): Promise<Record<string, unknown>> {
    const j = Buffer.from(json, 'utf8');
    const h = Buffer.alloc(4);
    h.writeUInt32BE(j.length);
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.sock.write(Buffer.concat([h, j, Buffer.alloc(4)]));
    });
  }
  req(o: object): Promise<Record<string, unknown>> {
    return this.raw(JSON.stringify(o));
  }
  close(): void {
    this.sock.end();
  }
}

test('switch in place over the control socket: a paused guest\'s disk moves to a qcow2 overlay, QEMU never reconnects; bad requests get clear errors', { timeout: 300_000 }, async () => {
  const img = await guestImage();
  const dir = makeDir();
  const base = path.join(dir, 'base.qcow2');
  const top = path.join(dir, 'top.qcow2');
  const sock = path.join(dir, 'disk.sock');
  const ctlSock = path.join(dir, 'disk.ctl');
  const qmpSock = path.join(dir, 'qmp.sock');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
  let be: Backend | undefined;
  let g: Guest | undefined;
  let qmp: Qmp | undefined;
  let ctl: Ctl | undefined;
  try {
    be = await Backend.start(['--socket', sock, '--image', base, '--queues', '1', '--control', ctlSock]);
    g = await Guest.boot(img, [...vhostDisk('d0', sock, 1), '-qmp', `unix:${qmpSock},server=on,wait=off`]);
    const r = await g.run('dd if=/dev/urandom of=/tmp/p bs=1M count=8 2>/dev/null && md5sum /tmp/p && dd if=/tmp/p of=/dev/vda bs=1M seek=2 oflag=direct 2>/dev/null && echo WROTE');
    assert.match(r.out, /WROTE/);
    const sum = sumOf(r.out);
    // Bad requests: clear errors, the backend keeps serving. A message that
    // is not JSON ends its connection (the framing can't be trusted after it).
    for (const [text, why] of [['not json', /not JSON/], ['[1]', /not a JSON object/]] as const) {
      const bad = await Ctl.connect(ctlSock);
      assert.match(String((await bad.raw(text)).error), why);
      bad.close();
    }
    ctl = await Ctl.connect(ctlSock);
    assert.match(String((await ctl.req({ op: 'explode' })).error), /unknown op "explode"/);
    assert.match(String((await ctl.req({ op: 'switch', image: top })).error), /freeze the disk first/);
    assert.match(String((await ctl.req({ op: 'switch', image: 5 })).error), /"image" must be a file path/);
    // A second client (xvmd's migration code has its own) sees the same disk.
    const other = await Ctl.connect(ctlSock);
    assert.deepEqual(await other.req({ op: 'status' }), { ok: true, image: base, format: 'qcow2', frozen: false });
    other.close();

    // Paused guest: freeze, make the overlay, switch, thaw, unpause.
    qmp = await Qmp.connect(qmpSock);
    await qmp.cmd('stop');
    assert.deepEqual(await ctl.req({ op: 'freeze' }), { ok: true });
    // A wrong-sized image is refused and the disk stays on its image.
    const small = path.join(dir, 'small.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', small, '32M']);
    assert.match(String((await ctl.req({ op: 'switch', image: small })).error), /the new image is 33554432 bytes, the disk 67108864/);
    assert.match(String((await ctl.req({ op: 'switch', image: path.join(dir, 'missing.qcow2') })).error), /missing\.qcow2/);
    assert.equal((await ctl.req({ op: 'status' })).image, base);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
    const sw = await ctl.req({ op: 'switch', image: top });
    assert.equal(sw.ok, true, JSON.stringify(sw));
    assert.equal(sw.image, top);
    assert.deepEqual(await ctl.req({ op: 'thaw' }), { ok: true });
    await qmp.cmd('cont');

    const back = await g.run('dd if=/dev/vda bs=1M skip=2 count=8 iflag=direct 2>/dev/null | md5sum', 120_000);
    assert.equal(sumOf(back.out), sum, 'the guest reads its data through the overlay');
    const w = await g.run('dd if=/tmp/p of=/dev/vda bs=1M seek=20 oflag=direct 2>/dev/null && echo WROTE2', 120_000);
    assert.match(w.out, /WROTE2/);

    // A client that goes away while the disk is frozen thaws it.
    assert.deepEqual(await ctl.req({ op: 'freeze' }), { ok: true });
    ctl.close();
    ctl = undefined;
    const w2 = await g.run('dd if=/tmp/p of=/dev/vda bs=1M seek=40 oflag=direct 2>/dev/null && echo WROTE3', 120_000);
    assert.match(w2.out, /WROTE3/);
    assert.equal((be.out.match(/front-end connected/g) ?? []).length, 1, 'QEMU connected once and never reconnected');
    await g.poweroff();
    await be.kill('SIGTERM');
    be = undefined;
    for (const f of [base, top]) execFileSync('qemu-img', ['check', '-q', f]);
    const flat = path.join(dir, 'flat.raw');
    execFileSync('qemu-img', ['convert', '-O', 'raw', top, flat]);
    const all = fs.readFileSync(flat);
    assert.equal(md5(all.subarray(2 * MiB, 10 * MiB)), sum, 'data written before the switch, through the chain');
    assert.equal(md5(all.subarray(20 * MiB, 28 * MiB)), sum, 'data written after the switch');
    assert.equal(md5(all.subarray(40 * MiB, 48 * MiB)), sum, 'data written after the client went away');
    const baseFlat = path.join(dir, 'base.raw');
    execFileSync('qemu-img', ['convert', '-O', 'raw', base, baseFlat]);
    assert.ok(fs.readFileSync(baseFlat).subarray(20 * MiB, 28 * MiB).every((x) => x === 0), 'writes after the switch left the old layer alone');
  } finally {
    ctl?.close();
    qmp?.close();
    await g?.poweroff();
    await be?.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
