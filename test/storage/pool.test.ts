import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Storage, parseVolumeRef } from '../../src/storage/pool.js';
import { parseSize, formatSize } from '../../src/storage/size.js';
import { openImage } from '../../src/storage/open.js';
import { XvmError } from '../../src/common/errors.js';
import { assertCheckClean, qemuImg, readAll, tmpdir } from './helpers.js';

const MiB = 1 << 20;
const GiB = 1 << 30;

function storage(t: { after: (fn: () => void) => void }): { st: Storage; home: string } {
  const home = tmpdir(t, 'xvm-pool-');
  return { st: new Storage({ env: { XVM_HOME: home } }), home };
}

function rejectsWith(code: string, re: RegExp) {
  return (err: unknown): boolean => err instanceof XvmError && err.code === code && re.test(err.message);
}

test('sizes: suffixes parse, bad input is refused', () => {
  assert.equal(parseSize('10G'), 10 * GiB);
  assert.equal(parseSize('512M'), 512 * MiB);
  assert.equal(parseSize('1.5K'), 1536);
  assert.equal(parseSize('64KiB'), 65536);
  assert.equal(parseSize('2t'), 2 * 2 ** 40);
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize(1024), 1024);
  for (const bad of ['', 'ten', '10X', '-1G', '1.0000001K', '1e3']) assert.throws(() => parseSize(bad), XvmError, bad);
  assert.throws(() => parseSize('1000', { multipleOf: 512 }), /multiple of 512/);
  assert.equal(formatSize(10 * GiB), '10 GiB');
  assert.equal(formatSize(1536), '1.5 KiB');
  assert.deepEqual(parseVolumeRef('fast/vm1'), { pool: 'fast', name: 'vm1' });
  assert.deepEqual(parseVolumeRef('vm1'), { pool: 'default', name: 'vm1' });
  assert.throws(() => parseVolumeRef('a/b/c'), XvmError);
  assert.throws(() => parseVolumeRef('../etc'), XvmError);
});

test('pools: default exists, create/info/list/delete, refused when in use', async (t) => {
  const { st, home } = storage(t);
  const pools = await st.listPools();
  assert.deepEqual(pools.map((p) => p.name), ['default']);
  assert.equal(pools[0].path, path.join(home, 'lib', 'pools', 'default'));
  const fast = await st.createPool('fast');
  assert.ok(fs.statSync(fast.path).isDirectory());
  const ext = path.join(home, 'elsewhere');
  fs.mkdirSync(ext);
  const other = await st.createPool('other', { path: ext });
  assert.equal(other.path, ext);
  assert.equal(other.managed, false);
  await assert.rejects(st.createPool('fast'), rejectsWith('conflict', /already exists/));
  await assert.rejects(st.createPool('again', { path: ext }), rejectsWith('conflict', /already pool other/));
  await assert.rejects(st.createPool('bad/name'), rejectsWith('invalid', /invalid pool name/));
  assert.deepEqual((await st.listPools()).map((p) => p.name), ['default', 'fast', 'other']);
  await st.createVolume('fast', 'v', { size: '1M' });
  const info = await st.poolInfo('fast');
  assert.equal(info.volumes, 1);
  assert.ok(info.capacity > 0 && info.available > 0 && info.allocated > 0);
  await assert.rejects(st.deletePool('fast'), rejectsWith('conflict', /still has volumes: v/));
  await assert.rejects(st.deletePool('default'), rejectsWith('invalid', /cannot be deleted/));
  await st.deleteVolume('fast', 'v');
  await st.deletePool('fast');
  assert.ok(!fs.existsSync(fast.path), 'managed pool directory removed');
  await st.deletePool('other');
  assert.ok(fs.existsSync(ext), 'foreign directory kept');
  await assert.rejects(st.poolInfo('fast'), rejectsWith('not_found', /no such pool/));
  // the registry is plain JSON under the state root
  const reg = JSON.parse(fs.readFileSync(path.join(home, 'lib', 'storage', 'pools.json'), 'utf8')) as { pools: object };
  assert.deepEqual(Object.keys(reg.pools), ['default']);
});

