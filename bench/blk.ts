// Block benchmark: the same in-guest workload against
//   (a) our vhost-user block backend (node dist/src/devices/blk/main.js)
//   (b) qemu-storage-daemon's vhost-user-blk export
//   (c) QEMU's built-in virtio-blk
// on the same raw (and qcow2) image, in the same run. Prints MB/s per line
// and our ratio to (b) and (c), and the CPU time the back-end process spent
// on each line (ours and qemu-storage-daemon's: on a loaded 2-core machine
// that, not the wall clock, is what the back-end controls).
//
//   node dist/bench/blk.js [--size-mib 256] [--formats raw,qcow2] [--rounds 3]
//        [--targets xvm,qsd,qemu] [--json FILE] [--cpu-prof DIR] [--warmup MIB]
//        [--workloads seq-write,seq-read,4k-write,4k-read]
//
// The targets run in turn, in a rotated order, for --rounds rounds (a fresh
// guest each time); each line reports the median over rounds, so load from
// other processes on a small machine hits all three alike. --cpu-prof DIR
// runs our back-end under node --cpu-prof (profiles land in DIR).
// --warmup MIB (default 128): every target first writes and reads MIB MiB
// in 1 MiB requests at the end of the disk, outside the measured range, so
// the lines show the steady state, as fio's ramp_time does. A real guest
// boots from its disk (thousands of requests) before any workload; this
// guest boots from an initramfs and its disk is untouched until the first
// line. A just-started back-end of ours spends its first ~200 requests with
// V8 compiling the data path (~120 ms of CPU); `--warmup 0` shows those
// cold figures.
//
// Workloads (busybox dd in the guest, O_DIRECT so the guest page cache is
// out of the way; the host page cache is in play for all three alike):
//   seq-write / seq-read   1 MiB blocks
//   4k-write-qd8 / 4k-read-qd8   8 concurrent streams of 4 KiB requests
// (busybox has no random-offset tool: the 4 KiB lines are 8 interleaved
// sequential streams at different offsets, i.e. queue depth 8, not random.)
// Time is the guest's CLOCK_MONOTONIC in ns (/proc/timer_list): /proc/uptime
// ticks in 10 ms, too coarse for a 0.2 s line.
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

const SIZE_MIB = Number(arg('--size-mib', '256'));
const FORMATS = arg('--formats', 'raw,qcow2').split(',') as ('raw' | 'qcow2')[];
const JSON_OUT = arg('--json', '');
const ROUNDS = Number(arg('--rounds', '3'));
const ONLY = arg('--targets', TARGETS.join(',')).split(',') as Target[];
const CPU_PROF = arg('--cpu-prof', '');
/** MiB written and read beyond the measured range before the timed lines (0: none; the lines then include each back-end's first requests). */
const WARMUP_MIB = Math.min(Number(arg('--warmup', '128')), SIZE_MIB);
/** Only these lines (names as printed, e.g. "seq-read 1M"), or all. A read line still runs after its write line when both are asked for. */
const WORKLOADS = arg('--workloads', '').split(',').filter(Boolean);
const QD = 8;

interface Line {
  format: string;
  workload: string;
  mbps: Record<Target, number>;
  /** Back-end CPU milliseconds for the line (xvm, qsd). */
  cpuMs: Record<Target, number>;
}

interface Sample {
  mbps: number;
  cpuMs: number;
}

/** CPU time (ns) of every thread of a process so far (libuv's pool, QEMU's I/O threads). */
function cpuNs(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  let sum = 0;
  try {
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        sum += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        /* thread gone */
      }
    }
  } catch {
    return NaN;
  }
  return sum;
}

const NOW = `awk 'NR==3{print $3; exit}' /proc/timer_list`;

async function timed(g: Guest, cmd: string, mib: number, pid: number | undefined): Promise<Sample> {
  const c0 = cpuNs(pid);
  const r = await g.run(`a=$(${NOW}); ${cmd}; b=$(${NOW}); echo "T=$a:$b"`, 600_000);
  const c1 = cpuNs(pid);
  const m = r.out.match(/T=(\d+):(\d+)/);
  if (!m) throw new Error(`no timing in guest output: ${r.out}`);
  const s = Math.max(1e-6, (Number(m[2]) - Number(m[1])) / 1e9);
  return { mbps: mib / s, cpuMs: (c1 - c0) / 1e6 };
}

