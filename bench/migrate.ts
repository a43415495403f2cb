// Live migration benchmark: `xvm migrate --live` between two xvmd on this
// machine (loopback TCP, relocation service + token) against raw QEMU's own
// live migration (`-incoming tcp:` + `migrate tcp:`) of the same guest started
// raw with the same flags, in the same run: an idle guest, then the same
// guests dirtying memory continuously. Prints total time and downtime, and
// the ratios (targets: idle downtime ≤ 300 ms, total ≤ 1.2× raw).
//
//   npm run bench -- migrate [--rounds N] [--memory MiB]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { ensureDefaultImage } from '../src/image/index.js';
import { detectAccel } from '../src/engine/accel.js';
import { SAVE_MAX_BANDWIDTH } from '../src/migrate/save.js';
import { median, numberArg, sleep, startBenchDaemon, startRawGuest, stopRawGuest, waitRawBanner, type BenchDaemon, type RawGuest } from './common.js';

const DIRTY = 'while true; do dd if=/dev/zero of=/tmp/dirty bs=1M count=24 2>/dev/null; rm /tmp/dirty; done &';

const startRaw = (image: { kernel: string; initrd: string; cmdline: string }, memoryMiB: number, incomingPort?: number) =>
  startRawGuest({ prefix: 'xvmb-rawm-', name: 'rawmig', image, memoryMiB, extra: incomingPort ? ['-incoming', `tcp:127.0.0.1:${incomingPort}`] : [] });

/** Raw QEMU live migration to a fresh raw destination; returns the destination and the figures. */
async function rawMigrate(image: { kernel: string; initrd: string; cmdline: string }, memoryMiB: number, src: RawGuest, port: number): Promise<{ dst: RawGuest; ms: number; downtimeMs: number }> {
  const t0 = performance.now();
  const dst = await startRaw(image, memoryMiB, port);
  try {
    return await rawMigrateTo(src, dst, port, t0);
  } catch (e) {
    await stopRawGuest(dst).catch(() => undefined);
    throw e;
  }
}

async function rawMigrateTo(src: RawGuest, dst: RawGuest, port: number, t0: number): Promise<{ dst: RawGuest; ms: number; downtimeMs: number }> {
  await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': SAVE_MAX_BANDWIDTH });
  await src.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
  let downtime = 0;
  const end = Date.now() + 120_000;
  for (;;) {
    if (Date.now() > end) throw new Error('raw migration did not complete within 120 s');
    const q = await src.qmp.execute<{ status: string; downtime?: number }>('query-migrate');
    if (q.status === 'completed') {
      downtime = q.downtime ?? 0;
      break;
    }
    if (q.status === 'failed') throw new Error('raw migration failed');
    await sleep(20);
  }
  for (;;) {
    if (Date.now() > end) throw new Error('raw destination did not run within 120 s');
    const st = await dst.qmp.execute<{ status: string }>('query-status');
    if (st.status === 'running') break;
    await sleep(5);
  }
  const ms = performance.now() - t0;
  await stopRawGuest(src);
  return { dst, ms, downtimeMs: downtime };
}

