// xvm web enable|disable|status|token|tokens|revoke against a real xvmd:
// the setting and the tokens survive a daemon restart (same certificate),
// bad input gets a clear error, a broken xvmd.json keeps the web manager off
// without stopping xvmd, and disable really closes the port.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { TestHost, freePort } from '../helpers/xvm.js';
import { httpsRequest, makeToken, type WebEndpoint } from './helpers.js';
import type { WebStatus } from '../../src/api/web-types.js';

const host = new TestHost('xvmwebc');
before(async () => host.startDaemon());
after(async () => host.cleanup());

function status(): WebStatus {
  const r = host.cli(['web', 'status', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as WebStatus;
}

function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

test('enable, token, restart, revoke, disable', { timeout: 120_000 }, async () => {
  const port = await freePort();
  const en = host.cli(['web', 'enable', '--port', String(port), '--listen', '127.0.0.1']);
  assert.equal(en.code, 0, en.stderr);
  assert.match(en.stdout, new RegExp(`https://127\\.0\\.0\\.1:${port}/`));
  assert.match(en.stdout, /make an access token/);
  const st = status();
  assert.equal(st.listening, true);
  assert.equal(st.cert.selfSigned, true);
  const ep: WebEndpoint = { url: st.url!, ca: fs.readFileSync(st.cert.file, 'utf8'), status: st };
  // The settings are in <lib>/xvmd.json.
  const file = JSON.parse(fs.readFileSync(path.join(host.home, 'lib', 'xvmd.json'), 'utf8'));
  assert.deepEqual(file.web, { enabled: true, port, listen: '127.0.0.1' });

  const token = makeToken(host, 'laptop');
  assert.match(token, /^xvm_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$/);
  const dup = host.cli(['web', 'token', '--name', 'laptop']);
  assert.equal(dup.code, 1);
  assert.match(dup.stderr, /a token named 'laptop' exists/);
  const badName = host.cli(['web', 'token', '--name', 'no spaces']);
  assert.equal(badName.code, 1);
  assert.match(badName.stderr, /token name/);
  const list = host.cli(['web', 'tokens']);
  assert.match(list.stdout, /^NAME\s+ID\s+CREATED\s+LAST USED\nlaptop\s+[0-9a-f]{8}\s/);
  assert.ok(!list.stdout.includes(token.split('_')[2]!), 'the list never shows the token');
  const auth = { authorization: `Bearer ${token}` };
  assert.equal((await httpsRequest(ep, 'GET', '/v1/domains', { headers: auth })).status, 200);

  // A restart keeps the listener, the certificate and the tokens.
  await host.stopDaemon();
  await host.startDaemon();
  const st2 = status();
  assert.equal(st2.listening, true);
  assert.equal(st2.port, port);
  assert.equal(st2.cert.fingerprint, st.cert.fingerprint, 'the self-signed certificate is made once and kept');
  assert.equal((await httpsRequest(ep, 'GET', '/v1/domains', { headers: auth })).status, 200);

  const rv = host.cli(['web', 'revoke', 'laptop']);
  assert.equal(rv.code, 0, rv.stderr);
  assert.match(rv.stdout, /token 'laptop' revoked/);
  assert.equal((await httpsRequest(ep, 'GET', '/v1/domains', { headers: auth })).status, 401);
  const again = host.cli(['web', 'revoke', 'laptop']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /no token named 'laptop'/);

  const dis = host.cli(['web', 'disable']);
  assert.equal(dis.code, 0, dis.stderr);
  assert.equal(await connects(port), false, 'nothing listens after disable');
  assert.equal(status().listening, false);
});

test('bad settings get clear errors; a broken xvmd.json keeps the web manager off, not xvmd', { timeout: 120_000 }, async () => {
  const badPort = host.cli(['web', 'enable', '--port', '99999']);
  assert.equal(badPort.code, 2);
  assert.match(badPort.stderr, /--port.*must be a number from 0 to 65535/);
  const badListen = host.cli(['web', 'enable', '--listen', 'not-an-address']);
  assert.equal(badListen.code, 1);
  assert.match(badListen.stderr, /listen: must be an IPv4 or IPv6 address/);
  const halfPair = host.cli(['web', 'enable', '--cert', '/etc/hostname']);
  assert.equal(halfPair.code, 2);
  const missingCert = host.cli(['web', 'enable', '--port', '0', '--listen', '127.0.0.1', '--cert', '/nonexistent/c.pem', '--key', '/nonexistent/k.pem']);
  assert.equal(missingCert.code, 1);
  assert.match(missingCert.stderr, /not listening: .*\/nonexistent\/c\.pem/);
  host.cli(['web', 'disable']);

  fs.writeFileSync(path.join(host.home, 'lib', 'xvmd.json'), '{"web": {"enabled": true, "port": "eighty"}}');
  await host.stopDaemon();
  await host.startDaemon();
  const st = status();
  assert.equal(st.listening, false);
  assert.match(st.error ?? '', /xvmd\.json: web\.port/);
  // Fixing it through the CLI rewrites the file.
  const fix = host.cli(['web', 'enable', '--port', '0', '--listen', '127.0.0.1']);
  assert.equal(fix.code, 0, fix.stderr);
  assert.equal(status().listening, true);
  host.cli(['web', 'disable']);
});

test('malformed bodies at the web routes get 4xx answers, never a crash', { timeout: 120_000 }, async () => {
  const fix = host.cli(['web', 'enable', '--port', '0', '--listen', '127.0.0.1', '--json']);
  assert.equal(fix.code, 0, fix.stderr);
  const st = JSON.parse(fix.stdout) as WebStatus;
  const ep: WebEndpoint = { url: st.url!, ca: fs.readFileSync(st.cert.file, 'utf8'), status: st };
  const doc = (await host.client.openapi()) as { paths: Record<string, Record<string, unknown>> };
  for (const [p, m] of [['/v1/web', 'put'], ['/v1/web/tokens', 'post'], ['/v1/web/tokens/{token}', 'delete'], ['/v1/web/login', 'post'], ['/v1/domains/validate', 'post'], ['/v1/stats/stream', 'get']] as const) {
    assert.ok(doc.paths[p]?.[m], `${m.toUpperCase()} ${p} is documented`);
  }
  // The dry run says what the CLI says.
  const v = await host.client.request<{ valid: boolean; issues: { key?: string; line?: number; message: string }[] }>('POST', '/v1/domains/validate', { configText: 'name = "ok"\nmemroy = 256\n', file: 'x.cfg' });
  assert.equal(v.valid, false);
  assert.equal(v.issues[0]!.line, 2);
  assert.match(v.issues[0]!.message, /did you mean "memory"/);
  assert.equal((await host.client.request<{ valid: boolean }>('POST', '/v1/domains/validate', { config: { name: 'ok', memory: 256 } })).valid, true);

  let seed = 777;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  const mutate = (text: string) => {
    const t = text.split('');
    for (let k = 0; k < 1 + rand(4); k++) {
      const at = rand(t.length);
      const op = rand(3);
      if (op === 0) t.splice(at, 1);
      else if (op === 1) t.splice(at, 0, String.fromCharCode(rand(128)));
      else t[at] = String.fromCharCode(32 + rand(95));
    }
    return t.join('');
  };
  const unixTemplates: [string, string][] = [
    ['/v1/domains/validate', JSON.stringify({ config: { name: 'fz', memory: 128, disk: ['vol=default/a,xvda,w'] } })],
    ['/v1/domains/validate', JSON.stringify({ configText: 'name = "fz"\nmemory = 128\nvif = ["mac=00:16:3e:00:00:01"]\n' })],
    ['/v1/web/tokens', JSON.stringify({ name: 'fuzz' })],
  ];
  for (let i = 0; i < 150; i++) {
    const [route, tpl] = unixTemplates[rand(unixTemplates.length)]!;
    const body = i % 6 === 0 ? Buffer.from(Array.from({ length: rand(100) }, () => rand(256))).toString('latin1') : mutate(tpl);
    const r = await rawUnix('POST', route, body);
    assert.ok(r.status >= 200 && r.status < 500, `POST ${route} ${JSON.stringify(body)} -> ${r.status} ${r.body}`);
  }
  for (let i = 0; i < 60; i++) {
    const body = mutate(JSON.stringify({ token: 'xvm_0123abcd_' + 'Q'.repeat(43) }));
    const r = await httpsRequest(ep, 'POST', '/v1/web/login', { headers: { 'content-type': 'application/json' }, rawBody: body });
    assert.ok(r.status === 400 || r.status === 401 || r.status === 415, `login ${JSON.stringify(body)} -> ${r.status} ${r.body}`);
  }
  assert.equal((await host.client.host()).version.length > 0, true, 'xvmd still answers');
  host.cli(['web', 'disable']);
});

function rawUnix(method: string, urlPath: string, body: string): Promise<{ status: number; body: string }> {
  return import('node:http').then(
    (http) =>
      new Promise((resolve, reject) => {
        const req = http.request({ socketPath: host.client.socketPath, method, path: urlPath, headers: { 'content-type': 'application/json' } }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        });
        req.on('error', reject);
        req.end(body);
      }),
  );
}

test('xvm saves: an empty <lib>/saves, a truncated file listed with why, xvm save without a file of an unknown domain', async () => {
  const doc = (await host.client.openapi()) as { paths: Record<string, Record<string, unknown>> };
  assert.ok(doc.paths['/v1/saves']?.get, 'GET /v1/saves is documented');
  const dir = path.join(host.home, 'lib', 'saves');
  let r = host.cli(['saves']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `no save files in ${dir}\n`);
  // The save magic and nothing else: a save cut short.
  fs.writeFileSync(path.join(dir, 'cut.xvmsave'), Buffer.from('XVMSAVE\0', 'latin1'));
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'not listed\n');
  r = host.cli(['saves', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const l = JSON.parse(r.stdout) as { dir: string; files: { name: string; bytes: number; error: string | null }[] };
  assert.equal(l.dir, dir);
  assert.deepEqual(l.files.map((f) => [f.name, f.bytes]), [['cut.xvmsave', 8]]);
  assert.match(l.files[0]!.error!, /truncated/);
  r = host.cli(['saves']);
  assert.match(r.stdout, /^cut\.xvmsave\s+\?\s+unreadable\s+0\.0 MiB\s+\S+\s+.*truncated/m);
  fs.rmSync(path.join(dir, 'cut.xvmsave'));
  fs.rmSync(path.join(dir, 'notes.txt'));
  r = host.cli(['save', 'nope']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /nope/);
  assert.deepEqual(fs.readdirSync(dir), [], 'nothing left behind');
});
