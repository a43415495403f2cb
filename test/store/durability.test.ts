// kill -9 of the standalone store in the middle of a stream of writes and
// transactions: after a restart every acknowledged write is there, and
// every transaction is all-or-nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { StoreClient } from '../../src/store/index.js';
import { tmpDir, startStandalone, waitExit, type Child } from './helpers.js';

test('SIGKILL during writes: every acknowledged write and commit survives the restart', { timeout: 120_000 }, async () => {
  const dir = tmpDir();
  const socketPath = path.join(dir, 'sock');
  const dataDir = path.join(dir, 'data');
  let child: Child | null = null;
  // key → value of every acknowledged write, over all rounds.
  const acked = new Map<string, string>();
  // key → a later write to it that was in flight at the kill (may or may not have landed).
  const inflight = new Map<string, string>();
  const check = async (c: StoreClient, k: string, v: string, when: string): Promise<void> => {
    const got = await c.read(k);
    if (got !== v) assert.equal(got, inflight.get(k), `acknowledged ${k} lost ${when}`);
  };
  // tx id → the pair of keys it wrote together.
  const ackedTx: [string, string, string][] = [];
  const attemptedTx: [string, string, string][] = [];
  try {
    for (let round = 0; round < 3; round++) {
      // Small compaction threshold so some kills land during or near a compaction.
      child = await startStandalone(socketPath, dataDir, ['--compact-bytes', String(96 * 1024)]);
      const clients = await Promise.all(Array.from({ length: 6 }, () => StoreClient.connect(socketPath)));
      // Everything acknowledged so far (all rounds) is there.
      for (const [k, v] of acked) await check(clients[0], k, v, `after restart ${round}`);
      for (const [, a, b] of ackedTx) {
        assert.equal(await clients[0].read(a), await clients[0].read(b), 'committed transaction halves agree');
      }
      for (const [id, a, b] of attemptedTx) {
        const va = await clients[0].tryRead(a);
        const vb = await clients[0].tryRead(b);
        assert.equal(va === undefined, vb === undefined, `transaction ${id} half-applied`);
        if (va !== undefined) assert.equal(va, vb);
      }
      let stop = false;
      let count = 0;
      const writers = clients.map(async (c, w) => {
        for (let i = 0; !stop; i++) {
          const key = `/dur/r${round}/w${w}/k${i % 400}`;
          const val = `r${round}-w${w}-i${i}-${'x'.repeat(i % 50)}`;
          try {
            if (i % 10 === 9) {
              const id = `r${round}w${w}i${i}`;
              const a = `/dur/tx/${id}/a`;
              const b = `/dur/tx/${id}/b`;
              attemptedTx.push([id, a, b]);
              await c.transaction(async (tx) => {
                await c.write(a, id, tx);
                await c.write(b, id, tx);
              });
              ackedTx.push([id, a, b]);
            } else {
              inflight.set(key, val);
              await c.write(key, val);
              acked.set(key, val);
              inflight.delete(key);
            }
            count++;
          } catch {
            return; // the store died under us: this write was not acknowledged
          }
        }
      });
      // Let a good stream build up, then kill at an arbitrary moment.
      const target = 800 + round * 700;
      const t0 = Date.now();
      while (count < target && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 2));
      child.proc.kill('SIGKILL');
      await waitExit(child.proc);
      stop = true;
      await Promise.all(writers);
      for (const c of clients) c.close();
      assert.ok(count >= 100, `only ${count} writes acknowledged before the kill`);
    }
    // Final restart and full check.
    child = await startStandalone(socketPath, dataDir);
    const c = await StoreClient.connect(socketPath);
    for (const [k, v] of acked) await check(c, k, v, 'at the end');
    for (const [, a, b] of ackedTx) assert.equal(await c.read(a), await c.read(b));
    c.close();
    assert.ok(acked.size > 500, `${acked.size} distinct acknowledged keys checked`);
    child.proc.kill('SIGTERM');
    await waitExit(child.proc);
    child = null;
    assert.ok(!fs.existsSync(socketPath), 'clean shutdown removes the socket');
  } finally {
    if (child) {
      child.proc.kill('SIGKILL');
      await waitExit(child.proc);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
