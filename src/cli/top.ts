// xvm top: a live table of domains like xentop (CPU seconds and %, memory,
// vCPUs, disk and network rates), refreshing in place on a terminal; --batch prints plain repeated
// tables for scripts. CPU % comes from two samples of GET /v1/stats.
import type { Command } from 'commander';
import type { DomainStats, HostStats } from '../api/schema.js';
import { action, client, CliError, sleep, table } from './context.js';

const HEADERS = ['NAME', 'STATE', 'CPU(sec)', 'CPU(%)', 'MEM(k)', 'MAXMEM(k)', 'RSS(k)', 'VCPUS', 'VBD_RD(k/s)', 'VBD_WR(k/s)', 'NET_RX(k/s)', 'NET_TX(k/s)', 'ID'];

type CounterKey = 'readBytes' | 'writeBytes' | 'rxBytes' | 'txBytes';

function deviceSum(d: DomainStats, kind: 'disk' | 'vif', key: CounterKey): number {
  return d.devices.filter((c) => c.kind === kind).reduce((a, c) => a + (c[key] ?? 0), 0);
}

/** KiB/s of one device counter summed over a domain's devices, between two samples of the same QEMU run. */
export function deviceRate(prev: HostStats | undefined, cur: HostStats, name: string, kind: 'disk' | 'vif', key: CounterKey): number {
  const now = cur.domains.find((d) => d.name === name);
  const before = prev?.domains.find((d) => d.name === name);
  if (!now || !before || !now.pid || before.pid !== now.pid) return 0;
  const dt = (cur.timeMs - prev!.timeMs) / 1000;
  if (dt <= 0) return 0;
  // A backend restarted in between starts its counters over: no negative rates.
  return Math.max(0, (deviceSum(now, kind, key) - deviceSum(before, kind, key)) / 1024 / dt);
}

function flags(st: DomainStats['state']): string {
  return { running: 'r-----', paused: '-p----', shutdown: '--s---', crashed: '---c--', defined: '------' }[st] ?? '------';
}

/** CPU % of each domain between two samples (100 % = one host CPU, as xentop counts). */
export function cpuPercent(prev: HostStats | undefined, cur: HostStats, name: string): number {
  const now = cur.domains.find((d) => d.name === name);
  const before = prev?.domains.find((d) => d.name === name);
  if (!now || !before || !now.pid || before.pid !== now.pid) return 0;
  const dt = (cur.timeMs - prev!.timeMs) / 1000;
  if (dt <= 0) return 0;
  return Math.max(0, ((now.cpuSeconds - before.cpuSeconds) / dt) * 100);
}

export function renderTop(prev: HostStats | undefined, cur: HostStats): string {
  const running = cur.domains.filter((d) => d.domid !== null).length;
  const head = `xvm top - ${cur.time.replace('T', ' ').slice(0, 19)}  ${cur.domains.length} domains: ${running} running, ${cur.domains.length - running} stopped; host CPUs ${cur.hostCpus}\n\n`;
  const rows = cur.domains.map((d) => [
    d.name,
    flags(d.state),
    d.cpuSeconds.toFixed(0),
    cpuPercent(prev, cur, d.name).toFixed(1),
    d.memoryKiB,
    d.maxmemKiB,
    d.rssKiB,
    d.vcpus,
    deviceRate(prev, cur, d.name, 'disk', 'readBytes').toFixed(1),
    deviceRate(prev, cur, d.name, 'disk', 'writeBytes').toFixed(1),
    deviceRate(prev, cur, d.name, 'vif', 'rxBytes').toFixed(1),
    deviceRate(prev, cur, d.name, 'vif', 'txBytes').toFixed(1),
    d.domid ?? '-',
  ]);
  return head + table(HEADERS, rows, [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
}

export function registerTopCommand(program: Command): void {
  program
    .command('top')
    .description('live table of domains (like xentop): CPU seconds and %, memory, vCPUs, disk and network KiB/s; q or Ctrl-C quits')
    .option('-b, --batch', 'print plain tables one after the other (for scripts and pipes)')
    .option('-i, --iterations <n>', 'stop after N tables')
    .option('-d, --delay <seconds>', 'seconds between tables', '3')
    .option('--json', 'print each sample as JSON (one object per line, with cpuPercent)')
    .action(
      action(async (opts: { batch?: boolean; iterations?: string; delay: string; json?: boolean }) => {
        const delay = Number(opts.delay);
        if (!Number.isFinite(delay) || delay <= 0 || delay > 3600) throw new CliError(`--delay must be a number of seconds > 0 (got '${opts.delay}')`, 2);
        let iterations = Infinity;
        if (opts.iterations !== undefined) {
          iterations = Number(opts.iterations);
          if (!Number.isInteger(iterations) || iterations < 1) throw new CliError(`--iterations must be a whole number >= 1 (got '${opts.iterations}')`, 2);
        }
        const c = client();
        const live = !opts.batch && !opts.json && process.stdout.isTTY;
        let quit = false;
        let wake: (() => void) | undefined;
        const stop = () => {
          quit = true;
          wake?.();
        };
        process.on('SIGINT', stop);
        const stdin = process.stdin;
        if (live && stdin.isTTY) {
          stdin.setRawMode(true);
          stdin.resume();
          stdin.on('data', (b: Buffer) => {
            if (b.includes(0x71) || b.includes(0x03)) stop(); // q, Ctrl-C
          });
        }
        if (live) process.stdout.write('\x1b[?25l'); // hide the cursor
        let prev: HostStats | undefined;
        try {
          for (let i = 0; i < iterations && !quit; i++) {
            const cur = await c.stats();
            if (opts.json) {
              process.stdout.write(JSON.stringify({ ...cur, domains: cur.domains.map((d) => ({ ...d, cpuPercent: cpuPercent(prev, cur, d.name) })) }) + '\n');
            } else if (live) {
              process.stdout.write('\x1b[H\x1b[2J' + renderTop(prev, cur));
            } else {
              process.stdout.write((i ? '\n' : '') + renderTop(prev, cur));
            }
            prev = cur;
            if (i + 1 < iterations && !quit) {
              await Promise.race([sleep(delay * 1000), new Promise<void>((r) => (wake = r))]);
            }
          }
        } finally {
          if (live && stdin.isTTY) {
            stdin.setRawMode(false);
            stdin.pause();
          }
          if (live) process.stdout.write('\x1b[?25h'); // show it again
          process.off('SIGINT', stop);
        }
      }),
    );
}
