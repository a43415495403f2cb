// Network benchmark: guest-to-guest TCP throughput between two guests
//   (a) through our switch (node dist/src/net/main.js, vhost-user-net ports)
//   (b) through QEMU's own path: `-netdev socket` (one guest listens, the
//       other connects; QEMU's userspace virtio-net in both)
//   (c) the same as (b) with legacy INTx interrupts (vectors=0), which our
//       NIC must use under TCG (docs/network.md): shows what the interrupt
//       mode costs, apart from the switch
// in the same run, in rotated order, median over --rounds rounds. Prints
// MB/s for both, the ratio, and the switch's CPU use during the transfer;
// on stderr, per path: guest interrupts per MiB, eth0 packets, the guests'
// CPU split, QEMU and switch CPU-seconds per MiB, the rings' counters.
//
//   node dist/bench/net.js [--mib 64] [--rounds 2] [--json FILE]
//        [--only xvm,qemu,qemu-intx,xvm@0,xvm-nooffload] [--cpu-prof DIR]
//
// The workload is busybox only (no iperf3 in the default guest): the
// receiver runs `nc -l -p 5001 > /dev/null`, the sender times
// `dd if=/dev/zero bs=64k count=N | nc RECEIVER 5001` with /proc/uptime.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { Guest, guestImage, type GuestImage } from '../test/blk/guest.js';
import { cpuSeconds } from '../src/engine/process.js';
import { median, numberArg, REPO, sleep } from './common.js';

type Target = 'xvm' | 'qemu' | 'qemu-intx' | 'xvm-nooffload' | `xvm@${number}`;
/**
 * The default paths; `--only` may also name xvm-nooffload (our switch
 * offering no offloads) and xvm@MS (our switch with receive interrupt
 * moderation of MS ms instead of the default, XVM_NET_RX_COALESCE_MS).
 */
const TARGETS: Target[] = ['xvm', 'qemu', 'qemu-intx'];
const SWITCH_MAIN = path.join(REPO, 'dist/src/net/main.js');

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}
const MIB = numberArg(process.argv, '--mib', 64);
const ROUNDS = numberArg(process.argv, '--rounds', 2);
const JSON_OUT = arg('--json', '');
/** `--cpu-prof DIR`: profile the switch process (node --cpu-prof). `--only xvm,qemu`: run only these paths. */
const CPU_PROF = arg('--cpu-prof', '');
const ONLY = arg('--only', '');
const MACS = ['00:16:3e:be:00:01', '00:16:3e:be:00:02'];

function control(sock: string, req: unknown): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(sock);
    let buf = '';
    c.on('connect', () => c.write(JSON.stringify(req) + '\n'));
    c.on('data', (d) => {
      buf += d.toString();
      if (!buf.includes('\n')) return;
      c.end();
      const r = JSON.parse(buf) as Record<string, unknown>;
      if (r.ok) resolve(r);
      else reject(new Error(String(r.error)));
    });
    c.on('error', reject);
  });
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function ipOf(g: Guest): Promise<string> {
  for (let i = 0; i < 120; i++) {
    const r = await g.run("ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p'", 30_000);
    const ip = r.out.trim().split('\n').pop()!.trim();
    if (/^\d+\.\d+\.\d+\.\d+$/.test(ip)) return ip;
    await sleep(500);
  }
  throw new Error('no address on eth0');
}

/** Guest-side counters: interrupts of the NIC (virtio or INTx line shared with it) and CPU jiffies. */
interface GuestCounters {
  irqs: number;
  cpu: number[];
  /** eth0's packets sent and received. */
  tx: number;
  rx: number;
}