test('volumes: create raw/qcow2, info, list, resize (shrink refused), delete', async (t) => {
  const { st } = storage(t);
  const q = await st.createVolume('default', 'disk1', { size: '64M' });
  assert.equal(q.format, 'qcow2');
  assert.equal(q.size, 64 * MiB);
  assert.equal(q.chain.length, 1);
  assert.ok(q.allocated < MiB);
  const r = await st.createVolume('default', 'disk2', { size: '8M', format: 'raw' });
  assert.equal(r.format, 'raw');
  assert.equal(fs.statSync(r.path).size, 8 * MiB);
  await assert.rejects(st.createVolume('default', 'disk1', { size: '1M' }), rejectsWith('conflict', /already exists/));
  await assert.rejects(st.createVolume('default', 'x', { size: '1000' }), rejectsWith('invalid', /multiple of 512/));
  await assert.rejects(st.createVolume('default', 'x', { size: '1M', format: 'vmdk' as 'raw' }), rejectsWith('invalid', /format/));
  await assert.rejects(st.createVolume('nopool', 'x', { size: '1M' }), rejectsWith('not_found', /no such pool/));
  assert.deepEqual((await st.listVolumes()).map((v) => `${v.name}:${v.format}:${v.size}`), [`disk1:qcow2:${64 * MiB}`, `disk2:raw:${8 * MiB}`]);
  // write something, then grow and try to shrink
  const img = await openImage(q.path);
  await img.write(Buffer.alloc(MiB, 0xaa), 0);
  await img.close();
  const grown = await st.resizeVolume('default', 'disk1', '1G');
  assert.equal(grown.size, GiB);
  await assert.rejects(st.resizeVolume('default', 'disk1', '32M'), rejectsWith('invalid', /shrinking/));
  await st.resizeVolume('default', 'disk2', '16M');
  const shr = await st.resizeVolume('default', 'disk2', '4M', { allowShrink: true });
  assert.equal(shr.size, 4 * MiB);
  assertCheckClean(q.path);
  const again = await openImage(q.path, { readOnly: true });
  const b = Buffer.alloc(16);
  await again.read(b, 0);
  assert.equal(b[0], 0xaa);
  await again.close();
  await st.deleteVolume('default', 'disk1');
  assert.ok(!fs.existsSync(q.path));
  await assert.rejects(st.volumeInfo('default', 'disk1'), rejectsWith('not_found', /no such volume/));
});

