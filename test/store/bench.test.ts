// The benchmark still runs end to end (tiny durations; no figures asserted).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BENCH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bench/store.js');

test('bench/store.ts runs and prints store vs Map with ratios', { timeout: 120_000 }, async () => {
  const { code, out, err } = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const p = spawn(process.execPath, [BENCH, '--seconds', '0.1', '--clients', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => p.kill('SIGKILL'), 110_000);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, out, err });
    });
  });
  assert.equal(code, 0, err);
  for (const op of ['read', 'write', 'watch']) assert.match(out, new RegExp(`^${op}\\s+1×1\\s+[\\d,.]+.*\\d+\\.\\d\\dx$`, 'm'));
  assert.match(out, /^read\s+8×32\s/m);
  assert.match(out, /fdatasyncs/);
});
