#!/usr/bin/env node
// The block backend program: one process per disk (Cloud Hypervisor style).
//
//   node dist/src/devices/blk/main.js --socket PATH --image FILE
//        [--format raw|qcow2] [--readonly] [--queues N] [--serial S]
//
// Prints one line `XVM_BLK_READY socket=PATH` on stdout once it listens,
// then serves QEMU (and QEMU's reconnects) until SIGTERM / SIGINT.
import fs from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { VhostUserBackend } from '../../vhost/index.js';
import { BlkDevice } from './device.js';
import { openImage } from './open-image.js';
import { delayedImage } from './io/fault.js';
import { serveControl, SwitchableImage, type ControlServer } from './control.js';

function intArg(min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`must be an integer from ${min} to ${max}`);
    return n;
  };
}

async function main(): Promise<void> {
  const cmd = new Command()
    .name('xvm-blk')
    .description('vhost-user block backend (virtio-blk) for one disk image')
    .requiredOption('--socket <path>', 'unix socket QEMU connects to')
    .requiredOption('--image <file>', 'disk image')
    .option('--format <fmt>', 'raw or qcow2 (default: detected)')
    .option('--readonly', 'expose the disk read-only', false)
    .option('--queues <n>', 'number of virtqueues', intArg(1, 64), 1)
    .option('--serial <s>', 'serial number reported to the guest (GET_ID)', '')
    .option('--metrics <file>', 'write counters as JSON to this file every second (when they changed), on SIGUSR1 and at exit')
    .option('--control <path>', 'unix socket of the control channel (snapshot switch in place; migration: dirty tracking, copy, image hand-over; see control.ts)')
    .option('--defer-open', 'open the image read-only until told to open it over the control channel (incoming migration on shared storage)', false)
    .parse(process.argv);
  const o = cmd.opts<{ socket: string; image: string; format?: string; readonly: boolean; queues: number; serial: string; metrics?: string; control?: string; deferOpen: boolean }>();
  if (o.format !== undefined && o.format !== 'raw' && o.format !== 'qcow2') throw new Error(`--format must be raw or qcow2, not ${o.format}`);

  const delay = Number(process.env.XVM_BLK_FAULT_DELAY_MS ?? 0);
  /** The file served now: a snapshot switch moves it to the new top layer. */
  let current = { path: o.image, format: o.format as 'raw' | 'qcow2' | undefined };
  const openFile = async (file: string, format: 'raw' | 'qcow2' | undefined, readOnly: boolean) => {
    const img = await openImage(file, { format, readOnly });
    return delay > 0 ? delayedImage(img, delay) : img;
  };
  const open = (readOnly: boolean) => openFile(current.path, current.format, readOnly);
  const log = (m: string) => process.stderr.write(`xvm-blk[${process.pid}]: ${m}\n`);
  // With a control channel, the image sits behind a SwitchableImage (snapshot switch, dirty tracking, hand-over).
  let image = await open(o.readonly || o.deferOpen);
  current.format = image.format;
  let switchable: SwitchableImage | undefined;
  if (o.control) image = switchable = new SwitchableImage(image, o.readonly, open);
  const device = new BlkDevice({ image, numQueues: o.queues, readOnly: o.readonly, serial: o.serial, log });
  // No CONFIGURE_MEM_SLOTS: QEMU 7.2 reconnecting while the guest is paused
  // sends memory only as a full SET_MEM_TABLE (with mem slots it would send
  // ADD_MEM_REG only for regions it believes the back-end lacks: none).
  const backend = new VhostUserBackend(device, { socketPath: o.socket, memSlots: false, log });
  backend.on('connect', () => log('front-end connected'));
  backend.on('disconnect', () => log('front-end disconnected; waiting for a new connection'));
  backend.listen();
  let control: ControlServer | null = null;
  if (o.control && switchable) {
    const sw = switchable;
    control = await serveControl(
      o.control,
      sw,
      {
        async freeze() {
          await backend.freeze();
          await sw.flush();
        },
        thaw: () => backend.thaw(),
        get frozen() {
          return backend.isFrozen;
        },
        async switchTo(file, format) {
          const was = current;
          const next = await sw.replace(
            () => openFile(file, format, o.readonly),
            () => openFile(was.path, was.format, o.readonly),
          );
          current = { path: file, format: next.format };
          log(`switched to ${file} (${next.format})`);
        },
        current: () => ({ image: current.path, format: current.format ?? image.format }),
      },
      log,
    );
  }
  process.stdout.write(`XVM_BLK_READY socket=${o.socket} size=${image.size} format=${image.format}${device.readOnly ? ' readonly' : ''}\n`);

  let lastMetrics = '';
  const dumpMetrics = (force = true) => {
    if (!o.metrics) return;
    const text = JSON.stringify({ device: device.metrics.toJSON(), queues: backend.vrings.map((v) => v.stats) }, null, 2);
    if (!force && text === lastMetrics) return;
    lastMetrics = text;
    // Written aside and renamed: xvmd never reads half a file.
    fs.writeFileSync(`${o.metrics}.tmp`, text);
    fs.renameSync(`${o.metrics}.tmp`, o.metrics);
  };
  process.on('SIGUSR1', () => dumpMetrics());
  // xvm top / metrics read this file: a second's staleness is fine, no IPC on the data path.
  if (o.metrics) setInterval(() => dumpMetrics(false), 1000).unref();
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    control?.close();
    await backend.close();
    await image.flush().catch(() => undefined);
    await image.close();
    dumpMetrics();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}

main().catch((e: unknown) => {
  process.stderr.write(`xvm-blk: ${(e as Error).message}\n`);
  process.exit(1);
});
