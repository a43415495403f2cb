// Live migration of domains with disks and NICs between two xvmd "hosts"
// on this machine (network namespaces save-a / save-b joined by a veth
// pair, as in migrate.test.ts: run under `flock /tmp/xvm-netns.lock`).
//
// - --copy-storage: a guest with a qcow2 volume writes a file (checksum)
//   and keeps writing while it moves; the target killed during the disk
//   copy leaves the source guest running with its disk intact and, once
//   restarted, no half-made domain or volume; then the move succeeds: the
//   file is intact on the target and the guest keeps writing there.
// - shared storage + NIC: a guest on network `default` with a disk file
//   both hosts reach moves (image hand-over); its DHCP address answers a
//   ping from the target host's side (the network's TAP uplink there), the
//   file is intact and the disk writable on the target.
// - a NIC on a network the target lacks: refused before anything moves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { TestHost, ConsoleSession, READY_BANNER, waitUntil } from '../helpers/xvm.js';
import { pidAlive } from '../../src/engine/process.js';
import { ADDR, startHosts, startTarget, stopHosts } from '../helpers/relocation.js';

const PORT = 18703;
const TARGET = `${ADDR['save-b']}:${PORT}`;
const src = new TestHost('xvmda');
const dst = new TestHost('xvmdb');
const TOKEN = 'devices-test-shared-token-0123456789';
const shared = fs.mkdtempSync(path.join(os.tmpdir(), 'xvmds-'));

