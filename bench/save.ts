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
import crypto from 'node:crypto';
import { ensureDefaultImage } from '../src/image/index.js';
import { detectAccel } from '../src/engine/accel.js';
import { SAVE_MAX_BANDWIDTH } from '../src/migrate/save.js';
import { StreamSink } from '../src/migrate/stream.js';
import { median, numberArg, sleep, startBenchDaemon, startRawGuest, stopRawGuest, waitRawBanner, type RawGuest } from './common.js';

const startRaw = (image: { kernel: string; initrd: string; cmdline: string }, memoryMiB: number, incoming?: string) =>
  startRawGuest({ prefix: 'xvmb-raw-', name: 'rawsave', image, memoryMiB, extra: incoming ? ['-incoming', `exec:cat ${incoming}`] : [] });

/** Raw QEMU's own save: stop, migrate to a file through exec:cat, fsync, quit. */
async function rawSave(g: RawGuest, file: string, via: 'cat' | 'sink' | 'fd' = 'cat'): Promise<number> {
  fs.rmSync(file, { force: true });
  const t0 = performance.now();
  let sink: StreamSink | undefined;
  if (via === 'sink') sink = await StreamSink.listen(path.join(g.run.dir, 'sink.sock'), fs.openSync(file, 'w'), 0, crypto.createHash('sha256'));
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
  await stopRawGuest(g);
  return performance.now() - t0;
}

/** Raw QEMU's own restore: start with -incoming exec:cat FILE, until the guest runs. */
async function rawRestore(image: { kernel: string; initrd: string; cmdline: string }, memoryMiB: number, file: string): Promise<{ ms: number; guest: RawGuest }> {
  const t0 = performance.now();
  const g = await startRaw(image, memoryMiB, file);
  try {
    await waitRawRunning(g);
  } catch (e) {
    await stopRawGuest(g);
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
  const rounds = numberArg(args, '--rounds', 5);
  const memoryMiB = numberArg(args, '--memory', 256);
  const daemon = startBenchDaemon('xvmb-');
  const client = daemon.client;
  const xvmFile = path.join(daemon.home, 'xvm.xvmsave');
  const rawFile = path.join(daemon.home, 'raw.qemu');
  const res = { xvmSave: [] as number[], xvmRestore: [] as number[], rawSave: [] as number[], rawRestore: [] as number[], rawSink: [] as number[], rawFd: [] as number[], xvmBytes: 0, rawBytes: 0 };
  let raw: RawGuest | undefined;
  try {
    const image = await ensureDefaultImage({ dir: path.join(daemon.env.XVM_IMAGE_DIR!, 'default') });
    await client.createDomain({ config: { name: 'bsave', memory: memoryMiB } });
    await client.waitForDomain('bsave', (x) => x.readyAt !== null, 180_000);
    raw = await startRaw(image, memoryMiB);
    await waitRawBanner(raw, 180_000);
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
    if (raw) await stopRawGuest(raw).catch(() => undefined);
    await client.destroy('bsave').catch(() => undefined);
    daemon.stop();
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
