// Save and restore with real guests: a guest counting on its console is
// saved and restored and keeps counting (no second boot), a file on its vol=
// disk is intact and the disk still works; corrupt, truncated and
// wrong-version files are refused before anything starts; --checkpoint
// leaves the guest running and the checkpoint restores as a copy; `xvm
// daemon stop --domains=save` and the next start bring a guest back.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { TestHost, ConsoleSession, READY_BANNER, waitUntil } from '../helpers/xvm.js';
import { pidAlive } from '../../src/engine/process.js';

const host = new TestHost('xvms');
const files = () => path.join(host.home, 'files');

function cli(args: string[], timeoutMs?: number): string {
  const r = host.cli(args, { timeoutMs });
  assert.equal(r.code, 0, `xvm ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** Every counter value C=n printed on a console (in order). */
function counts(text: string): number[] {
  return [...text.matchAll(/C=(\d+)\r?\n/g)].map((m) => Number(m[1]));
}

/** The highest counter value in what xvmd logged of a domain's console (complete up to now, unlike a websocket that may lag). */
function logged(name: string): number {
  return Math.max(0, ...counts(fs.readFileSync(path.join(host.home, 'log', 'console', `${name}.log`), 'utf8')));
}

/**
 * The counter values xvmd logged of a domain's console since its last
 * restore (the log is complete and in order; a websocket client may still be
 * receiving lines from before the save when the restore is done).
 */
function loggedSinceRestore(name: string): number[] {
  const text = fs.readFileSync(path.join(host.home, 'log', 'console', `${name}.log`), 'utf8');
  return counts(text.slice(text.lastIndexOf('[xvm] restored from ')));
}

function banners(text: string): number {
  return text.split(READY_BANNER).length - 1;
}

async function bootCounting(name: string, disks: string[] = []): Promise<ConsoleSession> {
  await host.client.createDomain({ config: { name, memory: 128, disk: disks }, start: true });
  const con = new ConsoleSession(host.client, name, 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 120_000);
  con.send('i=0; while true; do i=$((i+1)); echo C=$i; sleep 1; done &');
  await con.waitFor('C=3\r\n', 60_000);
  return con;
}

/** Waits until the console shows a counter value above `n`; returns the values seen after `from`. */
async function countsAbove(con: ConsoleSession, n: number, from: number, timeoutMs = 60_000): Promise<number[]> {
  await waitUntil(() => counts(con.output.slice(from)).some((v) => v > n), timeoutMs, `the counter to pass ${n} (got ${JSON.stringify(con.output.slice(-200))})`);
  return counts(con.output.slice(from));
}

function qemuStarts(name: string): number {
  const log = fs.readFileSync(path.join(host.home, 'log', 'devices.log'), 'utf8');
  return log.split('\n').filter((l) => l.includes('"kind":"qemu-start"') && l.includes(`"domain":"${name}"`)).length;
}

before(async () => {
  await host.startDaemon();
  fs.mkdirSync(files());
  cli(['vol', 'create', 'data', '--size', '32M', '--format', 'raw']);
  const info = JSON.parse(cli(['vol', 'info', 'data', '--json'])) as { path: string };
  execFileSync('mkfs.ext4', ['-q', '-F', info.path]);
});

after(async () => {
  const pids = host.blkPids();
  await host.cleanup();
  for (const pid of pids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
});

let savedFile = '';

test('xvm save stops a counting guest into one file; xvm restore continues it: same counter, no reboot, vol= disk intact and working', { timeout: 400_000 }, async () => {
  const c = host.client;
  const con = await bootCounting('s1', ['vol=default/data,xvdb,w']);
  assert.match(con.output, /disks=vda/, 'the guest mounted its vol= disk');
  const written = await con.run('dd if=/dev/urandom of=/mnt/vda/f bs=1k count=300 2>/dev/null; sync; md5sum /mnt/vda/f | cut -c1-32', 60_000);
  assert.match(written, /^[0-9a-f]{32}$/);
  const uptimeBefore = Number((await con.run('cut -d" " -f1 /proc/uptime')).trim());
  const before = await c.getDomain('s1');
  const qemuPid = before.pid!;
  const blkPids = host.blkPids();
  assert.equal(blkPids.length, 1);

  savedFile = path.join(files(), 's1.xvmsave');
  const r = JSON.parse(cli(['save', 's1', savedFile, '--json'], 300_000)) as { fileBytes: number; streamBytes: number; ms: number; downtimeMs: number | null; state: string; checkpoint: boolean; sha256: string };
  const lastBefore = Math.max(...counts(con.output), logged('s1'));
  assert.equal(r.state, 'shutdown');
  assert.equal(r.checkpoint, false);
  assert.equal(r.downtimeMs, null, 'a plain save does not let the guest run on');
  assert.equal(fs.statSync(savedFile).size, r.fileBytes);
  assert.ok(r.streamBytes > 1 << 20 && r.streamBytes < r.fileBytes, `the file holds QEMU's stream (${r.streamBytes} bytes)`);
  assert.equal(crypto.createHash('sha256').update(fs.readFileSync(savedFile).subarray(0, r.fileBytes - 48)).digest('hex'), r.sha256, 'the recorded checksum is the SHA-256 of the file before its trailer');
  assert.equal(fs.existsSync(`${savedFile}.partial`), false);
  await waitUntil(() => !pidAlive(qemuPid), 15_000, 'QEMU to exit after the save');
  assert.ok(blkPids.every((p) => !pidAlive(p)), 'the disk backend was stopped (image flushed and closed)');
  const saved = await c.getDomain('s1');
  assert.equal(saved.state, 'shutdown');
  assert.match(saved.lastExit?.reason ?? '', /saved to .*s1\.xvmsave/);
  // Whatever on_poweroff says, a saved domain is not restarted.
  assert.equal(qemuStarts('s1'), 1);

  // --info checks the file and shows what it holds.
  const info = cli(['restore', '--info', savedFile]);
  assert.match(info, /Domain:\s+s1 \(128 MiB\), running/);
  assert.match(info, /checksum ok/);

  const mark = con.output.length;
  const rr = JSON.parse(cli(['restore', savedFile, '--json'], 300_000)) as { domain: string; state: string; ms: number; verifyMs: number };
  assert.equal(rr.domain, 's1');
  assert.equal(rr.state, 'running');
  const after = await c.getDomain('s1');
  assert.notEqual(after.pid, qemuPid, 'a new QEMU runs the restored guest');
  assert.equal(after.readyAt, before.readyAt, 'the restored run keeps its boot facts');
  await countsAbove(con, lastBefore + 2, mark, 90_000);
  const seen = loggedSinceRestore('s1');
  assert.ok(seen[0]! >= lastBefore + 1 && seen[0]! <= lastBefore + 3, `the counter continues where it was (before: ${lastBefore}, after: ${seen.join(',')})`);
  for (let i = 1; i < seen.length; i++) assert.equal(seen[i], seen[i - 1]! + 1, `the counter counts on by one (${seen.join(',')})`);
  assert.equal(banners(con.output), 1, 'no second boot: the ready banner was printed once');
  const uptimeAfter = Number((await con.run('cut -d" " -f1 /proc/uptime')).trim());
  assert.ok(uptimeAfter >= uptimeBefore, `uptime continues (${uptimeBefore} → ${uptimeAfter})`);
  // The file written before the save is intact, and the disk takes new writes.
  assert.equal(await con.run('echo 3 > /proc/sys/vm/drop_caches; md5sum /mnt/vda/f | cut -c1-32', 60_000), written);
  assert.equal(await con.run('echo after-restore > /mnt/vda/g; sync; echo 3 > /proc/sys/vm/drop_caches; cat /mnt/vda/g', 60_000), 'after-restore');
  assert.equal(host.blkPids().length, 1, 'the restored domain has its own disk backend');
  con.close();
});