test('volumes: clone of a 10 GiB base takes milliseconds, base becomes read-only, deletes refused with dependants', async (t) => {
  const { st } = storage(t);
  const base = await st.createVolume('default', 'base', { size: '10G', format: 'raw' });
  // Real data spread over the base so that a copy would show.
  const img = await openImage(base.path, { format: 'raw' });
  for (let g = 0; g < 10; g++) await img.write(Buffer.alloc(4 * MiB, g + 1), g * GiB);
  await img.close();
  const t0 = process.hrtime.bigint();
  const c1 = await st.cloneVolume('default', 'base', 'vm1');
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  t.diagnostic(`clone of a 10 GiB base: ${ms.toFixed(1)} ms`);
  assert.ok(ms < 5000, `clone took ${ms} ms`);
  assert.ok(c1.allocated < MiB, 'the clone is an overlay, not a copy');
  assert.equal(c1.size, 10 * GiB);
  assert.deepEqual(c1.chain.map((c) => c.role), ['active', 'base']);
  const c2 = await st.cloneVolume('default', 'base', 'vm2');
  const binfo = await st.volumeInfo('default', 'base');
  assert.equal(binfo.readOnly, true);
  assert.deepEqual(binfo.dependants, ['vm1', 'vm2']);
  // the clone's writes do not touch the base
  const w = await openImage(c1.path);
  await w.write(Buffer.alloc(MiB, 0xcc), 0);
  const chk = Buffer.alloc(MiB);
  await w.read(chk, GiB);
  assert.ok(chk.every((x) => x === 2), 'base data visible through the clone');
  await w.close();
  assertCheckClean(c1.path);
  const bimg = await openImage(base.path, { readOnly: true, format: 'raw' });
  await bimg.read(chk, 0);
  assert.ok(chk.every((x) => x === 1), 'base unchanged');
  await bimg.close();
  const c2img = await openImage(c2.path, { readOnly: true });
  await c2img.read(chk, 0);
  assert.ok(chk.every((x) => x === 1), 'sibling clone unchanged');
  await c2img.close();
  // base can't be written through the library
  await assert.rejects(st.resizeVolume('default', 'base', '20G'), rejectsWith('conflict', /read-only base of: vm1, vm2/));
  await assert.rejects(st.snapshotVolume('default', 'base', 's'), rejectsWith('conflict', /read-only base/));
  // refused deletes list the dependants
  await assert.rejects(st.deleteVolume('default', 'base'), (err: unknown) => {
    assert.ok(err instanceof XvmError);
    assert.equal(err.code, 'conflict');
    assert.match(err.message, /base of 2 other volume\(s\): vm1, vm2/);
    assert.deepEqual((err.details as { dependants: string[] }).dependants, ['vm1', 'vm2']);
    return true;
  });
  // a clone of a clone
  await st.cloneVolume('default', 'vm2', 'vm3');
  assert.deepEqual((await st.volumeInfo('default', 'vm3')).chain.map((c) => c.volume), ['vm3', 'vm2', 'base']);
  await assert.rejects(st.deleteVolume('default', 'vm2'), rejectsWith('conflict', /vm3/));
  await st.deleteVolume('default', 'vm3');
  await st.deleteVolume('default', 'vm2');
  await st.deleteVolume('default', 'vm1');
  assert.equal((await st.volumeInfo('default', 'base')).readOnly, false, 'a base without clones is writable again');
  await st.deleteVolume('default', 'base');
  assert.deepEqual(await st.listVolumes(), []);
  for (const c of [c1, c2]) assert.ok(!fs.existsSync(c.path));
});

test('volumes: snapshot, write, rollback brings the old data back; newer snapshots need destroyNewer', async (t) => {
  const { st } = storage(t);
  const v = await st.createVolume('default', 'vm', { size: '16M', format: 'raw' });
  const write = async (file: string, byte: number, off = 0): Promise<void> => {
    const img = await openImage(file);
    await img.write(Buffer.alloc(MiB, byte), off);
    await img.close();
  };
  const first = async (): Promise<number> => {
    const { path: p } = await st.activeLayer('default', 'vm');
    const img = await openImage(p, { readOnly: true });
    const b = Buffer.alloc(1);
    await img.read(b, 0);
    await img.close();
    return b[0];
  };
  await write(v.path, 1);
  const s1 = await st.snapshotVolume('default', 'vm', 'clean');
  assert.equal(s1.frozen, v.path);
  assert.notEqual(s1.active, v.path);
  assert.equal((await st.activeLayer('default', 'vm')).path, s1.active);
  assert.deepEqual(await st.resolve('vm'), { pool: 'default', name: 'vm', path: s1.active, format: 'qcow2', readOnly: false });
  await assert.rejects(st.resolve('default/none'), rejectsWith('not_found', /no such volume/));
  await write(s1.active, 2);
  assert.equal(await first(), 2);
  const s2 = await st.snapshotVolume('default', 'vm', 'two');
  await write(s2.active, 3);
  await assert.rejects(st.snapshotVolume('default', 'vm', 'two'), rejectsWith('conflict', /already has a snapshot/));
  await assert.rejects(st.rollbackVolume('default', 'vm', 'clean'), rejectsWith('conflict', /destroys two/));
  const r2 = await st.rollbackVolume('default', 'vm', 'two');
  assert.equal(await first(), 2);
  assert.ok(!fs.existsSync(s2.active), 'the discarded overlay is gone');
  await write(r2.active, 4);
  await st.resizeVolume('default', 'vm', '32M');
  const r1 = await st.rollbackVolume('default', 'vm', 'clean', { destroyNewer: true });
  assert.equal((await st.volumeInfo('default', 'vm')).size, 16 * MiB, 'rollback restores the size of the snapshot');
  assert.deepEqual(r1.destroyed, ['two']);
  assert.equal(await first(), 1);
  const info = await st.volumeInfo('default', 'vm');
  assert.deepEqual(info.snapshots.map((s) => s.name), ['clean']);
  assert.deepEqual(info.chain.map((c) => c.role), ['active', 'snapshot']);
  assert.deepEqual(info.chain[1].snapshots, ['clean']);
  assert.equal(info.format, 'qcow2');
  for (const c of info.chain) if (c.format === 'qcow2') assertCheckClean(c.path);
  await assert.rejects(st.rollbackVolume('default', 'vm', 'nope'), rejectsWith('not_found', /no snapshot nope/));
  await st.deleteVolume('default', 'vm');
  assert.deepEqual(fs.readdirSync(path.dirname(v.path)).filter((f) => !f.startsWith('.')), [], 'all layers removed');
});

