// What `xvm top` and Prometheus read: per-domain CPU time (from
// /proc/PID/stat of each domain's QEMU), resident memory, vCPUs and state,
// console bytes, xvmd's API request counters and its own process figures.
import fs from 'node:fs';
import { cpuSeconds, rssKiB } from '../engine/process.js';
import { DOMAIN_STATES, type HostStats } from '../api/schema.js';
import type { DomainManager } from './domains.js';

/** Counts API requests by route pattern and status (xvm_api_requests_total). */
export class RequestCounter {
  private counts = new Map<string, number>();

  add(method: string, route: string, status: number): void {
    const key = JSON.stringify([method, route, String(status)]);
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }

  entries(): { method: string; route: string; status: string; count: number }[] {
    return [...this.counts].map(([k, count]) => {
      const [method, route, status] = JSON.parse(k) as [string, string, string];
      return { method, route, status, count };
    });
  }
}

/** A sample of every domain's counters, with the time it was taken (for rates between samples). */
export async function collectStats(domains: DomainManager): Promise<HostStats> {
  const list = domains.list();
  // Device counters first (the switch answers over its control socket); the
  // sample time is taken with the CPU figures, which rates divide by.
  const devices = await Promise.all(list.map((info) => domains.deviceCounters(info.name)));
  const now = Date.now();
  return {
    time: new Date(now).toISOString(),
    timeMs: now,
    hostCpus: cpuCount(),
    domains: list.map((info, i) => {
      const pid = info.pid;
      return {
        name: info.name,
        domid: info.domid,
        state: info.state,
        pid,
        cpuSeconds: pid ? cpuSeconds(pid) : 0,
        rssKiB: pid ? rssKiB(pid) : 0,
        memoryKiB: info.memory * 1024,
        maxmemKiB: ((info.config.maxmem as number | undefined) ?? info.memory) * 1024,
        vcpus: info.vcpus,
        consoleBytes: domains.consoleOf(info.name).bytesSeen,
        devices: devices[i]!,
      };
    }),
  };
}

let cpus: number | undefined;
function cpuCount(): number {
  if (cpus === undefined) {
    try {
      cpus = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').filter((l) => l.startsWith('processor')).length || 1;
    } catch {
      cpus = 1;
    }
  }
  return cpus;
}

