// A real guest through its whole life: boot to the banner, a command on the
// console, pause/unpause, reboot, graceful shutdown, start again, destroy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestHost, ConsoleSession, READY_BANNER, waitUntil } from '../helpers/xvm.js';

const host = new TestHost();
before(async () => host.startDaemon());
after(async () => host.cleanup());

test('a default guest boots, runs a command, pauses, reboots, shuts down, starts again and is destroyed', { timeout: 300_000 }, async (t) => {
  const c = host.client;
  const created = await c.createDomain({ config: { name: 'life', memory: 256 } });
  assert.equal(created.state, 'running');
  assert.ok(created.domid && created.domid >= 1, 'a running domain has an id >= 1');

  // The console service captured the boot from the first byte: the log shows the banner.
  const con = new ConsoleSession(c, 'life', 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 90_000);
  assert.equal(await con.run('echo $((6*7))'), '42');

  await t.test('pause stops the guest and unpause resumes it', async () => {
    assert.equal((await c.pause('life')).state, 'paused');
    const before = con.output.length;
    con.send('echo paused-$((1+1))');
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(!con.output.slice(before).includes('paused-2'), 'a paused guest runs no command');
    assert.equal((await c.unpause('life')).state, 'running');
    await con.waitFor('paused-2', 30_000, before);
  });

  await t.test('reboot brings the banner again', async () => {
    const from = con.output.length;
    const info = await c.reboot('life', { wait: true, timeout: 60 });
    assert.equal(info.reboots, 1);
    await con.waitFor(READY_BANNER, 90_000, from);
    assert.equal(await con.run('echo $((6*7))'), '42');
    assert.equal((await c.getDomain('life')).state, 'running');
  });

  await t.test('shutdown --wait returns once the domain is shut down', async () => {
    const info = await c.shutdown('life', { wait: true, timeout: 90 });
    assert.equal(info.state, 'shutdown');
    assert.equal(info.domid, null);
    assert.match(info.lastExit?.reason ?? '', /shut down/);
    await con.waitFor('Power down', 5000).catch(() => undefined);
  });

  await t.test('a shut down domain starts again and destroy stops it at once', async () => {
    const from = con.output.length;
    const started = await c.start('life');
    assert.equal(started.state, 'running');
    assert.ok(started.domid! > created.domid!, 'a new run gets a new domain id');
    await con.waitFor(READY_BANNER, 90_000, from);
    const pid = started.pid!;
    const destroyed = await c.destroy('life');
    assert.equal(destroyed.state, 'shutdown');
    assert.equal(destroyed.pid, null);
    await waitUntil(() => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    }, 10_000, 'QEMU to exit');
  });

  con.close();
  await c.undefineDomain('life');
  assert.deepEqual((await c.listDomains()).map((d) => d.name), []);
});

test('two clients on one console see the same output', { timeout: 180_000 }, async () => {
  const c = host.client;
  await c.createDomain({ config: { name: 'twins' } });
  const a = new ConsoleSession(c, 'twins', 1 << 20);
  const b = new ConsoleSession(c, 'twins', 1 << 20);
  await Promise.all([a.ready(), b.ready()]);
  await a.waitFor(READY_BANNER, 90_000);
  await b.waitFor(READY_BANNER, 90_000);
  const fromB = b.output.length;
  assert.equal(await a.run('echo shared-$((20+22))'), 'shared-42');
  // B typed nothing, yet sees A's command and its answer.
  await b.waitFor('shared-42', 10_000, fromB);
  a.close();
  b.close();
  await c.destroy('twins');
});

test('on_poweroff=restart brings the guest back; on_crash=preserve keeps a crashed guest for inspection', { timeout: 240_000 }, async () => {
  const c = host.client;
  await c.createDomain({ config: { name: 'phoenix', on_poweroff: 'restart', on_crash: 'preserve' } });
  const con = new ConsoleSession(c, 'phoenix', 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 90_000);
  const first = await c.getDomain('phoenix');

  // The guest powers itself off: policy restarts it as a new run.
  let from = con.output.length;
  con.send('poweroff');
  await waitUntil(async () => {
    const d = await c.getDomain('phoenix');
    return d.domid !== null && d.domid !== first.domid;
  }, 60_000, 'the domain to restart');
  await con.waitFor(READY_BANNER, 90_000, from);

  // A kernel panic (sysrq c): the domain is crashed but preserved (QEMU alive, paused).
  from = con.output.length;
  con.send('echo c > /proc/sysrq-trigger');
  await waitUntil(async () => (await c.getDomain('phoenix')).state === 'crashed', 60_000, 'the domain to be crashed');
  const crashed = await c.getDomain('phoenix');
  assert.equal(crashed.preserved, true);
  assert.ok(crashed.pid, 'a preserved domain keeps its QEMU');
  assert.match(crashed.lastExit?.reason ?? '', /panic/);
  await assert.rejects(c.start('phoenix'), /destroy it first/);
  const gone = await c.destroy('phoenix');
  assert.equal(gone.state, 'crashed');
  assert.equal(gone.pid, null);
  con.close();
});