test('corrupt, truncated, wrong-version and foreign files are refused with a clear error before anything starts', { timeout: 120_000 }, async () => {
  const c = host.client;
  const good = fs.readFileSync(savedFile);
  const variants: [string, (b: Buffer) => Buffer, RegExp][] = [
    ['flipped', (b) => {
      const x = Buffer.from(b);
      x[Math.floor(x.length / 2)]! ^= 0x40;
      return x;
    }, /checksum mismatch .* the file is corrupt/],
    ['truncated', (b) => b.subarray(0, Math.floor(b.length * 0.7)), /truncated/],
    ['no-trailer', (b) => b.subarray(0, b.length - 10), /truncated/],
    ['version', (b) => {
      const x = Buffer.from(b);
      x.writeUInt32BE(7, 8);
      return x;
    }, /save format version 7; this xvm reads format version 1 only/],
    ['foreign', () => Buffer.from('QEVM\0\0\0\x03 not ours at all'), /does not start with the xvm save magic/],
    ['header', (b) => {
      const x = Buffer.from(b);
      x.write('}', 16);
      return x;
    }, /header is not valid JSON/],
  ];
  const startsBefore = qemuStarts('s1');
  for (const [label, make, want] of variants) {
    const f = path.join(files(), `bad-${label}.xvmsave`);
    fs.writeFileSync(f, make(good));
    const r = host.cli(['restore', f, '--name', `bad-${label}`]);
    assert.equal(r.code, 1, `${label}: exit code (stderr: ${r.stderr})`);
    assert.match(r.stderr, want, label);
    assert.equal((await c.listDomains()).some((d) => d.name === `bad-${label}`), false, `${label}: no domain left behind`);
    const info = host.cli(['restore', '--info', f]);
    assert.notEqual(info.code, 0);
    assert.match(info.stderr, want, `${label} (--info)`);
  }
  assert.equal(qemuStarts('s1') + qemuStarts('bad-flipped'), startsBefore, 'no QEMU was started for a bad file');
  // Clear API errors too.
  assert.equal(host.cli(['restore', path.join(files(), 'nosuch.xvmsave')]).code, 1);
  await assert.rejects(c.restoreDomain(path.join(files(), 'nosuch.xvmsave')), /cannot open save file .*ENOENT/);
  await assert.rejects(c.restoreDomain('relative.xvmsave'), /absolute path/);
  await assert.rejects(c.saveDomain('nosuch', path.join(files(), 'x.xvmsave')), /no domain named 'nosuch'/);
  await assert.rejects(c.saveDomain('s1', 'x.xvmsave'), /absolute path/);
  await assert.rejects(c.saveDomain('s1', '/nonexistent-dir/x.xvmsave'), /folder \/nonexistent-dir does not exist/);
  const image = (JSON.parse(cli(['vol', 'info', 'data', '--json'])) as { path: string }).path;
  await assert.rejects(c.saveDomain('s1', image), /it is the disk image behind domain 's1' \(xvdb\)/);
  const raw = await c.rawRequest('POST', '/v1/restore', { file: savedFile, bogus: 1 });
  assert.equal(raw.status, 400);
  assert.match(raw.body, /unknown field/);
  // Restoring over a running domain of the same name is refused.
  await assert.rejects(c.restoreDomain(savedFile), /domain 's1' is running; destroy it first/);
});

