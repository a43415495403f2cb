// Resources of a running guest, as the guest sees them: `xvm mem-set` moves
// MemTotal through the virtio balloon, `xvm vcpu-set` plugs a vCPU that the
// guest brings online (and unplugs it again); out-of-range values get clear
// errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { TestHost, ConsoleSession, READY_BANNER, waitUntil } from '../helpers/xvm.js';

const host = new TestHost('xvmr');
let con: ConsoleSession;

before(async () => {
  await host.startDaemon();
  await host.client.createDomain({ config: { name: 'res', memory: 192, maxmem: 256, vcpus: 1, maxvcpus: 2 } });
  con = new ConsoleSession(host.client, 'res', 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 120_000);
});
after(async () => {
  con?.close();
  await host.cleanup();
});

async function memTotalMiB(): Promise<number> {
  const kib = Number(await con.run("awk '/^MemTotal:/ {print $2}' /proc/meminfo"));
  assert.ok(kib > 0, `MemTotal read from the guest (${kib} kB)`);
  return kib / 1024;
}

async function onlineCpus(): Promise<number> {
  return Number(await con.run('grep -c ^processor /proc/cpuinfo'));
}

test('mem-set shrinks and grows the MemTotal the guest sees, within maxmem', { timeout: 180_000 }, async () => {
  // memory 192 with maxmem 256: RAM is 256 MiB, the balloon holds 64 back from the start.
  // MemTotal is the target less what the kernel keeps for itself, so compare differences.
  let total = 0;
  await waitUntil(async () => (total = await memTotalMiB()) < 200, 60_000, 'the initial balloon target of 192 MiB');
  // Let the guest finish inflating to 192 (same target again: a no-op for QEMU).
  let r = host.cli(['mem-set', 'res', '192', '--wait', '30', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(Math.abs(JSON.parse(r.stdout).actualMiB - 192) <= 2, r.stdout);
  await waitUntil(async () => {
    const a = await memTotalMiB();
    const b = await memTotalMiB();
    total = b;
    return a === b;
  }, 30_000, 'MemTotal to settle');
  const at192 = total;

  r = host.cli(['mem-set', 'res', '128', '--wait', '30', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const set = JSON.parse(r.stdout);
  assert.equal(set.targetMiB, 128);
  assert.equal(set.maxMiB, 256);
  assert.ok(Math.abs(set.actualMiB - 128) <= 2, `QEMU reports ${set.actualMiB} MiB`);
  await waitUntil(async () => (total = await memTotalMiB()) <= at192 - 60, 60_000, 'MemTotal 64 MiB lower after mem-set 128');
  assert.ok(total >= at192 - 68, `MemTotal ${total} MiB, was ${at192} MiB at 192: 64 MiB less`);
  const at128 = total;
  assert.equal((await host.client.getDomain('res')).memory, 128, 'xvm info shows the new target');
  const domid = (await host.client.getDomain('res')).domid;
  const target = host.cli(['store', 'read', `/local/domain/${domid}/memory/target`]);
  assert.equal(target.code, 0, target.stderr);
  assert.equal(target.stdout.trim(), String(128 * 1024), 'memory/target in the store is in KiB, as in Xen');

  r = host.cli(['mem-set', 'res', '256M', '--wait', '30']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /res: memory target 256 MiB/);
  await waitUntil(async () => (total = await memTotalMiB()) >= at128 + 124, 60_000, 'MemTotal 128 MiB higher after mem-set 256');
  assert.ok(total <= at128 + 132, `MemTotal ${total} MiB, was ${at128} MiB at 128`);
  assert.equal(await con.run('echo $((6*7))'), '42', 'the guest runs on');

  r = host.cli(['mem-set', 'res', '300']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot grow to 300 MiB while running: its RAM is 256 MiB \(maxmem at start\)/);
  r = host.cli(['mem-set', 'res', '16']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /at least 32/);
  r = host.cli(['mem-set', 'res', 'lots']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /not a memory size/);
  r = host.cli(['mem-set', 'nosuch', '128']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no domain named 'nosuch'/);
});

test('vcpu-set plugs a vCPU the guest brings online, and unplugs it again', { timeout: 180_000 }, async () => {
  assert.equal(await onlineCpus(), 1);
  let r = host.cli(['vcpu-set', 'res', '2', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const up = JSON.parse(r.stdout);
  assert.equal(up.vcpus, 2);
  assert.equal(up.pending, false);
  await waitUntil(async () => (await onlineCpus()) === 2, 60_000, 'the guest to online its second vCPU');
  assert.equal(await con.run('cat /sys/devices/system/cpu/online'), '0-1');
  assert.equal((await host.client.getDomain('res')).vcpus, 2);
  // A save would restore with the configuration's vCPU count: refused until they are set back.
  const saved = host.cli(['save', 'res', '/tmp/xvm-res-refused.xvmsave']);
  assert.equal(saved.code, 1);
  assert.match(saved.stderr, /cannot save domain 'res': it has 2 vCPUs since 'xvm vcpu-set' and its configuration 1/);
  assert.equal(fs.existsSync('/tmp/xvm-res-refused.xvmsave'), false);

  r = host.cli(['vcpu-set', 'res', '1', '--wait', '60']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /res: 1 vCPUs/);
  await waitUntil(async () => (await onlineCpus()) === 1, 60_000, 'the guest to release its second vCPU');
  assert.equal((await host.client.getDomain('res')).vcpus, 1);

  r = host.cli(['vcpu-set', 'res', '3']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /at most 2 vCPUs while running/);
  r = host.cli(['vcpu-set', 'res', '0']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /not a vCPU count/);
});