async function workloads(g: Guest, pid: number | undefined): Promise<Record<string, Sample>> {
  const n = SIZE_MIB;
  const out: Record<string, Sample> = {};
  if (WARMUP_MIB > 0) {
    // The image is 2 × SIZE_MIB: warm up in its last WARMUP_MIB, which no line touches.
    const at = 2 * n - WARMUP_MIB;
    await g.run(`dd if=/dev/zero of=/dev/vda bs=1M count=${WARMUP_MIB} seek=${at} oflag=direct 2>/dev/null; dd if=/dev/vda of=/dev/null bs=1M count=${WARMUP_MIB} skip=${at} iflag=direct 2>/dev/null`, 600_000);
  }
  const want = (w: string) => WORKLOADS.length === 0 || WORKLOADS.some((x) => w.startsWith(x));
  if (want('seq-write')) out['seq-write 1M'] = await timed(g, `dd if=/dev/zero of=/dev/vda bs=1M count=${n} oflag=direct 2>/dev/null`, n, pid);
  if (want('seq-read')) out['seq-read 1M'] = await timed(g, `dd if=/dev/vda of=/dev/null bs=1M count=${n} iflag=direct 2>/dev/null`, n, pid);
  const per = Math.floor((n * 256) / QD / 4); // a quarter of the data set in 4 KiB ops
  const streams = (w: boolean) =>
    Array.from({ length: QD }, (_, i) =>
      w
        ? `dd if=/dev/zero of=/dev/vda bs=4k count=${per} seek=${i * per} oflag=direct 2>/dev/null &`
        : `dd if=/dev/vda of=/dev/null bs=4k count=${per} skip=${i * per} iflag=direct 2>/dev/null &`,
    ).join(' ') + ' wait';
  const mib4k = (QD * per * 4096) / MiB;
  if (want('4k-write')) out[`4k-write qd${QD}`] = await timed(g, streams(true), mib4k, pid);
  if (want('4k-read')) out[`4k-read qd${QD}`] = await timed(g, streams(false), mib4k, pid);
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

async function runTarget(t: Target, img: GuestImage, file: string, format: string, dir: string): Promise<Record<string, Sample>> {
  const sock = path.join(dir, `${t}.sock`);
  let backend: Backend | null = null;
  let qsd: ReturnType<typeof spawn> | null = null;
  let disk: string[];
  if (t === 'xvm') {
    const prof = CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', CPU_PROF, '--cpu-prof-name', `xvm-${format}-${Date.now()}.cpuprofile`] : [];
    if (process.env.XVM_BENCH_BLK_NODE_ARGS) prof.push(...process.env.XVM_BENCH_BLK_NODE_ARGS.split(' '));
    const metrics = process.env.XVM_BENCH_BLK_METRICS ? ['--metrics', `${process.env.XVM_BENCH_BLK_METRICS}.${format}`] : [];
    backend = await Backend.start(['--socket', sock, '--image', file, '--format', format, '--queues', '1', ...metrics], {}, prof);
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
    return await workloads(g, backend?.proc.pid ?? qsd?.pid);
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
  const loadStart = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  const img = await guestImage();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-bench-blk-'));
  const lines: Line[] = [];
  try {
    for (const format of FORMATS) {
      const file = path.join(dir, `disk.${format}`);
      const samples: Record<Target, Record<string, Sample[]>> = { xvm: {}, qsd: {}, qemu: {} };
      const targets = TARGETS.filter((t) => ONLY.includes(t));
      for (let round = 0; round < ROUNDS; round++) {
        const order = targets.map((_, i) => targets[(i + round) % targets.length]);
        for (const t of order) {
          process.stderr.write(`# ${format} round ${round + 1}/${ROUNDS}: ${t}…\n`);
          try {
            // A fresh image for every run: each target allocates what it writes.
            fs.rmSync(file, { force: true });
            execFileSync('qemu-img', ['create', '-q', '-f', format, file, `${SIZE_MIB * 2}M`]);
            const r = await runTarget(t, img, file, format, dir);
            // Every qcow2 our back-end wrote must pass qemu-img check.
            if (format === 'qcow2' && t === 'xvm') execFileSync('qemu-img', ['check', '-q', file]);
            for (const [w, v] of Object.entries(r)) (samples[t][w] ??= []).push(v);
            // Each round's figures too (stderr): the median hides how much a line moves.
            process.stderr.write(`#   ${Object.entries(r).map(([w, v]) => `${w} ${v.mbps.toFixed(1)} MB/s ${v.cpuMs.toFixed(0)} ms`).join(', ')}\n`);
          } catch (e) {
            process.stderr.write(`# ${format}: ${t} failed: ${(e as Error).message}\n`);
          }
        }
      }
      const med = (t: Target, w: string, k: keyof Sample) => (samples[t][w] ? median(samples[t][w].map((x) => x[k])) : NaN);
      const names = [...new Set(TARGETS.flatMap((t) => Object.keys(samples[t])))];
      for (const w of names) {
        lines.push({
          format,
          workload: w,
          mbps: { xvm: med('xvm', w, 'mbps'), qsd: med('qsd', w, 'mbps'), qemu: med('qemu', w, 'mbps') },
          cpuMs: { xvm: med('xvm', w, 'cpuMs'), qsd: med('qsd', w, 'cpuMs'), qemu: NaN },
        });
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1).padStart(8) : '     n/a');
  const r = (x: number) => (Number.isFinite(x) ? x.toFixed(2).padStart(6) : '   n/a');
  const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(0).padStart(7) : '    n/a');
  console.log(`\nblock benchmark: guest under TCG, ${SIZE_MIB} MiB sequential / ${SIZE_MIB / 4} MiB in 4 KiB ops per line, median of ${ROUNDS} rounds, ${WARMUP_MIB > 0 ? `after a ${WARMUP_MIB} MiB warm-up, ` : ''}MB/s (higher is better)`);
  console.log(`load average at start ${loadStart}, at end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}; back-end CPU in ms per line (lower is better)`);
  console.log('format  workload        xvm      qsd      qemu   xvm/qsd xvm/qemu  cpu:xvm    qsd');
  for (const l of lines) {
    console.log(
      `${l.format.padEnd(7)} ${l.workload.padEnd(13)} ${f(l.mbps.xvm)} ${f(l.mbps.qsd)} ${f(l.mbps.qemu)}   ${r(l.mbps.xvm / l.mbps.qsd)}  ${r(l.mbps.xvm / l.mbps.qemu)}  ${ms(l.cpuMs.xvm)} ${ms(l.cpuMs.qsd)}`,
    );
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