test('save --checkpoint leaves the guest running; the checkpoint restores as a copy that counts on from the checkpoint', { timeout: 400_000 }, async () => {
  const c = host.client;
  const con = await bootCounting('k1');
  const pid = (await c.getDomain('k1')).pid!;
  const file = path.join(files(), 'k1.xvmsave');
  const beforeSave = logged('k1');
  const r = JSON.parse(cli(['save', '--checkpoint', 'k1', file, '--json'], 300_000)) as { state: string; downtimeMs: number; checkpoint: boolean };
  // The checkpoint was taken between these two moments.
  const afterSave = logged('k1');
  const atCheckpoint = beforeSave;
  assert.equal(r.checkpoint, true);
  assert.equal(r.state, 'running');
  assert.equal(typeof r.downtimeMs, 'number');
  assert.equal((await c.getDomain('k1')).pid, pid, 'the same QEMU runs on');
  // The original keeps counting.
  await countsAbove(con, atCheckpoint + 3, 0, 60_000);

  const out = cli(['restore', file, '--name', 'k1copy'], 300_000);
  assert.match(out, /restored k1copy from .* k1copy is running/);
  const copy = await c.getDomain('k1copy');
  assert.notEqual(copy.uuid, (await c.getDomain('k1')).uuid, 'the copy has its own uuid');
  const cc = new ConsoleSession(c, 'k1copy', 0);
  await cc.ready();
  const seen = await countsAbove(cc, atCheckpoint + 2, 0, 90_000);
  assert.ok(seen[0]! >= beforeSave && seen[0]! <= afterSave + 2, `the copy continues from the checkpoint (between ${beforeSave} and ${afterSave}: ${seen.join(',')})`);
  assert.equal(banners(cc.output), 0, 'the copy did not boot');
  assert.equal(await cc.run('echo $((6*7))'), '42', 'the copy answers on its console');
  assert.equal((await c.getDomain('k1')).state, 'running', 'the original still runs');
  cc.close();
  con.close();
  await c.destroy('k1copy');
  await c.destroy('k1');
  // ... and after the original is destroyed, the checkpoint restores into it.
  const rr = await c.restoreDomain(file);
  assert.equal(rr.domain, 'k1');
  assert.equal(rr.state, 'running');
  await c.destroy('k1');
});

