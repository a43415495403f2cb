// Debian's xenstore-utils (libxenstore) against our socket, unchanged.
// libxenstore takes the socket from XENSTORED_PATH for both of its
// candidates (the daemon socket and the /dev/xen/xenbus device), so setting
// it is enough on machines with or without /dev/xen.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { execFile, spawn } from 'node:child_process';
import { serve, type Served } from './helpers.js';

let sv: Served;
before(async () => {
  sv = await serve();
});
after(async () => {
  await sv.close();
});

function xs(cmd: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(
      `/usr/bin/${cmd}`,
      args,
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', XENSTORED_PATH: sv.socketPath }, timeout: 30_000 },
      (e, out, err) => {
        const code = e ? (typeof (e as { code?: unknown }).code === 'number' ? ((e as { code: number }).code) : -1) : 0;
        resolve({ code, out, err });
      },
    );
  });
}

test('xenstore-utils is installed (CI: apt-get install -y xenstore-utils)', () => {
  for (const c of ['xenstore-read', 'xenstore-write', 'xenstore-ls', 'xenstore-list', 'xenstore-rm', 'xenstore-exists', 'xenstore-chmod', 'xenstore-watch']) {
    assert.ok(fs.existsSync(`/usr/bin/${c}`), `/usr/bin/${c} missing: apt-get install -y xenstore-utils`);
  }
});

test('xenstore-write / -read / -exists / -list / -ls / -rm', async () => {
  let r = await xs('xenstore-write', ['/vm/u1/name', 'guest-one', '/local/domain/1/name', 'guest-one', '/local/domain/1/memory/target', '524288']);
  assert.equal(r.code, 0, r.err);
  assert.equal(sv.store.read('/local/domain/1/memory/target'), '524288');
  r = await xs('xenstore-read', ['/vm/u1/name', '/local/domain/1/memory/target']);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out, 'guest-one\n524288\n');
  r = await xs('xenstore-read', ['/vm/none']);
  assert.equal(r.code, 1);
  assert.match(r.err, /couldn't read path/);
  assert.equal((await xs('xenstore-exists', ['/vm/u1'])).code, 0);
  assert.equal((await xs('xenstore-exists', ['/vm/none'])).code, 1);
  await sv.store.write('/local/domain/2/name', 'two');
  r = await xs('xenstore-list', ['/local/domain']);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(r.out.trim().split('\n').sort(), ['1', '2']);
  r = await xs('xenstore-ls', ['/local/domain/1']);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^name = "guest-one"$/m);
  assert.match(r.out, /^memory = ""$/m);
  assert.match(r.out, /^ target = "524288"$/m);
  r = await xs('xenstore-rm', ['/local/domain/2']);
  assert.equal(r.code, 0, r.err);
  assert.equal(sv.store.exists('/local/domain/2'), false);
  r = await xs('xenstore-write', ['/bad//path', 'x']);
  assert.notEqual(r.code, 0);
});

test('xenstore-list of a directory past 4096 bytes (libxenstore falls back to DIRECTORY_PART)', async () => {
  const names = Array.from({ length: 400 }, (_, i) => `child-with-a-long-name-${String(i).padStart(4, '0')}`);
  await sv.store.transaction((tx) => {
    for (const n of names) tx.write(`/biglist/${n}`, n);
  });
  const r = await xs('xenstore-list', ['/biglist']);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(r.out.trim().split('\n'), names);
});

test('xenstore-chmod and xenstore-ls -p', async () => {
  await sv.store.write('/perm/node', 'v');
  let r = await xs('xenstore-chmod', ['/perm/node', 'n1', 'r2', 'b3']);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(sv.store.getPerms('/perm/node'), [
    { perm: 'n', domid: 1 },
    { perm: 'r', domid: 2 },
    { perm: 'b', domid: 3 },
  ]);
  r = await xs('xenstore-chmod', ['-r', '/perm', 'r0']);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(sv.store.getPerms('/perm/node'), [{ perm: 'r', domid: 0 }]);
  r = await xs('xenstore-ls', ['-p', '/perm']);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /node = "v".*\(r0\)/);
});

test('xenstore-watch sees the initial event and later changes', async () => {
  const p = spawn('/usr/bin/xenstore-watch', ['-n', '3', '/watched'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', XENSTORED_PATH: sv.socketPath },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
  const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
  try {
    const end = Date.now() + 20_000;
    while (!out.includes('/watched\n') && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    await sv.store.write('/watched/a', '1');
    await sv.store.write('/elsewhere', '1');
    await sv.store.write('/watched/b', '1');
    assert.equal(await exited, 0);
    assert.deepEqual(out.trim().split('\n'), ['/watched', '/watched/a', '/watched/b']);
  } finally {
    clearTimeout(timer);
    if (p.exitCode === null) p.kill('SIGKILL');
  }
});