test('volumes: import raw and qcow2 (with a backing chain) with progress', async (t) => {
  const { st, home } = storage(t);
  const src = path.join(home, 'src.raw');
  const data = Buffer.alloc(6 * MiB);
  for (let i = 0; i < data.length; i += 3 * 65536) data.fill(i & 0xff, i, i + 4096);
  fs.writeFileSync(src, data);
  const seen: number[] = [];
  const a = await st.importVolume('default', 'imp-raw', src, { onProgress: (d, total) => (assert.equal(total, data.length), seen.push(d)) });
  assert.equal(a.format, 'raw');
  assert.ok(seen.length >= 6 && seen[seen.length - 1] === data.length && seen[0] === 0);
  assert.ok(fs.readFileSync(a.path).equals(data));
  // qcow2 over a raw backing, made by qemu-img; imported flattened into qcow2
  assert.equal(qemuImg('create', '-q', '-f', 'qcow2', '-b', 'src.raw', '-F', 'raw', path.join(home, 'ov.qcow2')).status, 0);
  const b = await st.importVolume('default', 'imp-q', path.join(home, 'ov.qcow2'));
  assert.equal(b.format, 'qcow2');
  assert.equal(b.chain.length, 1, 'flattened');
  const img = await openImage(b.path, { readOnly: true });
  assert.ok((await readAll(img)).equals(data));
  await img.close();
  assertCheckClean(b.path);
  assert.ok(b.allocated < 3 * MiB, 'zero chunks are not copied');
  // into raw from qcow2
  const c = await st.importVolume('default', 'imp-c', path.join(home, 'ov.qcow2'), { format: 'raw' });
  assert.ok(fs.readFileSync(c.path).equals(data));
  await assert.rejects(st.importVolume('default', 'imp-c', src), rejectsWith('conflict', /already exists/));
  await assert.rejects(st.importVolume('default', 'x', path.join(home, 'nope')), rejectsWith('not_found', /no such file/));
  fs.writeFileSync(path.join(home, 'bad.qcow2'), Buffer.concat([Buffer.from('QFI\xfb\0\0\0\x09', 'latin1'), Buffer.alloc(200)]));
  await assert.rejects(st.importVolume('default', 'bad', path.join(home, 'bad.qcow2')), rejectsWith('invalid', /version 9/));
  assert.ok(!fs.existsSync(path.join(path.dirname(a.path), 'bad.qcow2')));
  // an image naming a host file outside its directory as backing is refused
  const sub = path.join(home, 'sub');
  fs.mkdirSync(sub);
  assert.equal(qemuImg('create', '-q', '-f', 'qcow2', '-b', path.join(home, 'src.raw'), '-F', 'raw', path.join(sub, 'evil.qcow2')).status, 0);
  await assert.rejects(st.importVolume('default', 'evil', path.join(sub, 'evil.qcow2')), rejectsWith('invalid', /outside/));
  const ok = await st.importVolume('default', 'evil', path.join(sub, 'evil.qcow2'), { allowExternalBacking: true });
  assert.equal(ok.size, data.length);
});

test('images: a backing file that is not a regular file (a host device) is refused', async (t) => {
  const { home } = storage(t);
  const f = path.join(home, 'dev.qcow2');
  assert.equal(qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', '/dev/null', '-F', 'raw', f, '1M').status, 0);
  await assert.rejects(openImage(f, { readOnly: true }), /not a regular file/);
});
