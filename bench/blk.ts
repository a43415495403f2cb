// Block benchmark: the same in-guest workload against
//   (a) our vhost-user block backend (node dist/src/devices/blk/main.js)
//   (b) qemu-storage-daemon's vhost-user-blk export
//   (c) QEMU's built-in virtio-blk
// on the same raw (and qcow2) image, in the same run. Prints MB/s per line
// and our ratio to (b) and (c).
//
//   node dist/bench/blk.js [--size-mib 128] [--formats raw,qcow2] [--rounds 3] [--json FILE]
//
// The three targets run in turn, in a rotated order, for --rounds rounds
// (a fresh guest each time); each line reports the median over rounds, so
// load from other processes on a small machine hits all three alike.
//
// Workloads (busybox dd in the guest, O_DIRECT so the guest page cache is
// out of the way; the host page cache is in play for all three alike):
//   seq-write / seq-read   1 MiB blocks
//   4k-write-qd8 / 4k-read-qd8   8 concurrent streams of 4 KiB requests
// (busybox has no random-offset tool: the 4 KiB lines are 8 interleaved
// sequential streams at different offsets, i.e. queue depth 8, not random.)
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Backend, Guest, guestImage, type GuestImage } from '../test/blk/guest.js';

type Target = 'xvm' | 'qsd' | 'qemu';
const TARGETS: Target[] = ['xvm', 'qsd', 'qemu'];
const MiB = 1 << 20;

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : def;
}

const SIZE_MIB = Number(arg('--size-mib', '128'));
const FORMATS = arg('--formats', 'raw,qcow2').split(',') as ('raw' | 'qcow2')[];
const JSON_OUT = arg('--json', '');
const ROUNDS = Number(arg('--rounds', '3'));
const QD = 8;

interface Line {
  format: string;
  workload: string;
  mbps: Record<Target, number>;
}

async function timed(g: Guest, cmd: string): Promise<number> {
  const r = await g.run(`a=$(cut -d' ' -f1 /proc/uptime); ${cmd}; b=$(cut -d' ' -f1 /proc/uptime); echo "T=$a:$b"`, 600_000);
  const m = r.out.match(/T=([\d.]+):([\d.]+)/);
  if (!m) throw new Error(`no timing in guest output: ${r.out}`);
  return Math.max(0.01, Number(m[2]) - Number(m[1]));
}

async function workloads(g: Guest): Promise<Record<string, number>> {
  const n = SIZE_MIB;
  const out: Record<string, number> = {};
  out['seq-write 1M'] = n / (await timed(g, `dd if=/dev/zero of=/dev/vda bs=1M count=${n} oflag=direct 2>/dev/null`));
  out['seq-read 1M'] = n / (await timed(g, `dd if=/dev/vda of=/dev/null bs=1M count=${n} iflag=direct 2>/dev/null`));
  const per = Math.floor((n * 256) / QD / 4); // a quarter of the data set in 4 KiB ops
  const streams = (w: boolean) =>
    Array.from({ length: QD }, (_, i) =>
      w
        ? `dd if=/dev/zero of=/dev/vda bs=4k count=${per} seek=${i * per} oflag=direct 2>/dev/null &`
        : `dd if=/dev/vda of=/dev/null bs=4k count=${per} skip=${i * per} iflag=direct 2>/dev/null &`,
    ).join(' ') + ' wait';
  const mib4k = (QD * per * 4096) / MiB;
  out[`4k-write qd${QD}`] = mib4k / (await timed(g, streams(true)));
  out[`4k-read qd${QD}`] = mib4k / (await timed(g, streams(false)));
  return out;
}

function median(v: number[]): number {
  const a = [...v].sort((x, y) => x - y);
  return a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
}

