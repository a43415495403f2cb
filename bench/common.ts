// What every benchmark shares: the repository root, a median, a pause, the
// run folder of a raw QEMU baseline (console FIFOs held open like xvmd
// holds them), a raw QEMU guest driven over QMP (save, migrate), and a
// private xvmd for the xvm side of the comparison.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import crypto from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { XvmClient } from '../src/api/client.js';
import { buildQemuArgs, QEMU_BINARY, runtimeFiles } from '../src/engine/qemu-args.js';
import { QmpClient } from '../src/engine/qmp.js';
import { detectAccel } from '../src/engine/accel.js';
import { makeFifo } from '../src/daemon/console.js';
import { READY_BANNER } from '../src/image/index.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const XVM_BIN = path.join(REPO, 'bin/xvm.js');

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** `--name N` from a benchmark's arguments, or the default. */
export function numberArg(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const n = Number(args[i + 1]);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} needs a positive number`);
  return n;
}

export interface RawRunDir {
  dir: string;
  files: ReturnType<typeof runtimeFiles>;
  /** The guest's serial output (console.out held read-write, like xvmd does). */
  console: net.Socket;
  /** Remove the folder (after QEMU is gone). */
  remove(): void;
}

/** A run folder for a raw QEMU started with buildQemuArgs: console FIFOs made and console.out open. */
export function rawRunDir(prefix: string): RawRunDir {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const files = runtimeFiles(dir);
  makeFifo(files.consoleIn);
  makeFifo(files.consoleOut);
  const fd = fs.openSync(files.consoleOut, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const console = new net.Socket({ fd, readable: true, writable: false });
  return {
    dir, files, console,
    remove() {
      console.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A raw QEMU guest of the default image, its QMP connected (the save and migrate baselines). */
export interface RawGuest {
  qemu: ChildProcess;
  qmp: QmpClient;
  run: RawRunDir;
  /** console.in, held open read-write: what is written to it is typed into the guest. */
  inFd: number;
  /** The last 8 KiB of its serial output. */
  seen: string;
}

/** Start raw QEMU with buildQemuArgs' flags (+ `extra`, e.g. `-incoming …`) and connect to its QMP. */
export async function startRawGuest(o: { prefix: string; name: string; image: { kernel: string; initrd: string; cmdline: string }; memoryMiB: number; extra?: string[] }): Promise<RawGuest> {
  const run = rawRunDir(o.prefix);
  const inFd = fs.openSync(run.files.consoleIn, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const argv = buildQemuArgs({
    name: o.name, uuid: crypto.randomUUID(), memoryMiB: o.memoryMiB, vcpus: 1, accel: detectAccel().accel,
    kernel: o.image.kernel, initrd: o.image.initrd, cmdline: `${o.image.cmdline} xvm.name=${o.name}`, runDir: run.dir, onReboot: 'restart',
  });
  argv.push(...(o.extra ?? []));
  const qemu = spawn(QEMU_BINARY, argv, { stdio: 'ignore' });
  const g: RawGuest = { qemu, qmp: undefined as unknown as QmpClient, run, inFd, seen: '' };
  run.console.on('data', (d: Buffer) => (g.seen = (g.seen + d.toString('latin1')).slice(-8192)));
  const end = Date.now() + 20_000;
  for (;;) {
    try {
      g.qmp = await QmpClient.connect(run.files.qmp, 2000);
      return g;
    } catch {
      if (Date.now() > end || qemu.exitCode !== null) throw new Error('raw QEMU did not open QMP');
      await sleep(5);
    }
  }
}

/** `quit` over QMP, wait for QEMU to exit, remove its run folder. */
export async function stopRawGuest(g: RawGuest): Promise<void> {
  await g.qmp.execute('quit').catch(() => undefined);
  if (g.qemu.exitCode === null) await new Promise((r) => g.qemu.once('exit', r));
  fs.closeSync(g.inFd);
  g.run.remove();
}

/** Wait for the guest's ready banner on its serial console. */
export async function waitRawBanner(g: RawGuest, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!g.seen.includes(READY_BANNER)) {
    if (Date.now() > end) throw new Error('raw guest: no ready banner');
    await sleep(50);
  }
}

export interface BenchDaemon {
  home: string;
  env: NodeJS.ProcessEnv;
  client: XvmClient;
  /** Stop xvmd and remove its state folder (`keepHome`: leave it, e.g. a failed run's logs to look at). */
  stop(keepHome?: boolean): void;
}

/** A private xvmd (own XVM_HOME, the shared image cache) for the xvm side of a benchmark. */
export function startBenchDaemon(prefix = 'xvmb-', extraEnv: NodeJS.ProcessEnv = {}): BenchDaemon {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const env = { ...process.env, XVM_HOME: home, XVM_IMAGE_DIR: process.env.XVM_IMAGE_DIR ?? path.join(REPO, '.cache', 'images'), ...extraEnv };
  const start = spawnSync(process.execPath, [XVM_BIN, 'daemon', 'start'], { env, encoding: 'utf8' });
  if (start.status !== 0) throw new Error(`xvmd did not start: ${start.stderr}`);
  return {
    home, env,
    client: new XvmClient({ socketPath: path.join(home, 'run', 'xvmd.sock') }),
    stop(keepHome = false) {
      spawnSync(process.execPath, [XVM_BIN, 'daemon', 'stop'], { env });
      if (!keepHome) fs.rmSync(home, { recursive: true, force: true });
    },
  };
}

/**
 * One warm-up of each side (page cache, QEMU's first start; not counted),
 * then `rounds` rounds alternating raw and xvm so both see the same load.
 */
export async function alternate(
  rounds: number,
  raw: (name: string) => Promise<number>,
  xvm: (name: string) => Promise<number>,
): Promise<{ raw: number[]; xvm: number[] }> {
  const out = { raw: [] as number[], xvm: [] as number[] };
  await raw('warm-raw');
  await xvm('warm-xvm');
  for (let r = 0; r < rounds; r++) {
    out.raw.push(await raw(`raw${r}`));
    out.xvm.push(await xvm(`bench${r}`));
    process.stderr.write(`round ${r + 1}/${rounds}: raw ${out.raw[r]!.toFixed(0)} ms, xvm ${out.xvm[r]!.toFixed(0)} ms\n`);
  }
  return out;
}

/** The three lines every raw-vs-xvm timing benchmark ends with. */
export function printComparison(title: string, r: { raw: number[]; xvm: number[] }, target?: number): void {
  const mr = median(r.raw);
  const mx = median(r.xvm);
  console.log(title);
  console.log(`  raw QEMU, same flags : ${mr.toFixed(0)} ms   [${r.raw.map((x) => x.toFixed(0)).join(', ')}]`);
  console.log(`  xvm create           : ${mx.toFixed(0)} ms   [${r.xvm.map((x) => x.toFixed(0)).join(', ')}]`);
  console.log(`  ratio xvm/raw        : ${(mx / mr).toFixed(3)}${target !== undefined ? `  (target <= ${target.toFixed(2)})` : ''}`);
}
