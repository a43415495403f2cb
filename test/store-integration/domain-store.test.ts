// DomainStore against a real Store in a temporary directory: the /vm layout
// round-trips (also past one node's 4096 bytes), runtime entries come and go
// with @introduceDomain / @releaseDomain, domain ids skip ids in use, and
// malformed records are reported, not fatal.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store } from '../../src/store/index.js';
import { DomainStore, NEXT_DOMID_PATH, type DomainRecord } from '../../src/daemon/domain-store.js';
import { validateDomainConfig } from '../../src/config/index.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function open(): Promise<{ store: Store; ds: DomainStore; lib: string }> {
  const lib = fs.mkdtempSync(path.join(os.tmpdir(), 'xvds-'));
  dirs.push(lib);
  const store = await Store.open({ dataDir: path.join(lib, 'store') });
  return { store, ds: new DomainStore(store, lib), lib };
}

function record(name: string, uuid: string, extra: Record<string, unknown> = {}): DomainRecord {
  return { config: { ...validateDomainConfig({ name, ...extra }), uuid }, createdAt: '2026-11-25T00:00:00.000Z', status: { state: 'defined' } };
}

const U1 = '11111111-2222-4333-8444-555555555555';

test('a definition round-trips through /vm/<uuid>, large configurations are split, stale nodes go', async () => {
  const { store, ds, lib } = await open();
  await ds.loadAll();
  assert.equal(store.read('/local/domain/0/name'), 'Domain-0');
  const disks = Array.from({ length: 40 }, (_, i) => `/var/lib/xvm/images/a-rather-long-image-file-name-number-${i}.qcow2,qcow2,xvd${String.fromCharCode(97 + (i % 26))}${i >= 26 ? 'a' : ''},rw`);
  const big = record('big.one', U1, { memory: 512, maxmem: 1024, vcpus: 2, disk: disks, extra: 'console=ttyS0' });
  ds.save(big);
  // Applied at once (read right after), durable after flush.
  assert.equal(store.read(`/vm/${U1}/name`), 'big.one');
  await ds.flush();
  assert.ok(JSON.stringify(big.config).length > 4096, 'the test configuration is larger than one node');
  assert.equal(store.read(`/vm/${U1}/xvm/config`), '');
  assert.ok(store.directory(`/vm/${U1}/xvm/config`).length >= 2);
  assert.equal(store.read(`/vm/${U1}/device/vbd/3/vdev`), 'xvdd');
  assert.equal(store.read(`/vm/${U1}/image/extra`), 'console=ttyS0');
  assert.deepEqual(ds.readRecord(U1), JSON.parse(JSON.stringify(big)));

  // Status changes and a smaller configuration: only the nodes it has remain.
  const small = record('big.one', U1, { memory: 256 });
  small.status = { state: 'crashed', lastExit: { reason: 'the guest kernel panicked', at: '2026-11-25T01:00:00.000Z' } };
  ds.save(small);
  await ds.flush();
  assert.deepEqual(ds.readRecord(U1), JSON.parse(JSON.stringify(small)));
  assert.equal(store.exists(`/vm/${U1}/device`), false);
  assert.equal(store.exists(`/vm/${U1}/maxmem`), false);
  assert.deepEqual(store.directory(`/vm/${U1}/xvm/config`), []);

  // Survives a reopen of the store.
  await store.close();
  const again = await Store.open({ dataDir: path.join(lib, 'store') });
  const ds2 = new DomainStore(again, lib);
  const { records, errors } = await ds2.loadAll();
  assert.deepEqual(errors, []);
  assert.deepEqual(records, [JSON.parse(JSON.stringify(small))]);
  ds2.remove(U1);
  await ds2.flush();
  assert.equal(again.exists(`/vm/${U1}`), false);
  await again.close();
});