/** Escapes a label value for the Prometheus text format. */
function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labels(l: Record<string, string>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${esc(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function num(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

class Exposition {
  private out: string[] = [];
  family(name: string, type: 'counter' | 'gauge', help: string, samples: [Record<string, string>, number][]): void {
    this.out.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`);
    this.out.push(`# TYPE ${name} ${type}`);
    for (const [l, v] of samples) this.out.push(`${name}${labels(l)} ${num(v)}`);
  }
  text(): string {
    return this.out.join('\n') + '\n';
  }
}

/** The Prometheus text exposition (version 0.0.4) of xvmd and its domains. */
export async function prometheusText(domains: DomainManager, requests: RequestCounter, startedAt: Date): Promise<string> {
  const stats = await collectStats(domains);
  const e = new Exposition();
  const ds = stats.domains;
  const dl = (d: (typeof ds)[number]) => ({ domain: d.name });
  e.family('xvm_domains', 'gauge', 'Defined domains.', [[{}, ds.length]]);
  e.family('xvm_domain_state', 'gauge', 'State of each domain: 1 for its current state, 0 for the others.',
    ds.flatMap((d) => DOMAIN_STATES.map((st): [Record<string, string>, number] => [{ domain: d.name, state: st }, d.state === st ? 1 : 0])));
  e.family('xvm_domain_id', 'gauge', 'Domain id of each running domain.', ds.filter((d) => d.domid !== null).map((d) => [dl(d), d.domid!]));
  e.family('xvm_domain_cpu_seconds_total', 'counter', 'CPU time (user + system) used by the domain\'s QEMU process in this run.', ds.filter((d) => d.pid).map((d) => [dl(d), d.cpuSeconds]));
  e.family('xvm_domain_memory_bytes', 'gauge', 'Memory given to the domain (configured).', ds.map((d) => [dl(d), d.memoryKiB * 1024]));
  e.family('xvm_domain_max_memory_bytes', 'gauge', 'Maximum memory of the domain (maxmem, or memory).', ds.map((d) => [dl(d), d.maxmemKiB * 1024]));
  e.family('xvm_domain_resident_memory_bytes', 'gauge', 'Resident memory of the domain\'s QEMU process.', ds.filter((d) => d.pid).map((d) => [dl(d), d.rssKiB * 1024]));
  e.family('xvm_domain_vcpus', 'gauge', 'Virtual CPUs of the domain.', ds.map((d) => [dl(d), d.vcpus]));
  e.family('xvm_console_bytes_total', 'counter', 'Console output bytes captured since xvmd started.', ds.map((d) => [dl(d), d.consoleBytes]));
  const devs = ds.flatMap((d) => d.devices.map((c) => ({ d, c })));
  const devFamily = (name: string, help: string, kind: 'disk' | 'vif', key: keyof (typeof devs)[number]['c']) =>
    e.family(name, 'counter', help, devs.filter(({ c }) => c.kind === kind && typeof c[key] === 'number').map(({ d, c }) => [{ domain: d.name, device: c.device }, c[key] as number]));
  devFamily('xvm_disk_read_bytes_total', 'Bytes read by the guest from a disk (since its backend started).', 'disk', 'readBytes');
  devFamily('xvm_disk_write_bytes_total', 'Bytes written by the guest to a disk.', 'disk', 'writeBytes');
  devFamily('xvm_disk_reads_total', 'Read requests served by a disk backend.', 'disk', 'readOps');
  devFamily('xvm_disk_writes_total', 'Write requests served by a disk backend.', 'disk', 'writeOps');
  devFamily('xvm_disk_errors_total', 'Disk requests refused (malformed) or failed.', 'disk', 'errors');
  devFamily('xvm_nic_receive_bytes_total', 'Bytes delivered to the guest by a NIC.', 'vif', 'rxBytes');
  devFamily('xvm_nic_transmit_bytes_total', 'Bytes sent by the guest through a NIC.', 'vif', 'txBytes');
  devFamily('xvm_nic_receive_packets_total', 'Frames delivered to the guest by a NIC.', 'vif', 'rxPackets');
  devFamily('xvm_nic_transmit_packets_total', 'Frames sent by the guest through a NIC.', 'vif', 'txPackets');
  devFamily('xvm_nic_errors_total', 'Frames dropped at a NIC (malformed, oversized, spoofed).', 'vif', 'errors');
  e.family('xvm_api_requests_total', 'counter', 'API requests served, by route and status.',
    requests.entries().map((r) => [{ method: r.method, route: r.route, status: r.status }, r.count]));
  const usage = process.cpuUsage();
  const mem = process.memoryUsage();
  e.family('process_cpu_seconds_total', 'counter', 'Total user and system CPU time of xvmd in seconds.', [[{}, (usage.user + usage.system) / 1e6]]);
  e.family('process_resident_memory_bytes', 'gauge', 'Resident memory of xvmd in bytes.', [[{}, mem.rss]]);
  e.family('process_start_time_seconds', 'gauge', 'Start time of xvmd since the Unix epoch in seconds.', [[{}, Math.floor(startedAt.getTime() / 1000)]]);
  e.family('process_open_fds', 'gauge', 'Open file descriptors of xvmd.', [[{}, openFds()]]);
  e.family('nodejs_heap_used_bytes', 'gauge', 'V8 heap used by xvmd.', [[{}, mem.heapUsed]]);
  return e.text();
}

function openFds(): number {
  try {
    return fs.readdirSync('/proc/self/fd').length;
  } catch {
    return 0;
  }
}
