import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Store, StoreError, layout, createDomainEntry, removeDomainEntry, listDomains } from '../../src/store/index.js';
import { tmpDir } from './helpers.js';

test('domain entries: Xen layout and permissions, introduce/release, list', async () => {
  const dir = tmpDir();
  const s = await Store.open({ dataDir: dir });
  try {
    const uuid = '0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0';
    const ev: string[] = [];
    s.watch('@introduceDomain', 'i', (p) => ev.push(p), { initial: false });
    s.watch('@releaseDomain', 'r', (p) => ev.push(p), { initial: false });
    await createDomainEntry(s, { domid: 3, uuid, name: 'web-1', memoryKiB: 524288, vcpus: 2 });
    assert.equal(s.read('/local/domain/3/vm'), `/vm/${uuid}`);
    assert.equal(s.read('/local/domain/3/memory/target'), '524288');
    assert.equal(s.read('/local/domain/3/cpu/1/availability'), 'online');
    assert.equal(s.isDomainIntroduced(3), true);
    await assert.rejects(createDomainEntry(s, { domid: 3, uuid, name: 'again' }), (e: unknown) => e instanceof StoreError && e.errno === 'EEXIST');
    // The guest reads its own subtree, writes only device/control/data/memory, sees nothing of domain 4.
    await createDomainEntry(s, { domid: 4, uuid: '11111111-2222-3333-4444-555555555555', name: 'db' });
    const g = s.connect(3);
    assert.equal(g.read('name'), 'web-1');
    await g.write('data/hello', 'from guest');
    await g.write('device/vif/0/state', '1');
    await assert.rejects(g.write('name', 'renamed'), (e: unknown) => e instanceof StoreError && e.errno === 'EACCES');
    assert.throws(() => g.read('/local/domain/4/name'), (e: unknown) => e instanceof StoreError && e.errno === 'EACCES');
    await s.write(`${layout.backend(3, 'vbd', 768)}/state`, '4');
    assert.deepEqual(listDomains(s), [
      { domid: 3, name: 'web-1', vm: `/vm/${uuid}` },
      { domid: 4, name: 'db', vm: '/vm/11111111-2222-3333-4444-555555555555' },
    ]);
    await removeDomainEntry(s, 3);
    assert.equal(g.closed, true, 'release closes the domain');
    assert.equal(s.exists('/local/domain/3'), false);
    assert.equal(s.exists('/local/domain/0/backend/vbd/3'), false);
    assert.deepEqual(listDomains(s).map((d) => d.domid), [4]);
    assert.deepEqual(ev, ['@introduceDomain', '@introduceDomain', '@releaseDomain']);
    assert.throws(() => layout.vm('not-a-uuid'), /bad domain uuid/);
    await assert.rejects(createDomainEntry(s, { domid: 0, uuid, name: 'x' }), /bad guest domain id/);
  } finally {
    await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
