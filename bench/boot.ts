// Boot benchmark: wall time from `xvm create` to the guest's ready banner,
// against raw QEMU started with the same kernel, initramfs and flags, in the
// same run, alternating so both see the same machine load.
//
//   npm run bench -- boot [--rounds N]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { XvmClient } from '../src/api/client.js';
import { ensureDefaultImage, READY_BANNER } from '../src/image/index.js';
import { buildQemuArgs, QEMU_BINARY, runtimeFiles } from '../src/engine/qemu-args.js';
import { makeFifo } from '../src/daemon/console.js';
import { detectAccel } from '../src/engine/accel.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function rawBoot(image: { kernel: string; initrd: string; cmdline: string }, name: string): Promise<number> {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvmb-raw-'));
  const files = runtimeFiles(runDir);
  makeFifo(files.consoleIn);
  makeFifo(files.consoleOut);
  const fd = fs.openSync(files.consoleOut, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const out = new net.Socket({ fd, readable: true, writable: false });
  const argv = buildQemuArgs({
    name, uuid: crypto.randomUUID(), memoryMiB: 256, vcpus: 1, accel: detectAccel().accel,
    kernel: image.kernel, initrd: image.initrd, cmdline: `${image.cmdline} xvm.name=${name}`, runDir, onReboot: 'restart',
  });
  const t0 = performance.now();
  const qemu = spawn(QEMU_BINARY, argv, { stdio: 'ignore' });
  let seen = '';
  const ms = await new Promise<number>((resolve, reject) => {
    out.on('data', (d: Buffer) => {
      seen = (seen + d.toString('latin1')).slice(-4096);
      if (seen.includes(READY_BANNER)) resolve(performance.now() - t0);
    });
    qemu.on('exit', () => reject(new Error('raw QEMU exited before the banner')));
    setTimeout(() => reject(new Error('raw QEMU: no banner in 120 s')), 120_000);
  });
  qemu.kill('SIGKILL');
  out.destroy();
  await new Promise((r) => qemu.once('exit', r));
  fs.rmSync(runDir, { recursive: true, force: true });
  return ms;
}

async function xvmBoot(env: NodeJS.ProcessEnv, client: XvmClient, name: string): Promise<number> {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [path.join(REPO, 'bin/xvm.js'), 'create', '--name', name, '--memory', '256'], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`xvm create failed: ${r.stderr}`);
  // Pushed by xvmd when it sees the banner (no polling that would load the machine).
  const d = await client.waitForDomain(name, (x) => x.readyAt !== null, 120_000);
  const ms = Date.parse(d.readyAt!) - t0;
  await client.destroy(name);
  await client.undefineDomain(name);
  return ms;
}

export async function benchBoot(args: string[]): Promise<void> {
  const i = args.indexOf('--rounds');
  const rounds = i >= 0 ? Number(args[i + 1]) : 5;
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'xvmb-'));
  const env = { ...process.env, XVM_HOME: home, XVM_IMAGE_DIR: process.env.XVM_IMAGE_DIR ?? path.join(REPO, '.cache', 'images') };
  const image = await ensureDefaultImage({ dir: path.join(env.XVM_IMAGE_DIR!, 'default') });
  const client = new XvmClient({ socketPath: path.join(home, 'run', 'xvmd.sock') });
  const start = spawnSync(process.execPath, [path.join(REPO, 'bin/xvm.js'), 'daemon', 'start'], { env, encoding: 'utf8' });
  if (start.status !== 0) throw new Error(start.stderr);
  const xvm: number[] = [];
  const raw: number[] = [];
  try {
    // One warm-up of each (page cache, QEMU's first start), not counted.
    await rawBoot(image, 'warm-raw');
    await xvmBoot(env, client, 'warm-xvm');
    for (let r = 0; r < rounds; r++) {
      raw.push(await rawBoot(image, `raw${r}`));
      xvm.push(await xvmBoot(env, client, `bench${r}`));
      process.stderr.write(`round ${r + 1}/${rounds}: raw ${raw[r]!.toFixed(0)} ms, xvm ${xvm[r]!.toFixed(0)} ms\n`);
    }
  } finally {
    spawnSync(process.execPath, [path.join(REPO, 'bin/xvm.js'), 'daemon', 'stop'], { env });
    fs.rmSync(home, { recursive: true, force: true });
  }
  const mx = median(xvm);
  const mr = median(raw);
  console.log(`boot to banner (median of ${rounds}, accel ${detectAccel().accel}):`);
  console.log(`  raw QEMU, same flags : ${mr.toFixed(0)} ms   [${raw.map((x) => x.toFixed(0)).join(', ')}]`);
  console.log(`  xvm create           : ${mx.toFixed(0)} ms   [${xvm.map((x) => x.toFixed(0)).join(', ')}]`);
  console.log(`  ratio xvm/raw        : ${(mx / mr).toFixed(3)}  (target <= 1.10)`);
}