async function guestCounters(g: Guest): Promise<GuestCounters> {
  const r = await g.run("grep -E 'virtio|eth0' /proc/interrupts | tr -s ' '; head -1 /proc/stat; echo PKTS $(cat /sys/class/net/eth0/statistics/tx_packets) $(cat /sys/class/net/eth0/statistics/rx_packets)", 30_000);
  let irqs = 0;
  let cpu: number[] = [];
  let tx = 0;
  let rx = 0;
  for (const line of r.out.split('\n')) {
    const t = line.trim().split(/\s+/);
    if (t[0] === 'cpu') cpu = t.slice(1).map(Number);
    else if (t[0] === 'PKTS') [tx, rx] = [Number(t[1]), Number(t[2])];
    else if (/^\d+:$/.test(t[0] ?? '') && /virtio/.test(line) && !/config/.test(line)) irqs += Number(t[1] ?? 0);
  }
  return { irqs, cpu, tx, rx };
}

/** What a transfer cost each guest: NIC interrupts per MiB, and its CPU split (user/system/softirq/idle, %). */
function guestCost(a: GuestCounters, b: GuestCounters): { irqPerMib: number; user: number; sys: number; soft: number; idle: number; tx: number; rx: number } {
  const d = b.cpu.map((v, i) => v - (a.cpu[i] ?? 0));
  const total = d.reduce((x, y) => x + y, 0) || 1;
  const pct = (v: number) => Math.round((100 * v) / total);
  return { tx: b.tx - a.tx, rx: b.rx - a.rx, irqPerMib: Math.round((b.irqs - a.irqs) / MIB), user: pct((d[0] ?? 0) + (d[1] ?? 0)), sys: pct(d[2] ?? 0), soft: pct((d[5] ?? 0) + (d[6] ?? 0)), idle: pct((d[3] ?? 0) + (d[4] ?? 0)) };
}

/** Push MIB MiB from a to b over TCP; returns MB/s (MiB/s) as the sender sees it. */
async function transfer(a: Guest, b: Guest, ipB: string, label: string): Promise<number> {
  const [ca, cb] = [await guestCounters(a), await guestCounters(b)];
  const q0 = [cpuSeconds(a.proc.pid!), cpuSeconds(b.proc.pid!)];
  const w0 = Date.now();
  b.send('nc -l -p 5001 > /dev/null; echo RECV-DONE');
  await sleep(1000);
  const count = MIB * 16;
  const r = await a.run(`t0=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero bs=64k count=${count} 2>/dev/null | nc ${ipB} 5001; t1=$(cut -d' ' -f1 /proc/uptime); echo "T=$t0:$t1"`, 900_000);
  const m = /T=([\d.]+):([\d.]+)/.exec(r.out);
  if (!m) throw new Error(`no timing: ${r.out}`);
  await b.waitOutput(/RECV-DONE/, 60_000, 'the receiver to finish');
  const secs = (Date.now() - w0) / 1000;
  const qemuCpu = [cpuSeconds(a.proc.pid!) - q0[0]!, cpuSeconds(b.proc.pid!) - q0[1]!];
  const [ca2, cb2] = [await guestCounters(a), await guestCounters(b)];
  process.stderr.write(`# ${label}: QEMU CPU (both threads' sum) sender ${qemuCpu[0]!.toFixed(1)} s, receiver ${qemuCpu[1]!.toFixed(1)} s over ${secs.toFixed(1)} s: ${((qemuCpu[0]! + qemuCpu[1]!) / MIB).toFixed(2)} CPU-s per MiB\n`);
  const fmt = (c: ReturnType<typeof guestCost>) => `eth0 tx ${c.tx} rx ${c.rx} packets, ${c.irqPerMib} irq/MiB, cpu user ${c.user}% sys ${c.sys}% irq+softirq ${c.soft}% idle ${c.idle}%`;
  process.stderr.write(`# ${label}: sender ${fmt(guestCost(ca, ca2))}; receiver ${fmt(guestCost(cb, cb2))}\n`);
  return MIB / Math.max(0.01, Number(m[2]) - Number(m[1]));
}

