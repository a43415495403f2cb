// xvmd can stop, crash and come back while guests run: they keep running,
// are re-adopted, and no console output is lost in between.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestHost, ConsoleSession, READY_BANNER, sleep } from '../helpers/xvm.js';

const host = new TestHost();
before(async () => host.startDaemon());
after(async () => host.cleanup());

test('a guest keeps running through an xvmd crash and a clean restart, and its console loses nothing', { timeout: 300_000 }, async () => {
  let c = host.client;
  await c.createDomain({ config: { name: 'survivor' } });
  await c.createDomain({ config: { name: 'sleeper' }, start: false });
  let con = new ConsoleSession(c, 'survivor', 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 90_000);
  const before = await c.getDomain('survivor');

  // Output produced while the daemon is dead waits in the console pipe.
  con.send('sleep 3; echo while-away-$((40+2))');
  await sleep(300);
  await host.stopDaemon(true); // kill -9
  con.close();
  await sleep(5000);
  await host.startDaemon();
  c = host.client;

  const after = await c.getDomain('survivor');
  assert.equal(after.state, 'running');
  assert.equal(after.pid, before.pid, 'the same QEMU process was re-adopted');
  assert.equal(after.domid, before.domid);
  assert.equal((await c.getDomain('sleeper')).state, 'defined', 'definitions persist');
  const log = await c.consoleLog('survivor', 1 << 20);
  assert.match(log, /while-away-42/, 'output written while xvmd was down is in the console log');

  con = new ConsoleSession(c, 'survivor');
  await con.ready();
  assert.equal(await con.run('echo $((6*7))'), '42');

  // A clean stop (what 'xvm daemon stop' does) leaves it running too.
  await host.stopDaemon(false);
  con.close();
  await host.startDaemon();
  c = host.client;
  con = new ConsoleSession(c, 'survivor');
  await con.ready();
  assert.equal(await con.run('echo again-$((6*7))'), 'again-42');
  // Lifecycle operations work on an adopted domain.
  assert.equal((await c.shutdown('survivor', { wait: true, timeout: 90 })).state, 'shutdown');
  con.close();
});
