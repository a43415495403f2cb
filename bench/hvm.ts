// HVM benchmark: wall time from `xvm create` of an HVM domain booting
// Debian's grub-rescue ISO to the first non-blank frame (GRUB's menu),
// against raw QEMU started with the same flags (qemu-args.ts + hvm-args.ts)
// in the same run, alternating so both see the same machine load. Both
// sides look at the screen the same way: a QMP screendump every 100 ms
// (for xvm through its API, GET /v1/domains/NAME/screenshot).
//
//   npm run bench -- hvm [--rounds N]
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import type { XvmClient } from '../src/api/client.js';
import { buildQemuArgs, QEMU_BINARY } from '../src/engine/qemu-args.js';
import { buildHvmArgs } from '../src/engine/hvm-args.js';
import { QmpClient } from '../src/engine/qmp.js';
import { detectAccel } from '../src/engine/accel.js';
import { decodePng, nonBackgroundShare } from '../test/helpers/png.js';
import { alternate, numberArg, printComparison, rawRunDir, sleep, startBenchDaemon, XVM_BIN } from './common.js';

const ISO = '/usr/lib/grub-rescue/grub-rescue-cdrom.iso';
const POLL_MS = 100;
/** GRUB's menu lights about 8 % of the pixels; SeaBIOS's lines under 1 %. */
const NON_BLANK = 0.03;

function lit(png: Buffer): boolean {
  try {
    return nonBackgroundShare(decodePng(png)) > NON_BLANK;
  } catch {
    return false;
  }
}

async function rawBoot(name: string): Promise<number> {
  const run = rawRunDir('xvmb-hraw-');
  const { files, dir: runDir } = run;
  const argv = [
    ...buildQemuArgs({ name, uuid: crypto.randomUUID(), memoryMiB: 128, vcpus: 1, accel: detectAccel().accel, kernel: '', cmdline: '', runDir, onReboot: 'restart' }),
    ...buildHvmArgs({ firmware: 'bios', disks: [{ vdev: 'hdc', file: ISO, format: 'raw', readOnly: true, devtype: 'cdrom' }], boot: 'd', vncSocket: path.join(runDir, 'vnc.sock') }),
  ];
  const t0 = performance.now();
  const qemu = spawn(QEMU_BINARY, argv, { stdio: 'ignore' });
  let qmp: QmpClient | undefined;
  try {
    const deadline = Date.now() + 120_000;
    while (!qmp) {
      if (Date.now() > deadline) throw new Error('raw QEMU: no monitor');
      qmp = await QmpClient.connect(files.qmp, 1000).catch(() => undefined);
      if (!qmp) await sleep(10);
    }
    const shot = path.join(runDir, 'shot.png');
    for (;;) {
      if (Date.now() > deadline) throw new Error('raw QEMU: no GRUB menu in 120 s');
      await qmp.execute('screendump', { filename: shot, format: 'png' });
      if (lit(fs.readFileSync(shot))) return performance.now() - t0;
      await sleep(POLL_MS);
    }
  } finally {
    qmp?.close();
    qemu.kill('SIGKILL');
    await new Promise((r) => (qemu.exitCode !== null ? r(null) : qemu.once('exit', r)));
    run.remove();
  }
}

async function xvmBoot(env: NodeJS.ProcessEnv, client: XvmClient, name: string, cfgDir: string): Promise<number> {
  const cfg = path.join(cfgDir, `${name}.cfg`);
  fs.writeFileSync(cfg, `name = "${name}"\ntype = "hvm"\nmemory = 128\ncdrom = "${ISO}"\nboot = "d"\n`);
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [XVM_BIN, 'create', cfg], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`xvm create failed: ${r.stderr}`);
  try {
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (Date.now() > deadline) throw new Error('xvm: no GRUB menu in 120 s');
      if (lit(await client.screenshot(name))) return performance.now() - t0;
      await sleep(POLL_MS);
    }
  } finally {
    await client.destroy(name);
    await client.undefineDomain(name);
  }
}

export async function benchHvm(args: string[]): Promise<void> {
  if (!fs.existsSync(ISO)) throw new Error(`${ISO} is missing (Debian package grub-rescue-pc; scripts/install-deps.sh --test)`);
  const rounds = numberArg(args, '--rounds', 5);
  const daemon = startBenchDaemon();
  try {
    const r = await alternate(rounds, rawBoot, (n) => xvmBoot(daemon.env, daemon.client, n, daemon.home));
    printComparison(`HVM ISO boot to the first non-blank frame (median of ${rounds}, accel ${detectAccel().accel}, screendump every ${POLL_MS} ms):`, r);
  } finally {
    daemon.stop();
  }
}
