// `xvm store read|write|ls|rm|watch|chmod` against a live store.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { serve, type Served } from './helpers.js';

const HARNESS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'cli-harness.js');
let sv: Served;
before(async () => {
  sv = await serve();
});
after(async () => {
  await sv.close();
});

function xvm(args: string[], opts: { onStdout?: (s: string) => void } = {}): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [HARNESS, 'store', ...args], {
      env: { ...process.env, XVM_TEST_STORE_SOCKET: sv.socketPath },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.stdout.on('data', (d) => {
      out += d;
      opts.onStdout?.(out);
    });
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

test('write, read (--json), ls (-p, --json), chmod (-r), rm', async () => {
  let r = await xvm(['write', '/vm/u9/name', 'nine', '/vm/u9/memory', '256']);
  assert.equal(r.code, 0, r.err);
  assert.equal(sv.store.read('/vm/u9/memory'), '256');
  r = await xvm(['read', '/vm/u9/name', '/vm/u9/memory']);
  assert.equal(r.out, 'nine\n256\n');
  r = await xvm(['read', '--json', '/vm/u9/name']);
  assert.deepEqual(JSON.parse(r.out), { '/vm/u9/name': 'nine' });
  r = await xvm(['ls', '/vm']);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out.split('\n')[0], 'u9 = ""');
  assert.match(r.out, /^u9 = ""$/m);
  assert.match(r.out, /^ name = "nine"$/m);
  r = await xvm(['chmod', '-r', '/vm/u9', 'n0', 'r4']);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(sv.store.getPerms('/vm/u9/name'), [
    { perm: 'n', domid: 0 },
    { perm: 'r', domid: 4 },
  ]);
  r = await xvm(['ls', '-p', '--json', '/vm/u9']);
  const entries = JSON.parse(r.out) as { path: string; value: string; perms: string[] }[];
  assert.deepEqual(entries.find((e) => e.path === '/vm/u9/name'), { path: '/vm/u9/name', value: 'nine', perms: ['n0', 'r4'] });
  r = await xvm(['rm', '/vm/u9']);
  assert.equal(r.code, 0, r.err);
  assert.equal(sv.store.exists('/vm/u9'), false);
});

test('failures exit 1 with a clear message; usage errors exit 2', async () => {
  let r = await xvm(['read', '/no/such']);
  assert.equal(r.code, 1);
  assert.match(r.err, /xvm store: READ \/no\/such: no such node/);
  r = await xvm(['write', '/odd']);
  assert.equal(r.code, 2);
  r = await xvm(['chmod', '/x', 'bogus']);
  assert.equal(r.code, 2);
  r = await xvm(['read']);
  assert.equal(r.code, 2);
  r = await xvm(['frobnicate']);
  assert.equal(r.code, 2);
  r = await xvm(['watch', '-n', 'zero', '/x']);
  assert.equal(r.code, 2);
  r = await xvm(['write', '/bad//path', 'v']);
  assert.equal(r.code, 1);
  assert.match(r.err, /invalid argument/);
});

test('watch prints the initial event and changes, stops after -n', async () => {
  let wrote = false;
  const r = await xvm(['watch', '-n', '3', '--json', '/cliw'], {
    onStdout: (out) => {
      if (!wrote && out.includes('"/cliw"')) {
        wrote = true;
        void (async () => {
          await sv.store.write('/cliw/a', '1');
          await sv.store.write('/cliw/b', '2');
        })();
      }
    },
  });
  assert.equal(r.code, 0, r.err);
  const lines = r.out.trim().split('\n').map((l) => JSON.parse(l) as { path: string });
  assert.deepEqual(lines.map((l) => l.path), ['/cliw', '/cliw/a', '/cliw/b']);
});
