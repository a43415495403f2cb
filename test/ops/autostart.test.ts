// The domains service: autostart across an xvmd restart, `xvm autostart`,
// logs to stderr (the journal) under systemd, and `xvm daemon stop
// --domains=shutdown` shutting running guests down before xvmd goes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestHost, ConsoleSession, READY_BANNER, waitUntil } from '../helpers/xvm.js';
import { pidAlive } from '../../src/engine/process.js';

const host = new TestHost('xvma');
before(async () => host.startDaemon());
after(async () => host.cleanup());

test('a domain with autostart=1 starts when xvmd starts; others stay defined; xvm autostart flips it', { timeout: 240_000 }, async () => {
  const c = host.client;
  let r = host.cli(['define', '--name', 'auto', '--memory', '128', 'autostart=1']);
  assert.equal(r.code, 0, r.stderr);
  r = host.cli(['define', '--name', 'manual', '--memory', '128']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await c.getDomain('auto')).config.autostart, true);
  assert.equal((await c.getDomain('auto')).state, 'defined');

  // Restart xvmd as systemd would run it: its log goes to stderr too (the journal).
  await host.stopDaemon();
  host.env.INVOCATION_ID = 'xvm-test';
  const outFile = path.join(host.home, 'xvmd.test.out');
  const outBefore = fs.readFileSync(outFile, 'utf8').length;
  await host.startDaemon();
  await waitUntil(async () => (await c.getDomain('auto')).state === 'running', 60_000, 'auto to be started by xvmd');
  assert.equal((await c.getDomain('manual')).state, 'defined', 'a domain without autostart is left alone');
  const journal = fs.readFileSync(outFile, 'utf8').slice(outBefore);
  assert.match(journal, /"msg":"xvmd ready"/, 'under systemd the log also goes to stderr');
  assert.match(journal, /"msg":"domain autostarted","domain":"auto"/);

  const con = new ConsoleSession(c, 'auto', 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 120_000);
  con.close();

  // A restart re-adopts the running domain and does not start it twice.
  const pid = (await c.getDomain('auto')).pid;
  await host.stopDaemon();
  delete host.env.INVOCATION_ID;
  await host.startDaemon();
  await new Promise((res) => setTimeout(res, 1000));
  const again = await c.getDomain('auto');
  assert.equal(again.state, 'running');
  assert.equal(again.pid, pid, 'the running QEMU was re-adopted, not started anew');
  const events = () =>
    host.cli(['dmesg', '--devices', '--json', '-n', '1000']).stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; domain?: string; pid?: number });
  assert.equal(events().filter((e) => e.kind === 'qemu-start' && e.domain === 'auto').length, 1, 'QEMU started once');
  assert.ok(events().some((e) => e.kind === 'qemu-adopt' && e.domain === 'auto' && e.pid === pid), 'the re-adoption is in the device log');

  r = host.cli(['autostart', 'auto', 'off']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /autostart off for auto/);
  assert.equal((await c.getDomain('auto')).config.autostart, false);
  r = host.cli(['autostart', 'manual', 'on']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await c.getDomain('manual')).config.autostart, true);
  assert.equal(host.cli(['autostart', 'manual', 'maybe']).code, 2);
  assert.match(host.cli(['autostart', 'nosuch', 'on']).stderr, /no domain named 'nosuch'/);
  await c.setAutostart('manual', false);
});

test('xvm daemon stop --domains=shutdown shuts the running guests down in parallel, with a bounded wait, then stops xvmd', { timeout: 240_000 }, async () => {
  const c = host.client;
  // A guest that ignores the power button (its acpid killed) is waited for, then left running.
  await c.createDomain({ config: { name: 'stubborn', memory: 128 } });
  const con = new ConsoleSession(c, 'stubborn', 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 120_000);
  assert.equal(await con.run('kill $(cat /run/acpid.pid) && echo acpid-gone'), 'acpid-gone');
  con.close();
  const stubbornPid = (await c.getDomain('stubborn')).pid!;

  const pid = (await c.getDomain('auto')).pid!;
  const daemonPid = (await c.host()).daemon.pid;
  assert.equal(host.cli(['daemon', 'stop', '--domains=maybe']).code, 2);
  const t0 = Date.now();
  const r = host.cli(['daemon', 'stop', '--domains=shutdown', '--timeout', '25'], { timeoutMs: 150_000 });
  const took = Date.now() - t0;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^auto: shutdown$/m);
  assert.match(r.stdout, /^stubborn: did not shut down \(.*within 25 s.*\); left running$/m);
  assert.match(r.stdout, /xvmd stopped \(pid \d+\); some domains are still running/);
  assert.ok(took < 25_000 * 2, `the guests were waited for in parallel, once (${took} ms)`);
  assert.ok(pidAlive(stubbornPid), 'the stubborn guest was not destroyed');
  await waitUntil(() => !pidAlive(daemonPid), 15_000, 'xvmd to exit');
  await waitUntil(() => !pidAlive(pid), 15_000, "the guest's QEMU to exit");
  // With xvmd down, xvm dmesg reads the log file itself.
  const down = host.cli(['dmesg', '-n', '20']);
  assert.equal(down.code, 0, down.stderr);
  assert.match(down.stderr, /xvmd is not running; reading .*xvmd\.log/);
  assert.match(down.stdout, /info  xvmd stopping; domains keep running/);
  assert.match(down.stdout, /info  shutting down domains before xvmd stops domains=\["auto","stubborn"\]/);
  await host.startDaemon();
  const info = await c.getDomain('auto');
  assert.equal(info.state, 'shutdown');
  const st = await c.getDomain('stubborn');
  assert.equal(st.state, 'running', 'the guest left running is re-adopted');
  assert.equal(st.pid, stubbornPid);
  assert.match(info.lastExit?.reason ?? '', /shut down/);
  const stops = host.cli(['dmesg', '--devices', '--json', '-n', '1000']).stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; domain?: string; pid?: number });
  assert.ok(stops.some((e) => e.kind === 'qemu-stop' && e.domain === 'auto' && e.pid === pid), 'the QEMU stop is in the device log');
});
