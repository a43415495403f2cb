// What every benchmark shares: the repository root, a median, a pause, the
// run folder of a raw QEMU baseline (console FIFOs held open like xvmd
// holds them), and a private xvmd for the xvm side of the comparison.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { XvmClient } from '../src/api/client.js';
import { runtimeFiles } from '../src/engine/qemu-args.js';
import { makeFifo } from '../src/daemon/console.js';

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

export interface BenchDaemon {
  home: string;
  env: NodeJS.ProcessEnv;
  client: XvmClient;
  /** Stop xvmd and remove its state folder. */
  stop(): void;
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
    stop() {
      spawnSync(process.execPath, [XVM_BIN, 'daemon', 'stop'], { env });
      fs.rmSync(home, { recursive: true, force: true });
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