async function runXvm(img: GuestImage, dir: string, offloads = true, coalesceMs?: number): Promise<{ mbps: number; switchCpu: number }> {
  const label = !offloads ? 'xvm-nooffload' : coalesceMs !== undefined ? `xvm@${coalesceMs}` : 'xvm';
  const run = path.join(dir, 'run');
  fs.rmSync(run, { recursive: true, force: true });
  const sw: ChildProcess = spawn(process.execPath, [...(CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', CPU_PROF] : []), SWITCH_MAIN, '--name', 'bench', '--subnet', '10.0.77.0/24', '--gateway', '10.0.77.1', '--state', path.join(dir, 'lib'), '--run', run], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, XVM_NET_OFFLOADS: offloads ? '1' : '0', ...(coalesceMs !== undefined ? { XVM_NET_RX_COALESCE_MS: String(coalesceMs) } : {}) } });
  let out = '';
  sw.stdout!.on('data', (d) => (out += d.toString()));
  const guests: Guest[] = [];
  try {
    await waitFor(() => out.includes('XVM_NET_READY'), 20_000, 'the switch');
    const ctl = path.join(run, 'control.sock');
    for (let i = 0; i < 2; i++) {
      const sock = path.join(dir, `p${i}.sock`);
      await control(ctl, { op: 'add-port', port: { id: `g${i}/vif0`, socket: sock, mac: MACS[i], vlan: 0 } });
      guests.push(await Guest.boot(img, ['-chardev', `socket,id=c0,path=${sock},reconnect=1`, '-netdev', 'vhost-user,id=n0,chardev=c0', '-device', `virtio-net-pci,netdev=n0,mac=${MACS[i]},vectors=0`]));
    }
    await ipOf(guests[0]!);
    const ipB = await ipOf(guests[1]!);
    const cpu0 = cpuSeconds(sw.pid!);
    const t0 = Date.now();
    const mbps = await transfer(guests[0]!, guests[1]!, ipB, label);
    const switchCpu = (cpuSeconds(sw.pid!) - cpu0) / ((Date.now() - t0) / 1000);
    process.stderr.write(`# xvm: switch CPU ${(cpuSeconds(sw.pid!) - cpu0).toFixed(1)} s: ${((cpuSeconds(sw.pid!) - cpu0) / MIB).toFixed(2)} CPU-s per MiB\n`);
    type Ring = { kicks: number; notifications: number; completed: number };
    type Dev = { txGso?: number; txFrames?: number; rxFrames?: number; rxBuffers?: number; rings?: { rx: Ring; tx: Ring } };
    const st = (await control(ctl, { op: 'status' })) as { status: { ports: { id: string; device: Dev | null }[] } };
    const gso = st.status.ports.reduce((n, p) => n + (p.device?.txGso ?? 0), 0);
    const frames = st.status.ports.reduce((n, p) => n + (p.device?.txFrames ?? 0), 0);
    process.stderr.write(`# ${label}: ${frames} frames from the guests, ${gso} of them TCP segmentation super-frames\n`);
    for (const p of st.status.ports) {
      const d = p.device;
      if (!d?.rings) continue;
      const r = d.rings;
      process.stderr.write(`#   ${p.id}: tx ${d.txFrames} frames, ${r.tx.kicks} kicks, ${r.tx.notifications} tx interrupts; rx ${d.rxFrames} frames in ${d.rxBuffers} buffers, ${r.rx.kicks} kicks, ${r.rx.notifications} rx interrupts\n`);
    }
    return { mbps, switchCpu };
  } finally {
    for (const g of guests) await g.poweroff();
    sw.kill('SIGTERM');
    await new Promise((r) => sw.once('exit', r));
  }
}

/** `intx`: the baseline with legacy interrupts too (vectors=0), as our NIC must use under TCG. */
async function runQemu(img: GuestImage, intx = false): Promise<{ mbps: number }> {
  const v = intx ? ',vectors=0' : '';
  const port = 20000 + Math.floor(Math.random() * 20000);
  const guests: Guest[] = [];
  try {
    guests.push(await Guest.boot(img, ['-netdev', `socket,id=n0,listen=127.0.0.1:${port}`, '-device', `virtio-net-pci,netdev=n0,mac=${MACS[0]}${v}`]));
    guests.push(await Guest.boot(img, ['-netdev', `socket,id=n0,connect=127.0.0.1:${port}`, '-device', `virtio-net-pci,netdev=n0,mac=${MACS[1]}${v}`]));
    // No DHCP server on this wire: static addresses (udhcpc stopped first).
    await guests[0]!.run('killall udhcpc 2>/dev/null; ip addr add 10.0.78.1/24 dev eth0', 30_000);
    await guests[1]!.run('killall udhcpc 2>/dev/null; ip addr add 10.0.78.2/24 dev eth0', 30_000);
    return { mbps: await transfer(guests[0]!, guests[1]!, '10.0.78.2', intx ? 'qemu-intx' : 'qemu') };
  } finally {
    for (const g of guests) await g.poweroff();
  }
}

async function main(): Promise<void> {
  const img = await guestImage();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-bench-net-'));
  const samples: Record<string, number[]> = { xvm: [], qemu: [], 'qemu-intx': [], 'xvm-nooffload': [] };
  const cpu: number[] = [];
  const targets = ONLY ? (ONLY.split(',') as Target[]) : TARGETS;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const order = targets.map((_, i) => targets[(i + round) % targets.length]!);
      for (const t of order) {
        process.stderr.write(`# round ${round + 1}/${ROUNDS}: ${t}…\n`);
        try {
          if (t === 'xvm') {
            const r = await runXvm(img, dir);
            samples.xvm.push(r.mbps);
            cpu.push(r.switchCpu);
          } else if (t === 'xvm-nooffload') samples[t]!.push((await runXvm(img, dir, false)).mbps);
          else if (t.startsWith('xvm@')) (samples[t] ??= []).push((await runXvm(img, dir, true, Number(t.slice(4)))).mbps);
          else samples[t]!.push((await runQemu(img, t === 'qemu-intx')).mbps);
        } catch (e) {
          process.stderr.write(`# ${t} failed: ${(e as Error).message}\n`);
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // median() of no samples (a path not run, or failed) is NaN.
  const x = median(samples.xvm);
  const q = median(samples.qemu);
  const c = median(cpu);
  const qi = median(samples['qemu-intx']);
  console.log(`\nnetwork benchmark: two TCG guests, busybox nc of ${MIB} MiB guest → guest over TCP, median of ${ROUNDS} rounds, MiB/s (higher is better)`);
  console.log('path                                  MiB/s');
  console.log(`xvm switch (vhost-user-net)       ${x.toFixed(2).padStart(9)}   switch CPU ${(c * 100).toFixed(0)}% of one core during the transfer`);
  console.log(`qemu -netdev socket (baseline)    ${q.toFixed(2).padStart(9)}`);
  console.log(`ratio xvm/qemu                    ${(x / q).toFixed(2).padStart(9)}`);
  console.log(`qemu -netdev socket, vectors=0    ${qi.toFixed(2).padStart(9)}   (INTx like our NIC under TCG; ratio xvm/this ${(x / qi).toFixed(2)})`);
  if (samples['xvm-nooffload']!.length) console.log(`xvm switch, no offloads offered     ${median(samples['xvm-nooffload']!).toFixed(2).padStart(9)}`);
  for (const [k, v] of Object.entries(samples)) if (k.startsWith('xvm@') && v.length) console.log(`xvm switch, rx moderation ${k.slice(4).padEnd(3)} ms ${median(v).toFixed(2).padStart(9)}`);
  if (JSON_OUT) fs.writeFileSync(JSON_OUT, JSON.stringify({ mib: MIB, rounds: ROUNDS, xvm: samples.xvm, qemu: samples.qemu, qemuIntx: samples['qemu-intx'], switchCpu: cpu, ratio: x / q }, null, 2));
}

/** Entry for bench/run.ts (`npm run bench -- net [options]`); options are read from process.argv. */
export async function benchNet(_args: string[]): Promise<void> {
  await main();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    console.error(`bench/net: ${(e as Error).message}`);
    process.exit(1);
  });
}
