// Guests use our disks, through xvmd: a domain with a `vol=` disk boots and
// the guest writes to the ext4 file system on it, the host reads the file
// back; the backend is killed with the guest's I/O in flight and xvmd brings
// it back; hot plug and unplug; clones don't touch their base; a snapshot of
// a paused domain's disk (switched in place) and a rollback; `xvm clone`; clear errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { TestHost, ConsoleSession, READY_BANNER, waitUntil, sleep } from '../helpers/xvm.js';
import { pidAlive } from '../../src/engine/process.js';

const host = new TestHost('xvmk');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-disks-'));
const pool = () => path.join(host.home, 'lib', 'pools', 'default');

function cli(args: string[]): string {
  const r = host.cli(args);
  assert.equal(r.code, 0, `xvm ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

function md5(b: Buffer | string): string {
  return crypto.createHash('md5').update(b).digest('hex');
}

function sumOf(out: string): string {
  const m = /\b([0-9a-f]{32})\b/.exec(out);
  assert.ok(m, `no checksum in guest output: ${out}`);
  return m[1]!;
}

/** A file's contents from an ext4 image (raw, or qcow2 converted to raw first). */
function readExt4(image: string, file: string): Buffer | undefined {
  let raw = image;
  if (fs.readFileSync(image).subarray(0, 4).toString('latin1') === 'QFI\xfb') {
    raw = path.join(tmp, `conv-${Date.now()}.raw`);
    execFileSync('qemu-img', ['convert', '-O', 'raw', image, raw]);
  }
  try {
    const r = spawnSync('debugfs', ['-R', `cat ${file}`, raw], { maxBuffer: 64 << 20 });
    if (/File not found/.test(r.stderr.toString())) return undefined;
    assert.equal(r.status, 0, r.stderr.toString());
    return r.stdout;
  } finally {
    if (raw !== image) fs.rmSync(raw, { force: true });
  }
}

function qemuImgCheck(image: string): void {
  const r = spawnSync('qemu-img', ['check', image], { encoding: 'utf8' });
  assert.equal(r.status, 0, `qemu-img check ${image}: ${r.stdout}${r.stderr}`);
}

async function boot(name: string, disks: string[]): Promise<ConsoleSession> {
  const info = await host.client.createDomain({ config: { name, memory: 128, disk: disks }, start: true });
  assert.equal(info.state, 'running');
  const con = new ConsoleSession(host.client, name, 1 << 20);
  await con.ready();
  // The whole banner line (disks=…), not just its first word.
  await con.waitFor(new RegExp(`${READY_BANNER}[^\\n]*\\n`), 120_000);
  return con;
}

async function destroy(con: ConsoleSession, name: string): Promise<void> {
  await con.run('sync; umount /mnt/vda 2>/dev/null; sync; echo ok', 60_000);
  con.close();
  await host.client.destroy(name);
}

let dataPath = '';

before(async () => {
  await host.startDaemon();
  cli(['vol', 'create', 'data', '--size', '64M', '--format', 'raw']);
  const info = JSON.parse(cli(['vol', 'info', 'data', '--json'])) as { path: string; format: string };
  dataPath = info.path;
  assert.equal(info.format, 'raw');
  execFileSync('mkfs.ext4', ['-q', '-F', dataPath]);
});

after(async () => {
  const pids = host.blkPids();
  await host.cleanup();
  for (const pid of pids) {
    if (pidAlive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('a vol= disk: the guest mounts it and writes, a killed backend comes back mid-I/O, hot plug works, the host reads the data back', { timeout: 300_000 }, async () => {
  const con = await boot('d1', ['vol=default/data,xvdb,w']);
  assert.match(con.output, /disks=vda/, 'the guest mounted the ext4 volume');
  const disks = await host.client.listDisks('d1');
  assert.deepEqual(disks.map((d) => [d.vdev, d.vol, d.readOnly]), [['xvdb', 'default/data', false]]);

  // An image in use read-write is refused to a second domain.
  await assert.rejects(
    host.client.createDomain({ config: { name: 'd1b', memory: 128, disk: ['vol=default/data,xvdb,r'] }, start: true }),
    /default\/data is already in use read-write by domain 'd1'/,
  );
  assert.equal((await host.client.listDomains()).some((d) => d.name === 'd1b'), false, 'a refused create leaves nothing behind');

  // The guest writes a file and its checksum.
  const sum = sumOf(await con.run('dd if=/dev/urandom of=/mnt/vda/f bs=1k count=700 2>/dev/null; sync; md5sum /mnt/vda/f', 60_000));

  // Its writes show in the per-device counters (xvm top, /metrics), from the backend's own count.
  let written = 0;
  await waitUntil(async () => {
    const st = (await host.client.stats()).domains.find((d) => d.name === 'd1');
    written = st?.devices.find((c) => c.kind === 'disk' && c.device === 'xvdb')?.writeBytes ?? 0;
    return written >= 700 * 1024;
  }, 30_000, 'the disk counters to show the 700 KiB written');
  const prom = await host.client.metrics();
  const line = prom.split('\n').find((l) => l.startsWith('xvm_disk_write_bytes_total{domain="d1",device="xvdb"}'));
  assert.ok(line && Number(line.split(' ')[1]) >= 700 * 1024, `metrics line ${line}`);
  const top = host.cli(['top', '--batch', '--iterations', '1']);
  assert.equal(top.code, 0, top.stderr);
  assert.match(top.stdout, /VBD_RD\(k\/s\)\s+VBD_WR\(k\/s\)\s+NET_RX\(k\/s\)\s+NET_TX\(k\/s\)/);

  // kill -9 the backend while the guest writes: xvmd restarts it, QEMU reconnects, the write completes.
  const pid0 = host.blkPids()[0]!;
  const src = sumOf(await con.run('dd if=/dev/urandom of=/tmp/src bs=64k count=128 2>/dev/null; md5sum /tmp/src', 60_000));
  const writing = con.run('dd if=/tmp/src of=/mnt/vda/g bs=64k conv=fsync 2>/dev/null; echo 3 > /proc/sys/vm/drop_caches; md5sum /mnt/vda/g', 180_000);
  await sleep(300);
  process.kill(pid0, 'SIGKILL');
  await waitUntil(() => host.blkPids()[0] !== pid0 && pidAlive(host.blkPids()[0]!), 30_000, 'xvmd to restart the backend');
  assert.equal(sumOf(await writing), src, 'the data written across the backend restart reads back intact');
  const events = fs.readFileSync(path.join(host.home, 'log', 'devices.log'), 'utf8');
  assert.match(events, /"kind":"disk-backend-restart","domain":"d1","device":"xvdb","oldPid":\d+/);

  // Hot plug: a new qcow2 volume appears in the guest as vdb, takes I/O, and goes away.
  cli(['vol', 'create', 'hot', '--size', '16M']);
  assert.match(cli(['block-attach', 'd1', 'vol=default/hot', 'xvdc']), /disk xvdc \(rw, qcow2\) attached to d1/);
  await waitUntil(async () => (await con.run('ls /sys/block')).includes('vdb'), 60_000, 'vdb in the guest');
  const hsum = sumOf(await con.run('dd if=/dev/urandom of=/tmp/h bs=4k count=256 2>/dev/null; dd if=/tmp/h of=/dev/vdb bs=4k oflag=direct 2>/dev/null; dd if=/dev/vdb bs=4k count=256 iflag=direct 2>/dev/null | md5sum', 60_000));
  assert.equal(hsum, sumOf(await con.run('md5sum /tmp/h')));
  const bad = host.cli(['block-attach', 'd1', 'vol=default/hot', 'xvdd']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /already in use read-write by this domain's xvdc/);
  assert.match(cli(['block-detach', 'd1', 'xvdc']), /disk xvdc detached from d1/);
  await waitUntil(async () => !(await con.run('ls /sys/block')).includes('vdb'), 60_000, 'vdb to leave the guest');
  assert.deepEqual((await host.client.listDisks('d1')).map((d) => d.vdev), ['xvdb']);

  // An xvmd restart leaves the backend serving; the new xvmd re-adopts it.
  con.close();
  const pidBefore = host.blkPids()[0]!;
  await host.stopDaemon();
  await host.startDaemon();
  assert.deepEqual((await host.client.listDisks('d1')).map((d) => d.vdev), ['xvdb']);
  assert.equal(host.blkPids()[0], pidBefore, 'the same backend process serves on');
  const con2 = new ConsoleSession(host.client, 'd1', 0);
  await con2.ready();
  assert.equal(sumOf(await con2.run('echo 3 > /proc/sys/vm/drop_caches; md5sum /mnt/vda/f', 60_000)), sum);

  await destroy(con2, 'd1');
  assert.deepEqual(host.blkPids(), [], 'destroy stops the backends');
  const f = readExt4(dataPath, '/f');
  assert.ok(f, 'the file is on the volume');
  assert.equal(md5(f), sum, 'the host reads back what the guest wrote');
  assert.equal(md5(readExt4(dataPath, '/g')!), src);
  const hot = JSON.parse(cli(['vol', 'info', 'hot', '--json'])) as { path: string };
  qemuImgCheck(hot.path);
  const hotRaw = path.join(tmp, 'hot.raw');
  execFileSync('qemu-img', ['convert', '-O', 'raw', hot.path, hotRaw]);
  assert.equal(md5(fs.readFileSync(hotRaw).subarray(0, 1 << 20)), hsum, 'the hot-plugged disk holds what the guest wrote');
});

test('a clone boots and its writes leave the base alone; snapshots of a paused and a running domain\'s disk switched in place, rollback, xvm clone', { timeout: 300_000 }, async () => {
  const baseSum = md5(fs.readFileSync(dataPath));
  cli(['vol', 'clone', 'data', 'c1']);
  const con = await boot('d2', ['vol=default/c1,xvdb,w']);
  assert.equal((await con.run('cat /mnt/vda/f | md5sum')).slice(0, 32), md5(readExt4(dataPath, '/f')!), 'the clone starts with the base\'s data');
  await con.run('echo before > /mnt/vda/a; rm /mnt/vda/f; sync', 60_000);

  // A paused domain's disk and a running one's are both switched to the
  // new top layer in place: the backend (same pid) flushes, closes the old
  // layer and opens the new one; QEMU never reconnects.
  const pidsBefore = host.blkPids();
  cli(['pause', 'd2']);
  assert.match(cli(['vol', 'snapshot', 'c1', 's1']), /snapshot s1 of default\/c1 taken/);
  assert.equal((await host.client.getDomain('d2')).state, 'paused', 'a snapshot leaves a paused domain paused');
  cli(['unpause', 'd2']);
  await con.run('echo after > /mnt/vda/b; echo changed > /mnt/vda/a; sync; echo 3 > /proc/sys/vm/drop_caches', 60_000);
  assert.equal(await con.run('cat /mnt/vda/a /mnt/vda/b'), 'changed\nafter');
  // Twice more, paused then running (QEMU 7.2 used to lose the disk at the
  // second backend restart after a paused one): the guest's disk still works.
  cli(['pause', 'd2']);
  assert.match(cli(['vol', 'snapshot', 'c1', 's2']), /snapshot s2 of default\/c1 taken/);
  cli(['unpause', 'd2']);
  await con.run('echo third > /mnt/vda/c; sync', 60_000);
  assert.match(cli(['vol', 'snapshot', 'c1', 's3']), /snapshot s3 of default\/c1 taken/);
  assert.equal((await host.client.getDomain('d2')).state, 'running');
  await con.run('echo fourth > /mnt/vda/d; sync; echo 3 > /proc/sys/vm/drop_caches', 60_000);
  assert.equal(await con.run('cat /mnt/vda/a /mnt/vda/b /mnt/vda/c /mnt/vda/d'), 'changed\nafter\nthird\nfourth');
  assert.deepEqual(host.blkPids(), pidsBefore, 'the backend was not restarted');
  let r = host.cli(['vol', 'rollback', 'c1', 's1']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /in use by running domain 'd2'/);
  await destroy(con, 'd2');

  const c1 = JSON.parse(cli(['vol', 'info', 'c1', '--json'])) as { path: string; chain: { path: string }[] };
  for (const l of c1.chain) if (l.path !== dataPath) qemuImgCheck(l.path);
  assert.equal(readExt4(c1.path, '/b')?.toString(), 'after\n');
  assert.equal(readExt4(c1.path, '/d')?.toString(), 'fourth\n', 'the guest\'s last write is in the volume');
  assert.equal(c1.chain.length, 5, 'base, the clone\'s first layer, three snapshot layers');
  assert.equal(md5(fs.readFileSync(dataPath)), baseSum, 'the base is untouched by the clone\'s writes');

  cli(['vol', 'rollback', 'c1', 's1', '--force']);
  const c1b = JSON.parse(cli(['vol', 'info', 'c1', '--json'])) as { path: string };
  assert.equal(readExt4(c1b.path, '/a')?.toString(), 'before\n', 'rollback brings the snapshot\'s data back');
  assert.equal(readExt4(c1b.path, '/b'), undefined, 'what was written after the snapshot is gone');
  assert.equal(readExt4(c1b.path, '/f'), undefined);

  // The base can't be written while clones depend on it.
  await assert.rejects(host.client.createDomain({ config: { name: 'd3', memory: 128, disk: ['vol=default/data,xvdb,w'] }, start: true }), /read-only base of clones/);

  // xvm clone: new name and UUID, the vol= disk cloned.
  const d2 = await host.client.getDomain('d2');
  assert.match(cli(['clone', 'd2', 'd4']), /domain d4 cloned from d2/);
  const d4 = await host.client.getDomain('d4');
  assert.notEqual(d4.uuid, d2.uuid);
  assert.deepEqual((d4.config.disk as { vdev: string; vol?: string; access: string }[]).map((x) => [x.vdev, x.vol, x.access]), [['xvdb', 'default/d4-xvdb', 'rw']]);
  const vols = JSON.parse(cli(['vol', 'list', '--json'])) as { name: string; base: string | null; readOnly: boolean }[];
  assert.equal(vols.find((v) => v.name === 'd4-xvdb')?.base, 'c1');
  assert.equal(vols.find((v) => v.name === 'c1')?.readOnly, true);
  r = host.cli(['vol', 'delete', 'c1']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /d4-xvdb/);
});

test('disks in vdev order whatever the list order (xvda is vda); Xen-style vbd entries in the store while the domain runs, gone after destroy', { timeout: 300_000 }, async () => {
  const disk = (tag: string): string => {
    const f = path.join(tmp, `order-${tag}.raw`);
    const b = Buffer.alloc(1 << 20);
    b.write(`XVM-DISK-${tag.toUpperCase()}-MARK`, 0, 'latin1');
    fs.writeFileSync(f, b);
    return f;
  };
  const a = disk('xvda');
  const b = disk('xvdb');
  // xvdb is listed first.
  const con = await boot('ord', [`${b},raw,xvdb,r`, `${a},raw,xvda,r`]);
  assert.equal(await con.run('dd if=/dev/vda bs=18 count=1 2>/dev/null; echo'), 'XVM-DISK-XVDA-MARK', 'the guest\'s vda is xvda');
  assert.equal(await con.run('dd if=/dev/vdb bs=18 count=1 2>/dev/null; echo'), 'XVM-DISK-XVDB-MARK', 'the guest\'s vdb is xvdb');

  const domid = (await host.client.getDomain('ord')).domid;
  assert.ok(typeof domid === 'number' && domid > 0);
  const fe = `/local/domain/${domid}/device/vbd`;
  const be = `/local/domain/0/backend/vbd/${domid}`;
  const entries = (p: string) => (JSON.parse(cli(['store', 'ls', p, '--json'])) as { path: string; value: string }[]).reduce<Record<string, string>>((m, e) => ((m[e.path] = e.value), m), {});
  const front = entries(fe);
  const back = entries(be);
  for (const [devid, vdev, file] of [[51712, 'xvda', a], [51728, 'xvdb', b]] as const) {
    assert.equal(front[`${fe}/${devid}/backend`], `${be}/${devid}`, `${vdev}: frontend names its backend`);
    assert.equal(front[`${fe}/${devid}/backend-id`], '0');
    assert.equal(front[`${fe}/${devid}/virtual-device`], String(devid));
    assert.equal(back[`${be}/${devid}/frontend`], `${fe}/${devid}`, `${vdev}: backend names its frontend`);
    assert.equal(back[`${be}/${devid}/frontend-id`], String(domid));
    assert.equal(back[`${be}/${devid}/dev`], vdev);
    assert.equal(back[`${be}/${devid}/params`], file);
    assert.equal(back[`${be}/${devid}/mode`], 'r');
  }
  con.close();
  await host.client.destroy('ord');
  for (const p of [fe, be]) {
    const r = host.cli(['store', 'ls', p]);
    assert.notEqual(r.code, 0, `${p} is gone after destroy`);
  }
  await host.client.undefineDomain('ord');
});

test('clear errors (missing volume, bad vdev, bad target, image in use twice, malformed requests); pools and import through the CLI', { timeout: 60_000 }, async () => {
  await assert.rejects(host.client.createDomain({ config: { name: 'e1', memory: 128, disk: ['vol=default/nosuch,xvdb,w'] }, start: true }), /disk xvdb: .*nosuch/);
  await assert.rejects(host.client.createDomain({ config: { name: 'e2', memory: 128, disk: ['vol=default/data,xvd1,w'] }, start: true }), /xvd1/);
  await assert.rejects(host.client.createDomain({ config: { name: 'e3', memory: 128, disk: ['/nonexistent/x.img,raw,xvdb,w'] }, start: true }), /cannot open \/nonexistent\/x.img: ENOENT/);
  await assert.rejects(host.client.createDomain({ config: { name: 'e4', memory: 128, disk: ['/dev/null,raw,xvdc,r,devtype=cdrom'] }, start: true }), /disk xvdc is a cdrom; pv domains have no cdrom device yet/);
  await assert.rejects(host.client.createDomain({ config: { name: 'e5', memory: 128, disk: ['vol=default/hot,xvdb,w', 'vol=default/hot,xvdc,w'] }, start: true }), /disk xvdc: default\/hot is already in use read-write by this domain's xvdb/);
  const names = (await host.client.listDomains()).map((d) => d.name);
  for (const n of ['e1', 'e2', 'e3', 'e4', 'e5']) assert.equal(names.includes(n), false, `${n} left behind`);
  assert.deepEqual(host.blkPids(), [], 'refused starts leave no backend behind');
  let r = host.cli(['vol', 'list', 'nopool']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /nopool/);
  r = host.cli(['block-detach', 'd2', 'xvdb']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot detach a disk from domain 'd2': it is (shutdown|defined)/);
  await assert.rejects(host.client.blockAttach('d2', 'relative.img', 'xvdz'), /TARGET must be vol=POOL\/NAME or an absolute path|cannot attach/);
  // Malformed bodies get a 4xx with a message, never a crash; the routes are documented.
  const junk: unknown[] = [null, 1, 'x', [], {}, { name: 5 }, { name: '../etc' }, { size: -1, name: 'q' }, { name: 'q', size: '1Q' }, { target: '', vdev: 'xvdq' }, { snapshot: 'a/b' }, { name: 'q', source: 'rel' }, { extra: true }];
  const routes = ['/v1/pools', '/v1/pools/default/volumes', '/v1/pools/default/volumes/data/resize', '/v1/pools/default/volumes/data/clone', '/v1/pools/default/volumes/c1/snapshot', '/v1/pools/default/volumes/c1/rollback', '/v1/pools/default/import', '/v1/domains/d2/disks', '/v1/domains/d2/clone', '/v1/pools/no%00pe/volumes'];
  for (const route of routes) {
    for (const body of junk) {
      const res = await host.client.rawRequest('POST', route, body);
      assert.ok(res.status >= 400 && res.status < 500, `POST ${route} ${JSON.stringify(body)} -> ${res.status} ${res.body}`);
      assert.ok((JSON.parse(res.body) as { error: { message: string } }).error.message.length > 0);
    }
  }
  assert.equal((await host.client.host()).version.length > 0, true);
  const doc = (await host.client.openapi()) as { paths: Record<string, Record<string, unknown>> };
  for (const [p, m] of [['/v1/pools', 'post'], ['/v1/pools/{pool}/volumes/{vol}/snapshot', 'post'], ['/v1/domains/{name}/disks', 'post'], ['/v1/domains/{name}/disks/{vdev}', 'delete'], ['/v1/domains/{name}/clone', 'post']] as const) {
    assert.ok(doc.paths[p]?.[m], `${m.toUpperCase()} ${p} is documented`);
  }
  // Pools and import through the CLI.
  const pdir = path.join(tmp, 'pool2');
  fs.mkdirSync(pdir);
  assert.match(cli(['pool', 'create', 'p2', '--path', pdir]), /pool p2 created at/);
  const src = path.join(tmp, 'src.raw');
  const data = crypto.randomBytes(3 << 20);
  fs.writeFileSync(src, Buffer.concat([data, Buffer.alloc(5 << 20)]));
  r = host.cli(['vol', 'import', 'p2/imp', src, '--format', 'qcow2']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /volume p2\/imp imported \(qcow2, 8 MiB\)/);
  const imp = JSON.parse(cli(['vol', 'info', 'p2/imp', '--json'])) as { path: string; format: string };
  assert.equal(imp.format, 'qcow2');
  execFileSync('qemu-img', ['compare', '-q', src, imp.path]);
  qemuImgCheck(imp.path);
  const pools = JSON.parse(cli(['pool', 'list', '--json'])) as { name: string; volumes: number }[];
  assert.deepEqual(pools.map((p) => [p.name, p.volumes]).sort(), [['default', 4], ['p2', 1]]);
  r = host.cli(['pool', 'delete', 'p2']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /p2/);
  cli(['vol', 'delete', 'p2/imp']);
  assert.match(cli(['pool', 'delete', 'p2']), /pool p2 deleted/);
  r = host.cli(['vol', 'create', 'x/y/z', '--size', '1M']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /bad volume reference/);
});