test('xvm daemon stop --domains=save saves the running guests; the next start restores them and they keep counting', { timeout: 400_000 }, async () => {
  const c = host.client;
  const con = await bootCounting('d1');
  const pids = [(await c.getDomain('d1')).pid!, (await c.getDomain('s1')).pid!];
  const daemonPid = (await c.host()).daemon.pid;
  // A console client stays attached meanwhile, as a user's would.
  const r = await host.cliAsync(['daemon', 'stop', '--domains=save', '--timeout', '120']);
  // What xvmd itself logged of the console before it stopped (the websocket
  // may miss the last lines: xvmd closes it as it exits).
  const lastBefore = Math.max(...counts(con.output), ...counts(fs.readFileSync(path.join(host.home, 'log', 'console', 'd1.log'), 'utf8')));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^d1: saved to .*\/lib\/save\/d1\.xvmsave \(\d+\.\d s\)$/m);
  assert.match(r.stdout, /^s1: saved to .*\/lib\/save\/s1\.xvmsave/m);
  assert.match(r.stdout, /xvmd stopped \(pid \d+\)\n/);
  await waitUntil(() => !pidAlive(daemonPid), 15_000, 'xvmd to exit');
  for (const p of pids) await waitUntil(() => !pidAlive(p), 15_000, 'the guests to be saved and stopped');
  con.close();
  const saveDir = path.join(host.home, 'lib', 'save');
  assert.deepEqual(fs.readdirSync(saveDir).sort(), ['d1.xvmsave', 's1.xvmsave']);

  await host.startDaemon();
  await waitUntil(async () => (await c.getDomain('d1')).state === 'running' && (await c.getDomain('s1')).state === 'running', 120_000, 'xvmd to restore the saved domains');
  await waitUntil(() => fs.readdirSync(saveDir).length === 0, 30_000, 'the restored save files to be removed');
  const con2 = new ConsoleSession(c, 'd1', 0);
  await con2.ready();
  await countsAbove(con2, lastBefore + 2, 0, 90_000);
  // From xvmd's log: d1 may have counted on for a while before con2 attached (the other guest restores after it).
  const seen = loggedSinceRestore('d1');
  assert.ok(seen[0]! >= lastBefore && seen[0]! <= lastBefore + 3, `d1 keeps counting (${lastBefore}: ${seen.join(',')})`);
  const log = await c.getDomain('d1');
  assert.equal(banners(fs.readFileSync(log.consoleLog, 'utf8')), 1, 'd1 booted once');
  // s1's disk still works after the second save/restore.
  const s1 = new ConsoleSession(c, 's1', 0);
  await s1.ready();
  // s1 counts on its console meanwhile: a C=n line may land between the markers.
  assert.equal((await s1.run('cat /mnt/vda/g', 60_000)).split('\n').filter((l) => !/^C=\d+$/.test(l)).join('\n'), 'after-restore');
  s1.close();
  con2.close();
});

test('a paused guest restores paused; a hot-plugged disk and a copy sharing a writable disk are refused and leave nothing behind', { timeout: 300_000 }, async () => {
  const c = host.client;
  // Hot-plugged disks are not in the configuration: saving is refused with what to do.
  cli(['vol', 'create', 'hot', '--size', '8M', '--format', 'raw']);
  await c.blockAttach('s1', 'vol=default/hot', 'xvdc');
  await assert.rejects(c.saveDomain('s1', path.join(files(), 'hot.xvmsave')), /disk xvdc was hot-plugged; detach it first/);
  assert.equal((await c.getDomain('s1')).state, 'running', 'a refused save leaves the guest running');
  assert.equal(fs.existsSync(path.join(files(), 'hot.xvmsave')), false);
  await c.blockDetach('s1', 'xvdc');

  // A copy of s1 would share its writable vol= disk with the running s1.
  const ck = path.join(files(), 's1-ckpt.xvmsave');
  await c.saveDomain('s1', ck, { checkpoint: true });
  assert.equal((await c.getDomain('s1')).state, 'running');
  await assert.rejects(c.restoreDomain(ck, { name: 's1copy' }), /default\/data is already in use read-write by domain 's1'/);
  assert.equal((await c.listDomains()).some((d) => d.name === 's1copy'), false, 'the failed restore left no domain');

  // Paused when saved → paused when restored; it counts on once unpaused.
  const con = new ConsoleSession(c, 'd1', 0);
  await con.ready();
  await con.waitFor(/C=\d+\r\n/, 60_000);
  await c.pause('d1');
  const atPause = Math.max(...counts(con.output));
  const f = path.join(files(), 'd1-paused.xvmsave');
  const r = await c.saveDomain('d1', f);
  assert.equal(r.state, 'shutdown');
  const rr = await c.restoreDomain(f);
  assert.equal(rr.state, 'paused');
  assert.equal((await c.getDomain('d1')).state, 'paused');
  const mark = con.output.length;
  await c.unpause('d1');
  const seen = await countsAbove(con, atPause + 1, mark, 60_000);
  assert.ok(seen[0]! >= atPause && seen[0]! <= atPause + 2, `d1 counts on after unpause (${atPause}: ${seen.join(',')})`);
  con.close();
});
