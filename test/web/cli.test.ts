// xvm web enable|disable|status|token|tokens|revoke against a real xvmd:
// the setting and the tokens survive a daemon restart (same certificate),
// bad input gets a clear error, a broken xvmd.json keeps the web manager off
// without stopping xvmd, and disable really closes the port.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { TestHost } from '../helpers/xvm.js';
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

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
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
