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
import net from 'node:net';
import crypto from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { XvmClient } from '../src/api/client.js';
import { ensureDefaultImage, READY_BANNER } from '../src/image/index.js';
import { buildQemuArgs, QEMU_BINARY, runtimeFiles } from '../src/engine/qemu-args.js';
import { QmpClient } from '../src/engine/qmp.js';
import { makeFifo } from '../src/daemon/console.js';
import { detectAccel } from '../src/engine/accel.js';
import { SAVE_MAX_BANDWIDTH } from '../src/migrate/save.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const DIRTY = 'while true; do dd if=/dev/zero of=/tmp/dirty bs=1M count=24 2>/dev/null; rm /tmp/dirty; done &';

interface Raw {
  qemu: ChildProcess;
  qmp: QmpClient;
  runDir: string;
  out: net.Socket;
  inFd: number;
  seen: string;
}

async function startRaw(image: { kernel: string; initrd: string; cmdline: string }, memoryMiB: number, incomingPort?: number): Promise<Raw> {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvmb-rawm-'));
  const files = runtimeFiles(runDir);
  makeFifo(files.consoleIn);
  makeFifo(files.consoleOut);
  const outFd = fs.openSync(files.consoleOut, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const inFd = fs.openSync(files.consoleIn, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const out = new net.Socket({ fd: outFd, readable: true, writable: false });
  const argv = buildQemuArgs({
    name: 'rawmig', uuid: crypto.randomUUID(), memoryMiB, vcpus: 1, accel: detectAccel().accel,
    kernel: image.kernel, initrd: image.initrd, cmdline: `${image.cmdline} xvm.name=rawmig`, runDir, onReboot: 'restart',
  });
  if (incomingPort) argv.push('-incoming', `tcp:127.0.0.1:${incomingPort}`);
  const qemu = spawn(QEMU_BINARY, argv, { stdio: 'ignore' });
  const g: Raw = { qemu, qmp: undefined as unknown as QmpClient, runDir, out, inFd, seen: '' };
  out.on('data', (d: Buffer) => (g.seen = (g.seen + d.toString('latin1')).slice(-8192)));
  const end = Date.now() + 20_000;
  for (;;) {
    try {
      g.qmp = await QmpClient.connect(files.qmp, 2000);
      return g;
    } catch {
      if (Date.now() > end || qemu.exitCode !== null) throw new Error('raw QEMU did not open QMP');
      await sleep(5);
    }
  }
}

async function stopRaw(g: Raw): Promise<void> {
  await g.qmp.execute('quit').catch(() => undefined);
  if (g.qemu.exitCode === null) await new Promise((r) => g.qemu.once('exit', r));
  g.out.destroy();
  fs.closeSync(g.inFd);
  fs.rmSync(g.runDir, { recursive: true, force: true });
}

/** Raw QEMU live migration to a fresh raw destination; returns the destination and the figures. */
async function rawMigrate(image: { kernel: string; initrd: string; cmdline: string }, memoryMiB: number, src: Raw, port: number): Promise<{ dst: Raw; ms: number; downtimeMs: number }> {
  const t0 = performance.now();
  const dst = await startRaw(image, memoryMiB, port);
  try {
    return await rawMigrateTo(src, dst, port, t0);
  } catch (e) {
    await stopRaw(dst).catch(() => undefined);
    throw e;
  }
}

async function rawMigrateTo(src: Raw, dst: Raw, port: number, t0: number): Promise<{ dst: Raw; ms: number; downtimeMs: number }> {
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
  await stopRaw(src);
  return { dst, ms, downtimeMs: downtime };
}

function startXvmd(home: string, listen: string): void {
  const env = { ...process.env, XVM_HOME: home, XVM_RELOCATION_LISTEN: listen, XVM_IMAGE_DIR: process.env.XVM_IMAGE_DIR ?? path.join(REPO, '.cache', 'images') };
  const r = spawnSync(process.execPath, [path.join(REPO, 'bin/xvm.js'), 'daemon', 'start'], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
}

export async function benchMigrate(args: string[]): Promise<void> {
  const opt = (k: string, d: number) => {
    const i = args.indexOf(k);
    return i >= 0 ? Number(args[i + 1]) : d;
  };
  const rounds = opt('--rounds', 3);
  const memoryMiB = opt('--memory', 256);
  const imageDir = process.env.XVM_IMAGE_DIR ?? path.join(REPO, '.cache', 'images');
  const image = await ensureDefaultImage({ dir: path.join(imageDir, 'default') });
  const homes = [fs.mkdtempSync(path.join(os.tmpdir(), 'xvmbm-a-')), fs.mkdtempSync(path.join(os.tmpdir(), 'xvmbm-b-'))];
  const ports = [18811, 18812];
  const token = crypto.randomBytes(24).toString('hex');
  for (const h of homes) {
    fs.mkdirSync(path.join(h, 'lib'), { recursive: true });
    fs.writeFileSync(path.join(h, 'lib', 'relocation.token'), token, { mode: 0o600 });
  }
  homes.forEach((h, i) => startXvmd(h, `127.0.0.1:${ports[i]}`));
  const clients = homes.map((h) => new XvmClient({ socketPath: path.join(h, 'run', 'xvmd.sock') }));
  const res: Record<'idle' | 'dirty', { xvm: number[]; xvmDown: number[]; raw: number[]; rawDown: number[] }> = {
    idle: { xvm: [], xvmDown: [], raw: [], rawDown: [] },
    dirty: { xvm: [], xvmDown: [], raw: [], rawDown: [] },
  };
  let raw: Raw | undefined;
  let at = 0; // which xvmd holds the guest
  let rawPort = 18830;
  let failed = false;
  try {
    await clients[0]!.createDomain({ config: { name: 'bmig', memory: memoryMiB } });
    await clients[0]!.waitForDomain('bmig', (x) => x.readyAt !== null, 180_000);
    raw = await startRaw(image, memoryMiB);
    const up = Date.now() + 180_000;
    while (!raw.seen.includes(READY_BANNER)) {
      if (Date.now() > up) throw new Error('raw guest: no ready banner');
      await sleep(50);
    }
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
    if (raw) await stopRaw(raw).catch(() => undefined);
    for (const c of clients) await c.destroy('bmig').catch(() => undefined);
    homes.forEach((h) => spawnSync(process.execPath, [path.join(REPO, 'bin/xvm.js'), 'daemon', 'stop'], { env: { ...process.env, XVM_HOME: h }, encoding: 'utf8' }));
    // A failed run keeps both homes (xvmd and QEMU logs) to look at.
    if (failed) console.error(`kept for a look: ${homes.join(' ')}`);
    else for (const h of homes) fs.rmSync(h, { recursive: true, force: true });
  }
  console.log(`\nlive migration of a ${memoryMiB} MiB guest (${detectAccel().accel}, loopback), median of ${rounds} rounds, load avg ${os.loadavg()[0]!.toFixed(1)}`);
  for (const kind of ['idle', 'dirty'] as const) {
    const x = res[kind];
    console.log(`${kind.padEnd(6)} total  xvm ${median(x.xvm).toFixed(0).padStart(5)} ms   raw QEMU ${median(x.raw).toFixed(0).padStart(5)} ms   ratio ${(median(x.xvm) / median(x.raw)).toFixed(3)} (target ≤ 1.20)`);
    console.log(`${kind.padEnd(6)} down   xvm ${median(x.xvmDown).toFixed(0).padStart(5)} ms   raw QEMU ${median(x.rawDown).toFixed(0).padStart(5)} ms${kind === 'idle' ? '   (target ≤ 300 ms)' : ''}`);
  }
}
