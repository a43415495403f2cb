// xvmd keeps its state in the store: definitions under /vm/<uuid>, running
// domains under /local/domain/<domid>, served on <run>/xenstored.sock where
// Debian's xenstore-utils and 'xvm store' read them. Real guests (QEMU).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { TestHost, waitUntil } from '../helpers/xvm.js';
import { StoreClient } from '../../src/store/index.js';
import { domainInfoSchema, hostInfoSchema } from '../../src/api/schema.js';

const host = new TestHost('xvst');
const sock = path.join(host.home, 'run', 'xenstored.sock');
let sc: StoreClient | undefined;

function xs(cmd: string, ...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(cmd, args, { env: { ...process.env, XENSTORED_PATH: sock }, encoding: 'utf8', timeout: 30_000 });
  if (r.error) throw new Error(`cannot run ${cmd} (apt-get install xenstore-utils): ${r.error.message}`);
  return { code: r.status ?? -1, out: r.stdout.trim(), err: r.stderr.trim() };
}
function xsRead(p: string): string {
  const r = xs('xenstore-read', p);
  assert.equal(r.code, 0, `xenstore-read ${p}: ${r.err}`);
  return r.out;
}
function xsExists(p: string): boolean {
  return xs('xenstore-exists', p).code === 0;
}

before(async () => host.startDaemon());
after(async () => {
  sc?.close();
  await host.cleanup();
});

