// The block backend's control channel (live migration): the real backend
// program on a raw image, driven over its control socket as xvmd does —
// dirty bitmap, reads and writes of the virtual disk, and the image
// hand-over (release frees the image's lock for another writer, open takes
// it back; --defer-open holds no lock until open).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { BlkControlClient, DIRTY_BLOCK } from '../../src/devices/blk/control.js';
import { RawImage } from '../../src/storage/raw.js';

const MAIN = fileURLToPath(new URL('../../src/devices/blk/main.js', import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xvmctl-'));
const procs: ChildProcess[] = [];

after(() => {
  for (const p of procs) p.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function backend(image: string, extra: string[] = []): Promise<{ proc: ChildProcess; ctl: BlkControlClient }> {
  const sock = path.join(tmp, `${path.basename(image)}.sock`);
  const ctlPath = path.join(tmp, `${path.basename(image)}.ctl`);
  const proc = spawn(process.execPath, [MAIN, '--socket', sock, '--image', image, '--format', 'raw', '--control', ctlPath, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('XVM_BLK_READY')) resolve();
    });
    proc.once('exit', (c) => reject(new Error(`backend exited ${c}`)));
  });
  return { proc, ctl: await BlkControlClient.connect(ctlPath, 'test disk') };
}

/** Whether another writer could open the image now (its lock is free). */
async function lockFree(image: string): Promise<boolean> {
  try {
    const img = await RawImage.open(image, { readOnly: false });
    await img.close();
    return true;
  } catch (e) {
    assert.match((e as Error).message, /locked/);
    return false;
  }
}

test('dirty bitmap, reads and writes over the control channel, image release and reopen', async () => {
  const image = path.join(tmp, 'a.raw');
  fs.writeFileSync(image, Buffer.alloc(4 << 20));
  const { proc, ctl } = await backend(image);
  const info = (await ctl.request({ op: 'info' })).msg;
  assert.equal(info.size, 4 << 20);
  assert.equal(info.writable, true);
  assert.equal(await lockFree(image), false, 'the backend holds the image');

  await ctl.request({ op: 'dirty-start' });
  assert.deepEqual(await ctl.dirtyTake(), []);
  const data = Buffer.alloc(100, 0xab);
  await ctl.request({ op: 'write', offset: DIRTY_BLOCK * 3 - 50 }, data); // spans blocks 2 and 3
  await ctl.request({ op: 'write', offset: DIRTY_BLOCK * 40, zero: DIRTY_BLOCK });
  assert.deepEqual(await ctl.dirtyTake(), [2, 3, 40]);
  assert.deepEqual(await ctl.dirtyTake(), [], 'taking clears the bitmap');
  assert.deepEqual(await ctl.read(DIRTY_BLOCK * 3 - 50, 100), data);

  await ctl.request({ op: 'release' });
  assert.equal((await ctl.request({ op: 'info' })).msg.open, false);
  assert.equal(await lockFree(image), true, 'released: another writer may open it');
  await assert.rejects(ctl.read(0, 512), /handed over/);
  await ctl.request({ op: 'open' });
  assert.equal(await lockFree(image), false, 'reopened: the backend holds it again');
  assert.deepEqual(await ctl.read(DIRTY_BLOCK * 3 - 50, 100), data);
  await assert.rejects(ctl.request({ op: 'read', offset: 4 << 20, length: 512 }), /out of range/);
  ctl.close();
  proc.kill('SIGTERM');
});

test('--defer-open: the image is read-only and unlocked until open', async () => {
  const image = path.join(tmp, 'b.raw');
  fs.writeFileSync(image, Buffer.alloc(1 << 20));
  const { proc, ctl } = await backend(image, ['--defer-open']);
  const info = (await ctl.request({ op: 'info' })).msg;
  assert.equal(info.readOnly, false, 'the guest will see a writable disk');
  assert.equal(info.writable, false);
  assert.equal(await lockFree(image), true, 'no lock held before the hand-over');
  await assert.rejects(ctl.request({ op: 'write', offset: 0 }, Buffer.alloc(512, 1)));
  await ctl.request({ op: 'open' });
  assert.equal((await ctl.request({ op: 'info' })).msg.writable, true);
  assert.equal(await lockFree(image), false);
  await ctl.request({ op: 'write', offset: 0 }, Buffer.alloc(512, 1));
  await ctl.request({ op: 'flush' });
  assert.equal(fs.readFileSync(image)[0], 1);
  ctl.close();
  proc.kill('SIGTERM');
});