test('runtime entries: introduce on start, release on stop, prune after restart; domain ids skip ids in use', async () => {
  const { store, ds } = await open();
  await ds.loadAll();
  const events: string[] = [];
  store.watch('@introduceDomain', 'in', (p, t) => events.push(`${t}`));
  store.watch('@releaseDomain', 'out', (p, t) => events.push(`${t}`));
  const rec = record('web.1', U1, { memory: 64, vcpus: 1, maxvcpus: 3 });
  ds.save(rec);
  assert.equal(ds.nextDomid(), 1);
  assert.equal(ds.nextDomid(), 2);
  ds.domainUp(rec, 2, { consoleLog: '/var/log/xvm/console/web.1.log' });
  await ds.flush();
  assert.equal(store.read('/local/domain/2/name'), 'web.1');
  assert.equal(store.read('/local/domain/2/vm'), `/vm/${U1}`);
  assert.equal(store.read('/local/domain/2/memory/target'), '65536');
  assert.deepEqual(['0', '1', '2'].map((n) => store.read(`/local/domain/2/cpu/${n}/availability`)), ['online', 'offline', 'offline']);
  assert.equal(store.read('/local/domain/2/console/log'), '/var/log/xvm/console/web.1.log');
  assert.deepEqual(store.getPerms('/local/domain/2').map((p) => `${p.perm}${p.domid}`), ['n0', 'r2']);
  assert.equal(store.isDomainIntroduced(2), true);
  // The domain's own view: it may read its entry and write its data/.
  const dom2 = store.connect(2);
  assert.equal(dom2.read('name'), 'web.1');
  await dom2.write('data/hello', 'hi');
  await assert.rejects(dom2.write('name', 'evil'), /EACCES|may not/);
  dom2.close();

  // Re-adoption keeps the entry (and what the guest wrote) and introduces again.
  ds.domainUp(rec, 2, { consoleLog: '/var/log/xvm/console/web.1.log' });
  await ds.flush();
  assert.equal(store.read('/local/domain/2/data/hello'), 'hi');

  // Counter: an id in use is skipped; ids move past adopted ones.
  await store.write('/local/domain/3/name', 'someone');
  assert.equal(ds.nextDomid(), 4, 'id 3 is in use, 2 was handed out');
  ds.domainUp(rec, 9);
  await ds.flush();
  assert.equal(store.read(NEXT_DOMID_PATH), '10');

  ds.domainDown(2);
  await ds.flush();
  assert.equal(store.exists('/local/domain/2'), false);
  assert.equal(store.isDomainIntroduced(2), false);
  ds.pruneRuntime([9]);
  await ds.flush();
  assert.deepEqual(store.directory('/local/domain').sort(), ['0', '9']);
  assert.ok(events.includes('in') && events.includes('out'), `events: ${events.join(',')}`);
  await store.close();
});

test('malformed records in the store are reported and skipped, not fatal', async () => {
  const { store, ds } = await open();
  await ds.loadAll();
  const U2 = '22222222-2222-4333-8444-555555555555';
  const U3 = '33333333-2222-4333-8444-555555555555';
  ds.save(record('good', U1));
  await store.write(`/vm/${U2}/xvm/config`, '{"name": "half');
  await store.write(`/vm/${U3}/xvm/config`, JSON.stringify({ ...record('x', U3).config }));
  await store.write(`/vm/${U3}/xvm/state`, 'exploded');
  await store.write('/vm/not-a-uuid/name', 'junk');
  const { records, errors } = await ds.loadAll();
  assert.deepEqual(records.map((r) => r.config.name), ['good']);
  assert.equal(errors.length, 3, errors.join('\n'));
  assert.ok(errors.some((e) => e.includes(U2) && /not valid JSON/.test(e)));
  assert.ok(errors.some((e) => e.includes(U3) && /exploded/.test(e)));
  assert.equal(ds.get(U2), undefined);
  assert.deepEqual([...ds.list().keys()], [U1]);
  await store.close();
});