test('xvm info reports the store socket; xvmd serves the store there', async () => {
  const h = hostInfoSchema.parse(await host.client.host());
  assert.equal(h.store.socket, sock);
  const j = host.cli(['info', '--json']);
  assert.equal(j.code, 0, j.stderr);
  assert.equal(JSON.parse(j.stdout).store.socket, sock);
  const t = host.cli(['info']);
  assert.match(t.stdout, new RegExp(`store_socket:\\s+${sock.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  assert.equal((fs.statSync(sock).mode & 0o777).toString(8), '600');
  assert.equal(xsRead('/local/domain/0/name'), 'Domain-0');
  assert.equal(xsRead('/local/domain/0/domid'), '0');
});

let alpha = { uuid: '', domid: 0 };
let betaUuid = '';

test('a running domain is in /local/domain/<domid> and /vm/<uuid>; xenstore-utils and xvm store read it; destroy removes it', { timeout: 180_000 }, async () => {
  const c = host.client;
  sc = await StoreClient.connect(sock);
  const events: string[] = [];
  sc.on('watch', (p: string, token: string) => events.push(`${token}:${p}`));
  await sc.watch('@introduceDomain', 'in');
  await sc.watch('@releaseDomain', 'out');

  const a = await c.createDomain({ config: { name: 'alpha', memory: 128, vcpus: 1, maxvcpus: 2, extra: 'quiet' } });
  const b = await c.createDomain({ config: { name: 'beta.1' }, start: false });
  assert.ok(a.domid !== null && a.domid >= 1, 'guest domain ids start at 1');
  alpha = { uuid: a.uuid, domid: a.domid };
  betaUuid = b.uuid;
  const base = `/local/domain/${a.domid}`;

  // Runtime entry, as Xen lays it out.
  assert.equal(xsRead(`${base}/name`), 'alpha');
  assert.equal(xsRead(`${base}/domid`), String(a.domid));
  assert.equal(xsRead(`${base}/vm`), `/vm/${a.uuid}`);
  assert.equal(xsRead(`${base}/memory/target`), String(128 * 1024));
  assert.equal(xsRead(`${base}/cpu/0/availability`), 'online');
  assert.equal(xsRead(`${base}/cpu/1/availability`), 'offline');
  assert.equal(xsRead(`${base}/console/type`), 'serial');
  assert.equal(xsRead(`${base}/console/log`), a.consoleLog);
  assert.deepEqual(await sc.getPerms(base), ['n0', `r${a.domid}`]);
  assert.deepEqual(await sc.getPerms(`${base}/device`), [`n${a.domid}`]);
  assert.equal(await sc.isIntroduced(a.domid), true, 'a running domain is introduced');
  await waitUntil(() => events.includes('in:@introduceDomain'), 10_000, '@introduceDomain');

  // Definitions: /vm/<uuid>, for running and defined-only domains alike.
  assert.equal(xsRead(`/vm/${a.uuid}/name`), 'alpha');
  assert.equal(xsRead(`/vm/${a.uuid}/memory`), '128');
  assert.equal(xsRead(`/vm/${a.uuid}/image/extra`), 'quiet');
  assert.equal(xsRead(`/vm/${a.uuid}/xvm/state`), 'running');
  const ls = xs('xenstore-ls', `/vm/${b.uuid}`);
  assert.equal(ls.code, 0, ls.err);
  assert.match(ls.out, /^name = "beta\.1"$/m);
  assert.match(ls.out, /^ state = "defined"$/m);
  const listed = xs('xenstore-list', '/local/domain');
  assert.deepEqual(listed.out.split('\n').sort(), ['0', String(a.domid)].sort());

  // The CLI reads it too.
  const r = host.cli(['store', 'read', `${base}/name`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'alpha');

  // GET /v1/domains answers from the store's records, in the API's shape.
  const list = await c.listDomains();
  assert.deepEqual(list.map((d) => d.name), ['alpha', 'beta.1']);
  for (const d of list) {
    domainInfoSchema.strict().parse(d);
    assert.deepEqual(d.config, JSON.parse(await sc.read(`/vm/${d.uuid}/xvm/config`)));
    assert.equal(d.state, await sc.read(`/vm/${d.uuid}/xvm/state`));
  }
  const cliList = host.cli(['list', '--json']);
  assert.equal(cliList.code, 0, cliList.stderr);
  assert.match(cliList.stdout, /"alpha"/);

  await c.destroy('alpha');
  assert.equal(xsExists(base), false, 'the runtime entry is gone');
  assert.equal(await sc.isIntroduced(a.domid), false);
  await waitUntil(() => events.includes('out:@releaseDomain'), 10_000, '@releaseDomain');
  assert.equal(xsRead(`/vm/${a.uuid}/xvm/state`), 'shutdown', 'the definition stays, with its status');
  assert.equal(xsRead(`/vm/${a.uuid}/xvm/last_exit/reason`), 'destroyed');
  assert.equal((await c.getDomain('alpha')).state, 'shutdown');
});

test('definitions and runtime entries come back from the store after kill -9 and a clean restart', { timeout: 240_000 }, async () => {
  let c = host.client;
  const a = await c.start('alpha');
  assert.ok(a.domid !== null && a.domid > alpha.domid, 'domain ids are not reused');
  const domid = a.domid;
  // A runtime entry of a domain that will not be there after the restart.
  assert.equal(xs('xenstore-write', '/local/domain/4242/name', 'ghost').code, 0);
  sc?.close();
  sc = undefined;

  // Acknowledged = durable: a definition answered just before kill -9 is there after it.
  const gamma = await c.createDomain({ config: { name: 'gamma', memory: 64 }, start: false });
  await host.stopDaemon(true); // kill -9
  await host.startDaemon();
  c = host.client;
  assert.equal(fs.existsSync(path.join(host.home, 'lib', 'domains')), false, 'no JSON files any more');
  const after1 = await c.getDomain('alpha');
  assert.equal(after1.state, 'running');
  assert.equal(after1.domid, domid);
  assert.equal(after1.pid, a.pid, 're-adopted');
  assert.equal((await c.getDomain('beta.1')).state, 'defined');
  const g = await c.getDomain('gamma');
  assert.equal(g.uuid, gamma.uuid);
  assert.equal(g.memory, 64);
  assert.equal(xsRead(`/local/domain/${domid}/name`), 'alpha');
  assert.equal(xsRead(`/vm/${a.uuid}/xvm/state`), 'running');
  assert.equal(xsExists('/local/domain/4242'), false, 'entries of domains that are gone are removed');
  sc = await StoreClient.connect(sock);
  assert.equal(await sc.isIntroduced(domid), true, 're-adopted domains are introduced again');
  sc.close();
  sc = undefined;

  // A clean stop closes the store: socket and lock go.
  await host.stopDaemon(false);
  assert.equal(fs.existsSync(sock), false);
  assert.equal(fs.existsSync(path.join(host.home, 'lib', 'store', 'lock')), false);
  await host.startDaemon();
  c = host.client;
  assert.equal((await c.getDomain('alpha')).domid, domid);
  const beta = await c.start('beta.1');
  assert.ok(beta.domid !== null && beta.domid > domid);
  assert.equal(xsRead(`/local/domain/${beta.domid}/name`), 'beta.1');
  await c.destroy('beta.1');
  await c.undefineDomain('beta.1');
  assert.equal(xsExists(`/vm/${betaUuid}`), false, 'undefine removes /vm/<uuid>');
  await c.destroy('alpha');
  assert.equal(xsExists(`/local/domain/${domid}`), false);
});
