// Live migration between two xvmd "hosts" on this machine: each in its own
// network namespace (save-a, save-b, joined by a veth pair, 10.231.77.0/24)
// with its own XVM_HOME; the target's relocation service listens on its
// veth address only. A counting guest moves live and counts on (no reboot);
// peers without the token are refused; a target killed mid-migration leaves
// the source guest running and, restarted, keeps no half-made domain.
// A guest with a NIC is announced on the target's network at once (RARP
// from its MAC, VHOST_USER_SEND_RARP). Disks and NICs: migrate-devices.test.ts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { TestHost, ConsoleSession, READY_BANNER, waitUntil } from '../helpers/xvm.js';
import { pidAlive } from '../../src/engine/process.js';
import { readPcap } from '../../src/net/pcap.js';
import { ADDR, startHosts, startTarget, stopHosts, tokenFile } from '../helpers/relocation.js';

const PORT = 18702;
const TARGET = `${ADDR['save-b']}:${PORT}`;
const src = new TestHost('xvmma');
const dst = new TestHost('xvmmb');
const TOKEN = 'save-test-shared-token-0123456789';

function counts(text: string): number[] {
  return [...text.matchAll(/C=(\d+)\r?\n/g)].map((m) => Number(m[1]));
}

async function bootCounting(name: string): Promise<ConsoleSession> {
  await src.client.createDomain({ config: { name, memory: 128 }, start: true });
  const con = new ConsoleSession(src.client, name, 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 120_000);
  con.send('i=0; while true; do i=$((i+1)); echo C=$i; sleep 1; done &');
  await con.waitFor('C=3\r\n', 60_000);
  return con;
}

before(async () => startHosts(src, dst, TOKEN, TARGET));

after(async () => stopHosts(src, dst));

