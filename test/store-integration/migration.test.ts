// Upgrading from the JSON files of earlier versions (lib/domains/*.json and
// lib/next-domid): xvmd imports them into the store on its first start and
// moves the folder to lib/domains.migrated; users keep their domains.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestHost } from '../helpers/xvm.js';
import { StoreClient } from '../../src/store/index.js';
import { validateDomainConfig } from '../../src/config/index.js';

const host = new TestHost('xvsm');
after(async () => host.cleanup());

const U1 = '6f2a9c3e-8d1b-4c5e-9a7f-0123456789ab';
const U2 = '0b7c2f3a-1d2e-4f50-8a9b-abcdefabcdef';

test('lib/domains/*.json and lib/next-domid are imported into the store on first start', { timeout: 180_000 }, async () => {
  const lib = path.join(host.home, 'lib');
  const dir = path.join(lib, 'domains');
  fs.mkdirSync(dir, { recursive: true });
  const old = (name: string, uuid: string, state: string, extra: Record<string, unknown> = {}) => ({
    config: { ...validateDomainConfig({ name, memory: 96, ...extra }), uuid },
    createdAt: '2026-01-02T03:04:05.000Z',
    status: { state, lastExit: { reason: 'shut down', at: '2026-01-03T00:00:00.000Z' } },
  });
  fs.writeFileSync(path.join(dir, `${U1}.json`), JSON.stringify(old('old-one', U1, 'shutdown', { on_crash: 'preserve', vcpus: 2 }), null, 2));
  // Recorded as running, but there is no QEMU: it comes back as crashed.
  fs.writeFileSync(path.join(dir, `${U2}.json`), JSON.stringify(old('old-two', U2, 'running')));
  fs.writeFileSync(path.join(dir, 'junk.json'), '{"config": ');
  fs.writeFileSync(path.join(lib, 'next-domid'), '7');

  await host.startDaemon();
  const c = host.client;
  const one = await c.getDomain('old-one');
  assert.equal(one.uuid, U1);
  assert.equal(one.state, 'shutdown');
  assert.equal(one.memory, 96);
  assert.equal(one.vcpus, 2);
  assert.equal(one.config.on_crash, 'preserve');
  assert.deepEqual(one.lastExit, { reason: 'shut down', at: '2026-01-03T00:00:00.000Z' });
  assert.equal((await c.getDomain('old-two')).state, 'crashed');
  assert.deepEqual((await c.listDomains()).map((d) => d.name).sort(), ['old-one', 'old-two']);

  assert.equal(fs.existsSync(dir), false, 'the old folder is moved away');
  assert.deepEqual(fs.readdirSync(path.join(lib, 'domains.migrated')).sort(), [`${U2}.json`, `${U1}.json`, 'junk.json'].sort());
  assert.equal(fs.existsSync(path.join(lib, 'next-domid')), false);
  assert.equal(fs.readFileSync(path.join(lib, 'next-domid.migrated'), 'utf8'), '7');
  const log = fs.readFileSync(path.join(host.home, 'log', 'xvmd.log'), 'utf8');
  assert.match(log, /junk\.json \(not imported, kept in domains\.migrated\)/, 'the unreadable file is reported');

  const sc = await StoreClient.connect(path.join(host.home, 'run', 'xenstored.sock'));
  try {
    assert.equal(await sc.read(`/vm/${U1}/name`), 'old-one');
    assert.equal(await sc.read(`/vm/${U1}/vcpus`), '2');
    assert.equal(await sc.read(`/vm/${U1}/xvm/created_at`), '2026-01-02T03:04:05.000Z');
    assert.equal(await sc.read('/tool/xvm/next-domid'), '7');
  } finally {
    sc.close();
  }

  // The domain id counter carried over; the imported domain starts.
  const started = await c.start('old-one');
  assert.equal(started.domid, 7);
  await c.destroy('old-one');

  // A second start does not import again and keeps everything.
  await host.stopDaemon();
  await host.startDaemon();
  assert.deepEqual((await host.client.listDomains()).map((d) => `${d.name}:${d.state}`).sort(), ['old-one:shutdown', 'old-two:crashed']);
  assert.equal(fs.readdirSync(lib).filter((n) => n.startsWith('domains')).length, 1);
});
