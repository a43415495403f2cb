// The save file format without a guest: a file written the way xvm save
// writes it reads back; every truncation and seeded random corruption is
// refused with XvmError 'invalid' (never another exception, never accepted);
// the systemd unit's save policy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { XvmError } from '../../src/common/errors.js';
import { encodePreamble, encodeTrailer, readSaveFile, SAVE_FORMAT_VERSION, TRAILER_BYTES, type SaveHeader } from '../../src/migrate/format.js';
import { systemdUnit } from '../../src/cli/ops.js';
import { rng } from '../helpers/random.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-savefmt-'));
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

const header: SaveHeader = {
  xvmVersion: '0.1.0',
  createdAt: new Date(0).toISOString(),
  config: { name: 'f', memory: 128 },
  state: 'running',
  checkpoint: false,
  qemu: { version: '7.2.22', machine: 'pc-i440fx-7.2' },
  memoryMiB: 128,
  run: { readyAt: null, reboots: 0, startedAt: null },
  disks: [{ vdev: 'xvdb', image: '/x/y.qcow2', format: 'qcow2', readOnly: false, vol: 'default/y' }],
};

function build(stream: Buffer): Buffer {
  const pre = encodePreamble(header);
  const sum = crypto.createHash('sha256').update(pre).update(stream).digest();
  return Buffer.concat([pre, stream, encodeTrailer(stream.length, sum)]);
}

async function outcome(bytes: Buffer, name: string): Promise<'ok' | 'invalid'> {
  const f = path.join(dir, name);
  fs.writeFileSync(f, bytes);
  try {
    await readSaveFile(f);
    return 'ok';
  } catch (e) {
    assert.ok(e instanceof XvmError, `not an XvmError: ${(e as Error).stack}`);
    assert.equal(e.code, 'invalid', e.message);
    assert.ok(e.message.includes(f), 'the error names the file');
    return 'invalid';
  }
}

test('a well-formed file reads back with its header, stream offset and length', async () => {
  const stream = crypto.randomBytes(100_000);
  const bytes = build(stream);
  const f = path.join(dir, 'good.xvmsave');
  fs.writeFileSync(f, bytes);
  const info = await readSaveFile(f);
  assert.equal(info.formatVersion, SAVE_FORMAT_VERSION);
  assert.deepEqual(info.header, header);
  assert.equal(info.streamBytes, stream.length);
  assert.ok(bytes.subarray(info.streamOffset, info.streamOffset + info.streamBytes).equals(stream));
  assert.equal(info.fileBytes, bytes.length);
});

test('every truncation and every seeded corruption is refused as invalid', async () => {
  const seed = Number(process.env.XVM_FUZZ_SEED ?? 20261201);
  const rand = rng(seed);
  const bytes = build(crypto.randomBytes(20_000));
  // Truncations: every length in the preamble/header/trailer zones, a sample in the stream.
  const lengths = new Set<number>();
  for (let n = 0; n < 600; n++) lengths.add(n);
  for (let n = bytes.length - TRAILER_BYTES - 10; n < bytes.length; n++) lengths.add(n);
  for (let i = 0; i < 100; i++) lengths.add(Math.floor(rand() * bytes.length));
  for (const n of lengths) assert.equal(await outcome(bytes.subarray(0, n), 'trunc'), 'invalid', `truncated to ${n} (seed ${seed})`);
  // One to four flipped bytes anywhere.
  for (let i = 0; i < 300; i++) {
    const x = Buffer.from(bytes);
    const flips = 1 + Math.floor(rand() * 4);
    for (let k = 0; k < flips; k++) x[Math.floor(rand() * x.length)]! ^= 1 + Math.floor(rand() * 255);
    if (x.equals(bytes)) continue;
    assert.equal(await outcome(x, 'flip'), 'invalid', `corruption ${i} (seed ${seed})`);
  }
  // Appended garbage.
  assert.equal(await outcome(Buffer.concat([bytes, Buffer.from('x')]), 'pad'), 'invalid');
});

test('the systemd unit can save the guests when it stops', () => {
  const u = systemdUnit({ node: '/usr/bin/node', xvmd: '/opt/xvm/bin/xvmd.js', xvm: '/opt/xvm/bin/xvm.js', onStop: 'save', shutdownTimeout: 90 });
  assert.match(u, /^ExecStop=\/usr\/bin\/node \/opt\/xvm\/bin\/xvm.js daemon stop --domains=save --timeout 90$/m);
  assert.match(u, /^TimeoutStopSec=120$/m);
});