test('a counting guest migrates live to the other host and counts on there: no reboot, gone from the source', { timeout: 300_000 }, async () => {
  const con = await bootCounting('mig1');
  const srcPid = (await src.client.getDomain('mig1')).pid!;
  const readyAt = (await src.client.getDomain('mig1')).readyAt;
  const r = await src.cliAsync(['migrate', 'mig1', `${ADDR['save-b']}:${PORT}`, '--live', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout) as { live: boolean; downtimeMs: number; bytes: number; target: string };
  const lastBefore = Math.max(...counts(con.output), ...counts(fs.readFileSync(path.join(src.home, 'log', 'console', 'mig1.log'), 'utf8')));
  assert.equal(res.live, true);
  assert.equal(res.target, `${ADDR['save-b']}:${PORT}`);
  assert.ok(res.bytes > 1 << 20, `QEMU's stream went over the wire (${res.bytes} bytes)`);
  assert.ok(res.downtimeMs >= 0 && res.downtimeMs < 30_000, `downtime ${res.downtimeMs} ms`);
  con.close();
  await waitUntil(() => !pidAlive(srcPid), 15_000, "the source's QEMU to exit");
  assert.equal((await src.client.listDomains()).some((d) => d.name === 'mig1'), false, 'the domain left the source');

  const info = await dst.client.getDomain('mig1');
  assert.equal(info.state, 'running');
  assert.equal(info.readyAt, readyAt, 'the boot facts moved with it');
  const tc = new ConsoleSession(dst.client, 'mig1', 0);
  await tc.ready();
  await waitUntil(() => counts(tc.output).some((v) => v > lastBefore + 2), 90_000, `the counter to pass ${lastBefore + 2} on the target (got ${JSON.stringify(tc.output.slice(-200))})`);
  const seen = counts(tc.output);
  assert.ok(seen[0]! >= lastBefore && seen[0]! <= lastBefore + 4, `the counter continues on the target (${lastBefore}: ${seen.join(',')})`);
  assert.equal(tc.output.includes(READY_BANNER), false, 'no boot on the target');
  assert.equal(await tc.run('echo $((6*7))'), '42');
  tc.close();
  await dst.client.destroy('mig1');
  dst.client.undefineDomain('mig1').catch(() => undefined);
});

test('a peer without the token is refused; a source with the wrong token fails and its guest runs on', { timeout: 300_000 }, async () => {
  // A bare TCP client from the other namespace: hello, a forged proof, refused, nothing created.
  const probe = `
    const net = require('net');
    const s = net.connect(${PORT}, '${ADDR['save-b']}');
    let buf = Buffer.alloc(0);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
        const msg = JSON.parse(buf.subarray(5, 5 + buf.readUInt32BE(1)).toString());
        buf = buf.subarray(5 + buf.readUInt32BE(1));
        console.log(JSON.stringify(msg));
        if (msg.type === 'hello') {
          const p = Buffer.from(JSON.stringify({ type: 'auth', nonce: '0'.repeat(32), mac: 'f'.repeat(64) }));
          const h = Buffer.alloc(5); h[0] = 1; h.writeUInt32BE(p.length, 1);
          s.write(Buffer.concat([h, p]));
        }
      }
    });
    s.on('close', () => process.exit(0));
    setTimeout(() => process.exit(3), 20000);`;
  const r = spawnSync('ip', ['netns', 'exec', 'save-a', process.execPath, '-e', probe], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /"type":"hello"/);
  assert.match(r.stdout, /"type":"error".*authentication failed/);
  // Garbage instead of frames: the connection is dropped.
  const g = spawnSync('ip', ['netns', 'exec', 'save-a', process.execPath, '-e', `const s=require('net').connect(${PORT},'${ADDR['save-b']}');s.resume();s.on('connect',()=>s.write(Buffer.alloc(64,0xff)));s.on('close',()=>process.exit(0));setTimeout(()=>process.exit(3),20000);`], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(g.status, 0, 'a garbage-sending peer is disconnected');
  assert.match(fs.readFileSync(path.join(dst.home, 'log', 'xvmd.log'), 'utf8'), /relocation peer refused: authentication failed/);
  assert.equal((await dst.client.listDomains()).length, 0);

  // A source keyed with another token: the target refuses it; the guest stays where it is.
  await src.stopDaemon();
  await src.startDaemon({ netns: 'save-a', env: { XVM_RELOCATION_TOKEN_FILE: tokenFile(src, 'not-the-shared-token-999999', 'wrong.token') } });
  const con = await bootCounting('mig2');
  const pid = (await src.client.getDomain('mig2')).pid;
  const m = await src.cliAsync(['migrate', 'mig2', `${ADDR['save-b']}:${PORT}`, '--live']);
  assert.equal(m.code, 1);
  assert.match(m.stderr, /the target refused: authentication failed/);
  const after = await src.client.getDomain('mig2');
  assert.equal(after.state, 'running');
  assert.equal(after.pid, pid);
  const n = Math.max(...counts(con.output));
  await con.waitFor(`C=${n + 2}\r\n`, 60_000);
  assert.equal((await dst.client.listDomains()).length, 0, 'nothing was created on the target');
  con.close();
  await src.client.destroy('mig2');
  await src.stopDaemon();
  await src.startDaemon({ netns: 'save-a' });
});

test('the target killed mid-migration: the source guest runs on unchanged; the restarted target keeps no half-made domain', { timeout: 300_000 }, async () => {
  const con = await bootCounting('mig3');
  const pid = (await src.client.getDomain('mig3')).pid;
  const targetPid = dst.daemon!.pid!;
  const runDir = path.join(dst.home, 'run', 'domains');
  const migrating = src.cliAsync(['migrate', 'mig3', `${ADDR['save-b']}:${PORT}`, '--live']);
  // Kill the target's xvmd as soon as it has started the incoming QEMU.
  await waitUntil(() => fs.existsSync(runDir) && fs.readdirSync(runDir).some((u) => fs.existsSync(path.join(runDir, u, 'qemu.pid'))), 60_000, 'the target to start the incoming QEMU');
  process.kill(targetPid, 'SIGKILL');
  const m = await migrating;
  assert.equal(m.code, 1, `the migration fails (stdout: ${m.stdout}, stderr: ${m.stderr})`);
  assert.match(m.stderr, /^xvm: /m, 'with an error message');
  const info = await src.client.getDomain('mig3');
  assert.equal(info.state, 'running', 'the source guest runs on');
  assert.equal(info.pid, pid, 'in the same QEMU');
  const n = Math.max(...counts(con.output));
  await con.waitFor(`C=${n + 2}\r\n`, 60_000);
  assert.equal(await con.run('echo $((6*7))'), '42');
  con.close();

  await waitUntil(() => dst.daemon?.exitCode !== null || dst.daemon?.signalCode !== null, 10_000, 'the killed target to be gone');
  dst.daemon = undefined;
  await startTarget(dst, TARGET);
  await waitUntil(async () => (await dst.client.listDomains()).length === 0, 30_000, 'the target to remove the half-received domain');
  assert.match(fs.readFileSync(path.join(dst.home, 'log', 'xvmd.log'), 'utf8'), /removed a half-received incoming domain|incoming migration failed; domain removed/);
  await src.client.destroy('mig3');
});

test("a guest with a NIC is announced on the target's network as it arrives: RARP from its MAC on the switch and the host's TAP, the MAC table at its new port before the guest sends", { timeout: 300_000 }, async (t) => {
  // A guest already on the target's network default (the network runs there, and a peer hears the announcement).
  await dst.client.createDomain({ config: { name: 'by1', memory: 128, vif: ['network=default'] }, start: true });
  const by = new ConsoleSession(dst.client, 'by1', 1 << 20);
  await by.ready();
  await by.waitFor(READY_BANNER, 120_000);
  by.close();
  await src.client.createDomain({ config: { name: 'mig4', memory: 128, vif: ['network=default'] }, start: true });
  const con = new ConsoleSession(src.client, 'mig4', 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 120_000);
  const mac = (await con.run('cat /sys/class/net/eth0/address')).trim();
  assert.match(mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  // The guest's virtio-net features (one character per bit): QEMU gives it a control queue (bit 17, QEMU's
  // own), but not GUEST_ANNOUNCE (bit 21), which our port does not offer: with it QEMU would skip SEND_RARP.
  const feat = (await con.run('cat /sys/class/net/eth0/device/features')).trim();
  t.diagnostic(`guest virtio-net features: ${feat}`);
  assert.equal(feat[17], '1', 'CTRL_VQ');
  assert.equal(feat[21], '0', 'no GUEST_ANNOUNCE');
  const before = await dst.client.networkInfo('default');
  assert.equal(before.fdb.some((e) => e.mac === mac), false, "the target's switch does not know the guest yet");

  // Capture on the target: the switch (every port's frames) and the host side of its uplink TAP.
  const cap = await dst.client.capture('default', { duration: 120 });
  const chunks: Buffer[] = [];
  cap.on('data', (d: Buffer) => chunks.push(d));
  const tapPcap = path.join(dst.home, 'tap-rarp.pcap');
  assert.ok(before.uplink, "the target's network has a host uplink");
  const ts = spawn('ip', ['netns', 'exec', 'save-b', 'tshark', '-i', before.uplink.name, '-f', 'ether proto 0x8035', '-F', 'pcap', '-w', tapPcap, '-a', 'duration:120'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let tsErr = '';
  ts.stderr.on('data', (d: Buffer) => (tsErr += d.toString()));
  const tsDone = new Promise<void>((resolve) => ts.on('exit', () => resolve()));
  await waitUntil(() => /Capturing on/.test(tsErr), 30_000, `tshark to capture on the TAP (${tsErr})`);

  const r = await src.cliAsync(['migrate', 'mig4', TARGET, '--live', '--json']);
  const doneAt = Date.now();
  assert.equal(r.code, 0, r.stderr);
  con.close();
  // Read at once: the announcement needs nothing from the guest.
  const net = await dst.client.networkInfo('default');
  const entry = net.fdb.find((e) => e.mac === mac);
  assert.ok(entry, `the target's MAC table has ${mac}: ${JSON.stringify(net.fdb)}`);
  assert.equal(entry.port, 'mig4/vif0', 'at the new port');
  const port = net.ports.find((p) => p.id === 'mig4/vif0')!;
  const dev = port.device as unknown as { rarpRequests: number; rarpRefused: number; announce: { requests: number; frames: number } };
  assert.ok(dev.rarpRequests >= 1, `QEMU asked the port to announce: ${JSON.stringify(dev)}`);
  assert.equal(dev.rarpRefused, 0);
  assert.ok(dev.announce.frames >= 1, `the port sent its first RARP frame: ${JSON.stringify(dev.announce)}`);
  await new Promise((res) => setTimeout(res, 3000));
  const later = (await dst.client.networkInfo('default')).ports.find((p) => p.id === 'mig4/vif0')!.device as unknown as typeof dev;
  assert.ok(later.announce.frames >= 3, `and more as QEMU's announce rounds ask: ${JSON.stringify(later.announce)}`);
  assert.equal(later.announce.frames, later.rarpRequests, 'one frame per SEND_RARP');
  cap.destroy();
  ts.kill('SIGINT');
  await tsDone;

  const fromGuest = readPcap(Buffer.concat(chunks)).frames.filter((f) => f.data.length >= 14 && f.data.subarray(6, 12).toString('hex') === mac.replace(/:/g, ''));
  const rarps = fromGuest.filter((f) => f.data.readUInt16BE(12) === 0x8035);
  assert.ok(fromGuest.length > 0 && fromGuest[0]!.data.readUInt16BE(12) === 0x8035, `the first frame from ${mac} on the target's switch is a RARP (types ${fromGuest.map((f) => f.data.readUInt16BE(12).toString(16)).join(',')})`);
  assert.ok(rarps.length >= 3, `${rarps.length} RARP frames`);
  for (const f of rarps) {
    assert.equal(f.data.subarray(0, 6).toString('hex'), 'ffffffffffff', 'broadcast');
    assert.equal(f.data.readUInt16BE(20), 3, 'RARP request reverse');
    assert.equal(f.data.subarray(22, 28).toString('hex'), mac.replace(/:/g, ''));
  }
  const onTap = readPcap(fs.readFileSync(tapPcap)).frames.filter((f) => f.data.subarray(6, 12).toString('hex') === mac.replace(/:/g, ''));
  assert.ok(onTap.length >= 3, `the host's TAP got the RARP frames (${onTap.length})`);
  const firstOther = fromGuest.find((f) => f.data.readUInt16BE(12) !== 0x8035);
  t.diagnostic(`RARP on the target: ${rarps.length} frames at ${rarps.map((f) => Math.round(f.timeMs - rarps[0]!.timeMs)).join(', ')} ms; the first ${Math.round(doneAt - rarps[0]!.timeMs)} ms before 'xvm migrate' returned; the guest's own first frame ${firstOther ? `${Math.round(firstOther.timeMs - rarps[0]!.timeMs)} ms after it` : 'not within the capture'}; ${onTap.length} on the TAP; downtime ${(JSON.parse(r.stdout) as { downtimeMs: number }).downtimeMs} ms; port ${JSON.stringify(later.announce)} after ${later.rarpRequests} SEND_RARP requests`);

  // Saved and restored paused: QEMU holds its announce rounds while the guest is stopped and sends them
  // together when it is continued; the port spreads them out.
  const file = path.join(dst.home, 'mig4.xvmsave');
  await dst.client.saveDomain('mig4', file);
  await dst.client.restoreDomain(file, { paused: true });
  await new Promise((res) => setTimeout(res, 2000));
  const portDev = async () => (await dst.client.networkInfo('default')).ports.find((p) => p.id === 'mig4/vif0')!.device as unknown as typeof dev;
  const paused = await portDev();
  assert.equal(paused.rarpRequests, 0, `nothing while the restored guest is paused: ${JSON.stringify(paused)}`);
  const cap2 = await dst.client.capture('mig4/vif0', { duration: 60 });
  const chunks2: Buffer[] = [];
  cap2.on('data', (d: Buffer) => chunks2.push(d));
  await new Promise((res) => setTimeout(res, 200));
  await dst.client.unpause('mig4');
  await waitUntil(async () => (await portDev()).rarpRequests >= 1, 10_000, 'SEND_RARP after unpause');
  await new Promise((res) => setTimeout(res, 1500));
  cap2.destroy();
  const resumed = await portDev();
  const rarps2 = readPcap(Buffer.concat(chunks2)).frames.filter((f) => f.data.length >= 14 && f.data.readUInt16BE(12) === 0x8035);
  const gaps = rarps2.slice(1).map((f, i) => Math.round(f.timeMs - rarps2[i]!.timeMs));
  t.diagnostic(`restored paused, then continued: ${resumed.rarpRequests} SEND_RARP, ${JSON.stringify(resumed.announce)}, RARP gaps ${gaps.join(', ')} ms`);
  assert.ok(rarps2.length >= 1 && rarps2.length === resumed.announce.frames, `${rarps2.length} RARP frames captured, ${resumed.announce.frames} sent`);
  for (const g of gaps) assert.ok(g >= 45, `spread out: ${gaps.join(', ')} ms`);
  fs.rmSync(file, { force: true });

  await dst.client.destroy('mig4');
  await dst.client.undefineDomain('mig4').catch(() => undefined);
  await dst.client.destroy('by1');
  await dst.client.undefineDomain('by1').catch(() => undefined);
});