export async function benchMigrate(args: string[]): Promise<void> {
  const rounds = numberArg(args, '--rounds', 3);
  const memoryMiB = numberArg(args, '--memory', 256);
  const ports = [18811, 18812];
  // One token file both xvmd read (XVM_RELOCATION_TOKEN_FILE), made before they start.
  const tokenDir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvmbm-token-'));
  const tokenFile = path.join(tokenDir, 'relocation.token');
  fs.writeFileSync(tokenFile, crypto.randomBytes(24).toString('hex'), { mode: 0o600 });
  const daemons: BenchDaemon[] = [];
  let failed = false;
  try {
    for (const [i, p] of ['xvmbm-a-', 'xvmbm-b-'].entries()) daemons.push(startBenchDaemon(p, { XVM_RELOCATION_LISTEN: `127.0.0.1:${ports[i]}`, XVM_RELOCATION_TOKEN_FILE: tokenFile }));
  } catch (e) {
    for (const d of daemons) d.stop();
    fs.rmSync(tokenDir, { recursive: true, force: true });
    throw e;
  }
  const clients = daemons.map((d) => d.client);
  const res: Record<'idle' | 'dirty', { xvm: number[]; xvmDown: number[]; raw: number[]; rawDown: number[] }> = {
    idle: { xvm: [], xvmDown: [], raw: [], rawDown: [] },
    dirty: { xvm: [], xvmDown: [], raw: [], rawDown: [] },
  };
  let raw: RawGuest | undefined;
  let at = 0; // which xvmd holds the guest
  let rawPort = 18830;
  try {
    const image = await ensureDefaultImage({ dir: path.join(daemons[0]!.env.XVM_IMAGE_DIR!, 'default') });
    await clients[0]!.createDomain({ config: { name: 'bmig', memory: memoryMiB } });
    await clients[0]!.waitForDomain('bmig', (x) => x.readyAt !== null, 180_000);
    raw = await startRaw(image, memoryMiB);
    await waitRawBanner(raw, 180_000);
    await sleep(2000);
    for (const kind of ['idle', 'dirty'] as const) {
      if (kind === 'dirty') {
        // The same memory-dirtying loop typed into both guests' consoles.
        const ws = clients[at]!.openConsole('bmig', { history: 0 });
        await new Promise((r) => ws.once('open', r));
        ws.send(Buffer.from(DIRTY + '\r'));
        await sleep(500);
        ws.close();
        fs.writeSync(raw.inFd, DIRTY + '\r');
        await sleep(3000);
      }
      for (let r = 0; r < rounds; r++) {
        const to = 1 - at;
        const t0 = performance.now();
        const m = await clients[at]!.migrateDomain('bmig', `127.0.0.1:${ports[to]}`, { live: true });
        res[kind].xvm.push(performance.now() - t0);
        res[kind].xvmDown.push(m.downtimeMs);
        at = to;
        const rr = await rawMigrate(image, memoryMiB, raw, rawPort++);
        raw = rr.dst;
        res[kind].raw.push(rr.ms);
        res[kind].rawDown.push(rr.downtimeMs);
        console.log(`${kind} round ${r + 1}: xvm ${res[kind].xvm.at(-1)!.toFixed(0)} ms (downtime ${m.downtimeMs} ms, QEMU's ${m.qemuDowntimeMs} ms) / raw ${rr.ms.toFixed(0)} ms (downtime ${rr.downtimeMs} ms)`);
        await sleep(1000);
      }
    }
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    if (raw) await stopRawGuest(raw).catch(() => undefined);
    for (const c of clients) await c.destroy('bmig').catch(() => undefined);
    // A failed run keeps both homes (xvmd and QEMU logs) to look at.
    for (const d of daemons) d.stop(failed);
    if (failed) console.error(`kept for a look: ${daemons.map((d) => d.home).join(' ')}`);
    fs.rmSync(tokenDir, { recursive: true, force: true });
  }
  console.log(`\nlive migration of a ${memoryMiB} MiB guest (${detectAccel().accel}, loopback), median of ${rounds} rounds, load avg ${os.loadavg()[0]!.toFixed(1)}`);
  for (const kind of ['idle', 'dirty'] as const) {
    const x = res[kind];
    console.log(`${kind.padEnd(6)} total  xvm ${median(x.xvm).toFixed(0).padStart(5)} ms   raw QEMU ${median(x.raw).toFixed(0).padStart(5)} ms   ratio ${(median(x.xvm) / median(x.raw)).toFixed(3)} (target ≤ 1.20)`);
    console.log(`${kind.padEnd(6)} down   xvm ${median(x.xvmDown).toFixed(0).padStart(5)} ms   raw QEMU ${median(x.rawDown).toFixed(0).padStart(5)} ms${kind === 'idle' ? '   (target ≤ 300 ms)' : ''}`);
  }
}