function cli(host: TestHost, args: string[]): string {
  const r = host.cli(args);
  assert.equal(r.code, 0, `xvm ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function boot(host: TestHost, config: Record<string, unknown>): Promise<ConsoleSession> {
  await host.client.createDomain({ config: { memory: 128, ...config } as never, start: true });
  const con = new ConsoleSession(host.client, config.name as string, 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 120_000);
  await con.waitFor(/XVM_GUEST_READY[^\n]*\n/, 30_000); // the whole line (disks=…)
  return con;
}

const md5 = (out: string) => out.trim().split(/\s+/)[0]!;

function writes(text: string): number[] {
  return [...text.matchAll(/W=(\d+)\r?\n/g)].map((m) => Number(m[1]));
}

function volumes(host: TestHost): string[] {
  return (JSON.parse(cli(host, ['vol', 'list', '--json'])) as { name: string }[]).map((v) => v.name);
}

before(async () => startHosts(src, dst, TOKEN, TARGET));

after(async () => {
  // The hosts' logs, for a failure's post-mortem (the homes go).
  if (process.env.XVM_KEEP_LOGS) for (const h of [src, dst]) fs.cpSync(path.join(h.home, 'log'), path.join(process.env.XVM_KEEP_LOGS, path.basename(h.home)), { recursive: true });
  await stopHosts(src, dst);
  fs.rmSync(shared, { recursive: true, force: true });
});

test('--copy-storage: a guest with a qcow2 volume moves while it writes; a target killed during the copy leaves the source whole and no half-made volume', { timeout: 900_000 }, async (t) => {
  // A qcow2 volume with an ext4 file system (the guest mounts it at /mnt/vda).
  const raw = path.join(shared, 'fs.raw');
  execFileSync('truncate', ['-s', '96M', raw]);
  execFileSync('mkfs.ext4', ['-q', '-F', raw]);
  cli(src, ['vol', 'import', 'data', raw, '--format', 'qcow2']);
  fs.rmSync(raw);
  const con = await boot(src, { name: 'md1', disk: ['vol=default/data,xvda,w'] });
  assert.match(con.output, /disks=vda/);
  const sum = md5(await con.run('dd if=/dev/urandom of=/mnt/vda/f bs=1M count=40 2>/dev/null; sync; md5sum /mnt/vda/f', 180_000));
  const pid = (await src.client.getDomain('md1')).pid;

  // 1. The target dies during the disk copy.
  const targetPid = dst.daemon!.pid!;
  let killed = false;
  const m1 = await src.cliAsync(['migrate', 'md1', TARGET, '--live', '--copy-storage'], (err) => {
    if (!killed && /storage \d/.test(err)) {
      killed = true;
      process.kill(targetPid, 'SIGKILL');
    }
  });
  assert.equal(killed, true, `the copy showed storage progress (${m1.stderr})`);
  assert.equal(m1.code, 1, `the migration fails (${m1.stdout} ${m1.stderr})`);
  assert.match(m1.stderr, /^xvm: /m);
  const info = await src.client.getDomain('md1');
  assert.equal(info.state, 'running', 'the source guest runs on');
  assert.equal(info.pid, pid, 'in the same QEMU');
  assert.equal(md5(await con.run('echo 3 > /proc/sys/vm/drop_caches; md5sum /mnt/vda/f', 60_000)), sum, 'its disk is intact');
  assert.equal((await con.run('echo ok > /mnt/vda/after-kill && sync && cat /mnt/vda/after-kill', 60_000)).trim(), 'ok', 'and writable');
  await waitUntil(() => dst.daemon?.exitCode !== null || dst.daemon?.signalCode !== null, 10_000, 'the killed target to be gone');
  dst.daemon = undefined;
  await startTarget(dst, TARGET);
  await waitUntil(async () => (await dst.client.listDomains()).length === 0, 30_000, 'the target to remove the half-received domain');
  assert.deepEqual(volumes(dst), [], 'no half-copied volume on the target');
  assert.deepEqual(volumes(src), ['data'], 'the source volume is still there');

  // 2. The move, while the guest writes to the disk every second.
  con.send('i=0; while true; do i=$((i+1)); dd if=/dev/urandom of=/mnt/vda/w bs=64k count=4 conv=fsync 2>/dev/null; echo W=$i; sleep 1; done &');
  await con.waitFor('W=2\r\n', 60_000);
  const r = await src.cliAsync(['migrate', 'md1', TARGET, '--live', '--copy-storage', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout) as { storage: string; storageBytes: number; storagePasses: number; downtimeMs: number; bytes: number };
  t.diagnostic(`copy-storage migration: ${JSON.stringify(res)}`);
  assert.equal(res.storage, 'copy');
  assert.ok(res.storageBytes >= 40 << 20, `the disk went over the wire (${res.storageBytes} bytes)`);
  assert.ok(res.storagePasses >= 1);
  const lastBefore = Math.max(0, ...writes(con.output));
  con.close();
  await waitUntil(() => !pidAlive(pid!), 15_000, "the source's QEMU to exit");
  assert.equal((await src.client.listDomains()).some((d) => d.name === 'md1'), false, 'the domain left the source');
  assert.deepEqual(volumes(dst), ['data'], 'the volume is on the target now');

  const tc = new ConsoleSession(dst.client, 'md1', 0);
  await tc.ready();
  await waitUntil(() => writes(tc.output).some((v) => v > lastBefore + 2), 90_000, `the guest to keep writing on the target (after W=${lastBefore}: ${JSON.stringify(tc.output.slice(-200))})`);
  assert.equal(tc.output.includes(READY_BANNER), false, 'no boot on the target');
  tc.send('kill $!');
  assert.equal(md5(await tc.run('sync; echo 3 > /proc/sys/vm/drop_caches; md5sum /mnt/vda/f', 60_000)), sum, 'the file is intact on the target');
  const sum2 = md5(await tc.run('dd if=/dev/urandom of=/mnt/vda/g bs=1M count=2 2>/dev/null; sync; echo 3 > /proc/sys/vm/drop_caches; md5sum /mnt/vda/g', 60_000));
  assert.equal(md5(await tc.run('md5sum /mnt/vda/g', 60_000)), sum2);
  await tc.run('sync; umount /mnt/vda; echo done', 60_000);
  tc.close();
  await dst.client.destroy('md1');
  await dst.client.undefineDomain('md1').catch(() => undefined);
  const vol = JSON.parse(cli(dst, ['vol', 'info', 'data', '--json'])) as { path: string; format: string };
  assert.equal(vol.format, 'qcow2');
  const chk = spawnSync('qemu-img', ['check', vol.path], { encoding: 'utf8' });
  assert.equal(chk.status, 0, `qemu-img check of the target's volume: ${chk.stdout}${chk.stderr}`);
  // The whole file system is consistent (the last pass carried the blocks written during the move).
  const flat = path.join(shared, 'flat.raw');
  execFileSync('qemu-img', ['convert', '-O', 'raw', vol.path, flat]);
  const fsck = spawnSync('e2fsck', ['-fn', flat], { encoding: 'utf8' });
  assert.equal(fsck.status, 0, `e2fsck of the moved disk: ${fsck.stdout}${fsck.stderr}`);
  fs.rmSync(flat);
  cli(dst, ['vol', 'delete', 'data']);
});

