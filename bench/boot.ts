// Boot benchmark: wall time from `xvm create` to the guest's ready banner,
// against raw QEMU started with the same kernel, initramfs and flags, in the
// same run, alternating so both see the same machine load.
//
//   npm run bench -- boot [--rounds N]
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import type { XvmClient } from '../src/api/client.js';
import { ensureDefaultImage, READY_BANNER } from '../src/image/index.js';
import { buildQemuArgs, QEMU_BINARY } from '../src/engine/qemu-args.js';
import { detectAccel } from '../src/engine/accel.js';
import { alternate, numberArg, printComparison, rawRunDir, startBenchDaemon, XVM_BIN } from './common.js';

async function rawBoot(image: { kernel: string; initrd: string; cmdline: string }, name: string): Promise<number> {
  const run = rawRunDir('xvmb-raw-');
  const argv = buildQemuArgs({
    name, uuid: crypto.randomUUID(), memoryMiB: 256, vcpus: 1, accel: detectAccel().accel,
    kernel: image.kernel, initrd: image.initrd, cmdline: `${image.cmdline} xvm.name=${name}`, runDir: run.dir, onReboot: 'restart',
  });
  const t0 = performance.now();
  const qemu = spawn(QEMU_BINARY, argv, { stdio: 'ignore' });
  let seen = '';
  const ms = await new Promise<number>((resolve, reject) => {
    run.console.on('data', (d: Buffer) => {
      seen = (seen + d.toString('latin1')).slice(-4096);
      if (seen.includes(READY_BANNER)) resolve(performance.now() - t0);
    });
    qemu.on('exit', () => reject(new Error('raw QEMU exited before the banner')));
    setTimeout(() => reject(new Error('raw QEMU: no banner in 120 s')), 120_000);
  });
  qemu.kill('SIGKILL');
  await new Promise((r) => qemu.once('exit', r));
  run.remove();
  return ms;
}

async function xvmBoot(env: NodeJS.ProcessEnv, client: XvmClient, name: string): Promise<number> {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [XVM_BIN, 'create', '--name', name, '--memory', '256'], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`xvm create failed: ${r.stderr}`);
  // Pushed by xvmd when it sees the banner (no polling that would load the machine).
  const d = await client.waitForDomain(name, (x) => x.readyAt !== null, 120_000);
  const ms = Date.parse(d.readyAt!) - t0;
  await client.destroy(name);
  await client.undefineDomain(name);
  return ms;
}

export async function benchBoot(args: string[]): Promise<void> {
  const rounds = numberArg(args, '--rounds', 5);
  const daemon = startBenchDaemon();
  try {
    const image = await ensureDefaultImage({ dir: path.join(daemon.env.XVM_IMAGE_DIR!, 'default') });
    const r = await alternate(rounds, (n) => rawBoot(image, n), (n) => xvmBoot(daemon.env, daemon.client, n));
    printComparison(`boot to banner (median of ${rounds}, accel ${detectAccel().accel}):`, r, 1.1);
  } finally {
    daemon.stop();
  }
}