async function waitForSocket(p: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (fs.existsSync(p)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${p} never appeared`);
}

async function runTarget(t: Target, img: GuestImage, file: string, format: string, dir: string): Promise<Record<string, number>> {
  const sock = path.join(dir, `${t}.sock`);
  let backend: Backend | null = null;
  let qsd: ReturnType<typeof spawn> | null = null;
  let disk: string[];
  if (t === 'xvm') {
    backend = await Backend.start(['--socket', sock, '--image', file, '--format', format, '--queues', '1']);
    disk = ['-chardev', `socket,id=vu,path=${sock}`, '-device', 'vhost-user-blk-pci,chardev=vu,num-queues=1'];
  } else if (t === 'qsd') {
    const blockdev = format === 'raw'
      ? ['--blockdev', `driver=file,filename=${file},node-name=f`]
      : ['--blockdev', `driver=file,filename=${file},node-name=p`, '--blockdev', 'driver=qcow2,file=p,node-name=f'];
    qsd = spawn('qemu-storage-daemon', [...blockdev, '--export', `type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=${sock},writable=on,num-queues=1`], { stdio: 'ignore' });
    await waitForSocket(sock);
    disk = ['-chardev', `socket,id=vu,path=${sock}`, '-device', 'vhost-user-blk-pci,chardev=vu,num-queues=1'];
  } else {
    disk = ['-drive', `file=${file},format=${format},if=none,id=d0`, '-device', 'virtio-blk-pci,drive=d0,num-queues=1'];
  }
  let g: Guest | null = null;
  try {
    g = await Guest.boot(img, disk);
    return await workloads(g);
  } finally {
    await g?.poweroff();
    await backend?.kill('SIGTERM');
    if (qsd) {
      qsd.kill('SIGTERM');
      await new Promise((r) => qsd!.once('exit', r));
    }
  }
}

async function main(): Promise<void> {
  const img = await guestImage();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-bench-blk-'));
  const lines: Line[] = [];
  try {
    for (const format of FORMATS) {
      const file = path.join(dir, `disk.${format}`);
      execFileSync('qemu-img', ['create', '-q', '-f', format, file, `${SIZE_MIB * 2}M`]);
      const samples: Record<Target, Record<string, number[]>> = { xvm: {}, qsd: {}, qemu: {} };
      for (let round = 0; round < ROUNDS; round++) {
        const order = TARGETS.map((_, i) => TARGETS[(i + round) % TARGETS.length]);
        for (const t of order) {
          process.stderr.write(`# ${format} round ${round + 1}/${ROUNDS}: ${t}…\n`);
          try {
            const r = await runTarget(t, img, file, format, dir);
            for (const [w, v] of Object.entries(r)) (samples[t][w] ??= []).push(v);
          } catch (e) {
            process.stderr.write(`# ${format}: ${t} failed: ${(e as Error).message}\n`);
          }
        }
      }
      const results = {} as Record<Target, Record<string, number>>;
      for (const t of TARGETS) {
        results[t] = {};
        for (const [w, v] of Object.entries(samples[t])) results[t][w] = median(v);
      }
      const names = Object.keys(results.qemu).length ? Object.keys(results.qemu) : Object.keys(results.xvm);
      for (const w of names) lines.push({ format, workload: w, mbps: { xvm: results.xvm[w] ?? NaN, qsd: results.qsd[w] ?? NaN, qemu: results.qemu[w] ?? NaN } });
      if (format === 'qcow2') {
        try {
          execFileSync('qemu-img', ['check', '-q', file]);
        } catch (e) {
          process.stderr.write(`# qemu-img check failed after the qcow2 runs: ${(e as Error).message}\n`);
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1).padStart(8) : '     n/a');
  const r = (x: number) => (Number.isFinite(x) ? x.toFixed(2).padStart(6) : '   n/a');
  console.log(`\nblock benchmark: guest under TCG, ${SIZE_MIB} MiB sequential / ${SIZE_MIB / 4} MiB in 4 KiB ops per line, median of ${ROUNDS} rounds, MB/s (higher is better)`);
  console.log('format  workload        xvm      qsd      qemu   xvm/qsd xvm/qemu');
  for (const l of lines) {
    console.log(`${l.format.padEnd(7)} ${l.workload.padEnd(13)} ${f(l.mbps.xvm)} ${f(l.mbps.qsd)} ${f(l.mbps.qemu)}   ${r(l.mbps.xvm / l.mbps.qsd)}  ${r(l.mbps.xvm / l.mbps.qemu)}`);
  }
  if (JSON_OUT) fs.writeFileSync(JSON_OUT, JSON.stringify(lines, null, 2));
}

/** Entry for bench/run.ts (`npm run bench -- blk [options]`); options are read from process.argv. */
export async function benchBlk(_args: string[]): Promise<void> {
  await main();
}

// Run directly (node dist/bench/blk.js …), not when imported by bench/run.ts.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    console.error(`bench/blk: ${(e as Error).message}`);
    process.exit(1);
  });
}