test('shared storage and a NIC: the image is handed over, the guest keeps its DHCP address and answers on the target', { timeout: 600_000 }, async (t) => {
  const disk = path.join(shared, 'shared.raw');
  execFileSync('truncate', ['-s', '64M', disk]);
  execFileSync('mkfs.ext4', ['-q', '-F', disk]);
  // And a volume in a pool both hosts have at the same path (shared storage).
  const poolDir = path.join(shared, 'pool');
  fs.mkdirSync(poolDir);
  cli(src, ['pool', 'create', 'shared', '--path', poolDir]);
  cli(dst, ['pool', 'create', 'shared', '--path', poolDir]);
  cli(src, ['vol', 'create', 'shared/sv', '--size', '32M', '--format', 'raw']);
  const svPath = (JSON.parse(cli(src, ['vol', 'info', 'shared/sv', '--json'])) as { path: string }).path;
  execFileSync('mkfs.ext4', ['-q', '-F', svPath]);
  const con = await boot(src, { name: 'md2', disk: [`${disk},raw,xvda,w`, 'vol=shared/sv,xvdb,w'], vif: ['network=default'] });
  assert.match(con.output, /disks=vda,?vdb|disks=vda vdb/);
  let ip = '';
  await waitUntil(
    async () => {
      ip = (await con.run("ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p'", 30_000)).trim();
      return /^\d+\.\d+\.\d+\.\d+$/.test(ip);
    },
    120_000,
    'a DHCP address',
  );
  const sum = md5(await con.run('dd if=/dev/urandom of=/mnt/vda/f bs=1k count=900 2>/dev/null; sync; md5sum /mnt/vda/f', 60_000));
  const sumV = md5(await con.run('dd if=/dev/urandom of=/mnt/vdb/v bs=1k count=300 2>/dev/null; sync; md5sum /mnt/vdb/v', 60_000));
  const pid = (await src.client.getDomain('md2')).pid!;
  const mac = (await con.run('cat /sys/class/net/eth0/address')).trim();
  // A listener in the guest, started before the move, that the target host's side connects to after it.
  await con.run('echo hello-from-md2 > /tmp/m; (nc -l -p 7001 < /tmp/m >/dev/null 2>&1 &)', 30_000);

  const r = await src.cliAsync(['migrate', 'md2', TARGET, '--live', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout) as { storage: string; downtimeMs: number };
  t.diagnostic(`shared-storage migration: ${JSON.stringify(res)}`);
  assert.equal(res.storage, 'shared');
  con.close();
  await waitUntil(() => !pidAlive(pid), 15_000, "the source's QEMU to exit");

  // The address answers on the target, from the target host's side (the TAP uplink of its network default).
  const net = await dst.client.networkInfo('default');
  assert.ok(net.uplink, "the target's network has a host uplink");
  const probe = `const c = require('net').connect(7001, '${ip}'); let t = ''; c.setTimeout(5000, () => c.destroy()); c.on('data', (d) => (t += d)); c.on('error', () => {}); c.on('close', () => { process.stdout.write(t); });`;
  let got = '';
  await waitUntil(
    () => {
      got = spawnSync('ip', ['netns', 'exec', 'save-b', process.execPath, '-e', probe], { encoding: 'utf8', timeout: 15_000 }).stdout;
      return got.includes('hello-from-md2');
    },
    60_000,
    `the guest's address ${ip} to answer on the target (${got})`,
  );
  // The lease moved with it: the target's network knows this MAC's address.
  assert.ok(net.leases.some((l) => l.mac.toLowerCase() === mac && l.ip === ip), `the target's lease table has ${mac} → ${ip}: ${JSON.stringify(net.leases)}`);

  const tc = new ConsoleSession(dst.client, 'md2', 0);
  await tc.ready();
  assert.equal(md5(await tc.run('echo 3 > /proc/sys/vm/drop_caches; md5sum /mnt/vda/f', 60_000)), sum, 'the file is intact');
  assert.equal((await tc.run('echo moved > /mnt/vda/m && sync && cat /mnt/vda/m', 60_000)).trim(), 'moved', 'the disk is writable on the target');
  assert.equal(md5(await tc.run('md5sum /mnt/vdb/v', 60_000)), sumV, 'the file on the shared volume is intact');
  assert.equal((await tc.run('echo moved > /mnt/vdb/m && sync && cat /mnt/vdb/m', 60_000)).trim(), 'moved', 'the shared volume is writable on the target');
  assert.match(await tc.run(`ping -c 1 -W 5 ${net.gateway} >/dev/null && echo gw-ok`, 60_000), /gw-ok/, 'and the guest reaches its gateway');
  // The target's backend holds the image now: the source's let go of it.
  const holder = spawnSync('sh', ['-c', `flock -n -x ${disk} true; echo $?`], { encoding: 'utf8' }).stdout.trim();
  assert.equal(holder, '1', 'the image is locked by its (target) backend');
  await tc.run('sync; umount /mnt/vda /mnt/vdb; echo ok', 60_000);
  tc.close();
  await dst.client.destroy('md2');
  await dst.client.undefineDomain('md2').catch(() => undefined);
  const fsck = spawnSync('e2fsck', ['-fn', svPath], { encoding: 'utf8' });
  assert.equal(fsck.status, 0, `e2fsck of the shared volume: ${fsck.stdout}${fsck.stderr}`);
});

test('the target dies after the source let go of the images: the source takes them back and its guest runs on, disk intact and writable', { timeout: 300_000 }, async () => {
  const disk = path.join(shared, 'handover.raw');
  execFileSync('truncate', ['-s', '64M', disk]);
  execFileSync('mkfs.ext4', ['-q', '-F', disk]);
  await dst.stopDaemon();
  await dst.startDaemon({ netns: 'save-b', env: { XVM_RELOCATION_LISTEN: TARGET, XVM_TEST: '1', XVM_TEST_RELOCATION_DIE: 'takeover' } });
  try {
    const con = await boot(src, { name: 'md4', disk: [`${disk},raw,xvda,w`] });
    const sum = md5(await con.run('dd if=/dev/urandom of=/mnt/vda/f bs=1k count=500 2>/dev/null; sync; md5sum /mnt/vda/f', 60_000));
    const pid = (await src.client.getDomain('md4')).pid;
    const r = await src.cliAsync(['migrate', 'md4', TARGET, '--live']);
    assert.equal(r.code, 1, `the migration fails (${r.stdout} ${r.stderr})`);
    assert.match(r.stderr, /^xvm: /m);
    assert.match(fs.readFileSync(path.join(src.home, 'log', 'backends', 'md4-xvda.log'), 'utf8'), /image released[\s\S]*image opened read-write/, 'the source backend let go of the image and took it back');
    const info = await src.client.getDomain('md4');
    assert.equal(info.state, 'running');
    assert.equal(info.pid, pid);
    assert.equal(md5(await con.run('echo 3 > /proc/sys/vm/drop_caches; md5sum /mnt/vda/f', 60_000)), sum, 'the disk is intact');
    assert.equal((await con.run('echo still > /mnt/vda/s && sync && cat /mnt/vda/s', 60_000)).trim(), 'still', 'and writable');
    assert.equal(spawnSync('sh', ['-c', `flock -n -x ${disk} true; echo $?`], { encoding: 'utf8' }).stdout.trim(), '1', "the source's backend holds the image again");
    await con.run('sync; umount /mnt/vda; echo ok', 60_000);
    con.close();
    await src.client.destroy('md4');
  } finally {
    const gone = () => dst.daemon?.exitCode !== null || dst.daemon?.signalCode !== null;
    await waitUntil(gone, 15_000, 'the target to be gone').catch(() => undefined);
    if (gone()) dst.daemon = undefined;
    else await dst.stopDaemon();
    await startTarget(dst, TARGET);
  }
  await waitUntil(async () => (await dst.client.listDomains()).length === 0, 30_000, 'the restarted target to remove the half-received domain');
  const fsck = spawnSync('e2fsck', ['-fn', disk], { encoding: 'utf8' });
  assert.equal(fsck.status, 0, `e2fsck of the disk: ${fsck.stdout}${fsck.stderr}`);
});

test('a NIC on a network the target lacks: refused before anything moves; the guest runs on', { timeout: 300_000 }, async () => {
  cli(src, ['net', 'create', 'lab', '--subnet', '10.0.77.0/24']);
  const con = await boot(src, { name: 'md3', vif: ['network=lab'] });
  const pid = (await src.client.getDomain('md3')).pid;
  const r = await src.cliAsync(['migrate', 'md3', TARGET, '--live']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /network 'lab', which this host does not have/);
  assert.equal((await src.client.getDomain('md3')).state, 'running');
  assert.equal((await src.client.getDomain('md3')).pid, pid);
  assert.equal(await con.run('echo $((6*7))'), '42');
  assert.equal((await dst.client.listDomains()).some((d) => d.name === 'md3'), false, 'nothing was made on the target');
  con.close();
  await src.client.destroy('md3');
});
