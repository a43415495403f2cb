// Save / restore benchmark: `xvm save` and `xvm restore` of a booted guest
// (through the API, as the CLI and SDK call them), against raw QEMU doing
// its own save (`stop` + `migrate exec:cat > FILE` + fsync + quit) and
// restore (`-incoming exec:cat FILE` until running) of the same guest
// started raw with the same flags, in the same run, alternating rounds.
//
//   npm run bench -- save [--rounds N] [--memory MiB] [--phases] [--raw-via-sink] [--raw-fd]
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
import { StreamSink } from '../src/migrate/stream.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

interface RawGuest {
  qemu: ChildProcess;
  qmp: QmpClient;
  runDir: string;
  console: net.Socket;
  seen: string;
}

async function startRaw(image: { kernel: string; initrd: string; cmdline: string }, memoryMiB: number, incoming?: string): Promise<RawGuest> {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvmb-raw-'));
  const files = runtimeFiles(runDir);
  makeFifo(files.consoleIn);
  makeFifo(files.consoleOut);
  const fd = fs.openSync(files.consoleOut, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const out = new net.Socket({ fd, readable: true, writable: false });
  const argv = buildQemuArgs({
    name: 'rawsave', uuid: crypto.randomUUID(), memoryMiB, vcpus: 1, accel: detectAccel().accel,
    kernel: image.kernel, initrd: image.initrd, cmdline: `${image.cmdline} xvm.name=rawsave`, runDir, onReboot: 'restart',
  });
  if (incoming) argv.push('-incoming', `exec:cat ${incoming}`);
  const qemu = spawn(QEMU_BINARY, argv, { stdio: 'ignore' });
  const g: RawGuest = { qemu, qmp: undefined as unknown as QmpClient, runDir, console: out, seen: '' };
  out.on('data', (d: Buffer) => (g.seen = (g.seen + d.toString('latin1')).slice(-8192)));
  const end = Date.now() + 20_000;
  for (;;) {
    try {
      g.qmp = await QmpClient.connect(files.qmp, 2000);
      break;
    } catch {
      if (Date.now() > end || qemu.exitCode !== null) throw new Error('raw QEMU did not open QMP');
      await sleep(5);
    }
  }
  return g;
}

async function stopRaw(g: RawGuest): Promise<void> {
  await g.qmp.execute('quit').catch(() => undefined);
  if (g.qemu.exitCode === null) await new Promise((r) => g.qemu.once('exit', r));
  g.console.destroy();
  fs.rmSync(g.runDir, { recursive: true, force: true });
}

/** Raw QEMU's own save: stop, migrate to a file through exec:cat, fsync, quit. */
async function rawSave(g: RawGuest, file: string, via: 'cat' | 'sink' | 'fd' = 'cat'): Promise<number> {
  fs.rmSync(file, { force: true });
  const t0 = performance.now();
  let sink: StreamSink | undefined;
  if (via === 'sink') sink = await StreamSink.listen(path.join(g.runDir, 'sink.sock'), fs.openSync(file, 'w'), 0, crypto.createHash('sha256'));
  if (via === 'fd') {
    // QEMU writes the file itself through a passed fd, as xvm save does (without header and checksum).
    const fd = fs.openSync(file, 'w');
    await g.qmp.sendFd('rawfd', fd);
    fs.closeSync(fd);
  }
  await g.qmp.execute('stop');
  await g.qmp.execute('migrate-set-parameters', { 'max-bandwidth': SAVE_MAX_BANDWIDTH });
  await g.qmp.execute('migrate', { uri: sink ? `unix:${sink.socketPath}` : via === 'fd' ? 'fd:rawfd' : `exec:cat > ${file}` });
  for (;;) {
    const q = await g.qmp.execute<{ status: string }>('query-migrate');
    if (q.status === 'completed') break;
    if (q.status === 'failed') throw new Error('raw migrate failed');
    await sleep(10); // a prompt client: polling at 100 ms would add ~50 ms to raw QEMU's time
  }
  if (sink) {
    await sink.finished();
    sink.close();
  }
  const fd = fs.openSync(file, 'r+');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  await stopRaw(g);
  return performance.now() - t0;
}

/** Raw QEMU's own restore: start with -incoming exec:cat FILE, until the guest runs. */
async function rawRestore(image: { kernel: string; initrd: string; cmdline: string }, memoryMiB: number, file: string): Promise<{ ms: number; guest: RawGuest }> {
  const t0 = performance.now();
  const g = await startRaw(image, memoryMiB, file);
  try {
    await waitRawRunning(g);
  } catch (e) {
    await stopRaw(g);
    throw e;
  }
  return { ms: performance.now() - t0, guest: g };
}

async function waitRawRunning(g: RawGuest): Promise<void> {
  const end = Date.now() + 120_000;
  for (;;) {
    if (Date.now() > end) throw new Error('raw restore: the guest did not run within 120 s');
    const st = await g.qmp.execute<{ status: string }>('query-status');
    if (st.status === 'running') break;
    // The stream carries the source's run state (stopped before the save): continue it, as xvm does.
    if (st.status === 'paused') {
      await g.qmp.execute('cont');
      break;
    }
    if (st.status !== 'inmigrate') throw new Error(`raw restore: QEMU is ${st.status}`);
    await sleep(10);
  }
}

export async function benchSave(args: string[]): Promise<void> {
  const opt = (k: string, d: number) => {
    const i = args.indexOf(k);
    return i >= 0 ? Number(args[i + 1]) : d;
  };
  const rounds = opt('--rounds', 5);
  const memoryMiB = opt('--memory', 256);
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'xvmb-'));
  const env = { ...process.env, XVM_HOME: home, XVM_IMAGE_DIR: process.env.XVM_IMAGE_DIR ?? path.join(REPO, '.cache', 'images') };
  const image = await ensureDefaultImage({ dir: path.join(env.XVM_IMAGE_DIR!, 'default') });
  const client = new XvmClient({ socketPath: path.join(home, 'run', 'xvmd.sock') });
  const start = spawnSync(process.execPath, [path.join(REPO, 'bin/xvm.js'), 'daemon', 'start'], { env, encoding: 'utf8' });
  if (start.status !== 0) throw new Error(start.stderr);
  const xvmFile = path.join(home, 'xvm.xvmsave');
  const rawFile = path.join(home, 'raw.qemu');
  const res = { xvmSave: [] as number[], xvmRestore: [] as number[], rawSave: [] as number[], rawRestore: [] as number[], rawSink: [] as number[], rawFd: [] as number[], xvmBytes: 0, rawBytes: 0 };
  let raw: RawGuest | undefined;
  try {
    await client.createDomain({ config: { name: 'bsave', memory: memoryMiB } });
    await client.waitForDomain('bsave', (x) => x.readyAt !== null, 180_000);
    raw = await startRaw(image, memoryMiB);
    const rawUp = Date.now() + 180_000;
    while (!raw.seen.includes(READY_BANNER)) {
      if (Date.now() > rawUp) throw new Error('raw guest: no ready banner');
      await sleep(50);
    }
    await sleep(2000); // both guests settle after boot
    for (let r = 0; r < rounds; r++) {
      let t0 = performance.now();
      const s = await client.saveDomain('bsave', xvmFile);
      res.xvmSave.push(performance.now() - t0);
      res.xvmBytes = s.fileBytes;
      t0 = performance.now();
      const rs = await client.restoreDomain(xvmFile);
      res.xvmRestore.push(performance.now() - t0);
      if (args.includes('--phases')) console.log('  xvm save', JSON.stringify(s.phases), 'restore', JSON.stringify(rs.phases));

      res.rawSave.push(await rawSave(raw, rawFile));
      res.rawBytes = fs.statSync(rawFile).size;
      const rr = await rawRestore(image, memoryMiB, rawFile);
      res.rawRestore.push(rr.ms);
      raw = rr.guest;
      if (args.includes('--raw-via-sink')) {
        // The same raw QEMU, its stream through xvm's socket sink instead of cat: the cost of the pipe alone.
        res.rawSink.push(await rawSave(raw, rawFile, 'sink'));
        raw = (await rawRestore(image, memoryMiB, rawFile)).guest;
        console.log(`  raw QEMU through xvm's sink: ${res.rawSink.at(-1)!.toFixed(0)} ms`);
      }
      if (args.includes('--raw-fd')) {
        // The same raw QEMU writing the file itself through a passed fd: QEMU's fd: path without xvm around it.
        res.rawFd.push(await rawSave(raw, rawFile, 'fd'));
        raw = (await rawRestore(image, memoryMiB, rawFile)).guest;
        console.log(`  raw QEMU through fd: ${res.rawFd.at(-1)!.toFixed(0)} ms`);
      }
      console.log(`round ${r + 1}: save xvm ${res.xvmSave.at(-1)!.toFixed(0)} ms / raw ${res.rawSave.at(-1)!.toFixed(0)} ms; restore xvm ${res.xvmRestore.at(-1)!.toFixed(0)} ms / raw ${res.rawRestore.at(-1)!.toFixed(0)} ms`);
      await sleep(1000);
    }
  } finally {
    if (raw) await stopRaw(raw).catch(() => undefined);
    await client.destroy('bsave').catch(() => undefined);
    spawnSync(process.execPath, [path.join(REPO, 'bin/xvm.js'), 'daemon', 'stop'], { env, encoding: 'utf8' });
    fs.rmSync(home, { recursive: true, force: true });
  }
  const line = (what: string, x: number[], b: number[]) =>
    console.log(`${what.padEnd(8)} xvm ${median(x).toFixed(0).padStart(5)} ms   raw QEMU ${median(b).toFixed(0).padStart(5)} ms   ratio ${(median(x) / median(b)).toFixed(3)}  (target ≤ 1.10)`);
  console.log(`\nsave/restore of a ${memoryMiB} MiB guest (${detectAccel().accel}), median of ${rounds} rounds, load avg ${os.loadavg()[0]!.toFixed(1)}`);
  console.log(`file: xvm ${(res.xvmBytes / 1048576).toFixed(1)} MiB (header + stream + checksum), raw ${(res.rawBytes / 1048576).toFixed(1)} MiB`);
  line('save', res.xvmSave, res.rawSave);
  line('restore', res.xvmRestore, res.rawRestore);
  if (res.rawSink.length) line('raw-sink', res.rawSink, res.rawSave);
  if (res.rawFd.length) line('raw-fd', res.rawFd, res.rawSave);
}
