// Networks in xvmd: their definitions (name, subnet, gateway, native VLAN),
// kept under the state root, and the switch process of each (src/net/main.ts),
// started when a network gets its first port and stopped after its last one
// goes. Frames never pass through xvmd: it only adds / removes ports, reads
// counters and asks for captures over the switch's control socket.
//
//   <lib>/networks/<name>/network.json   the definition
//   <lib>/networks/<name>/leases.json    DHCP leases (written by the switch)
//   <run>/networks/<name>/control.sock   the switch's control socket
//   <run>/networks/<name>/ports.json     its ports (re-created after a crash)
//   <run>/networks/<name>/switch.pid
//   <log>/networks/<name>.log
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { XvmError, errorMessage } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';
import { pidAlive, readLogFrom, readPidFile, spawnDetached } from '../engine/process.js';
import { formatIp, inSubnet, parseCidr, parseIp, type Subnet } from '../net/frame.js';
import type { NetPortState } from '../devices/net/persist.js';
import { natDown } from '../net/nat.js';
import type { Logger } from './log.js';
import { deviceEvent } from './device-log.js';

const SWITCH_MAIN = fileURLToPath(new URL('../net/main.js', import.meta.url));
export const DEFAULT_NETWORK = 'default';
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const READY_TIMEOUT_MS = 20_000;
const REQUEST_TIMEOUT_MS = 15_000;

export interface NetworkDef {
  name: string;
  /** "10.0.99.0/24" */
  subnet: string;
  /** The gateway address (first host of the subnet). */
  gateway: string;
  /** Native VLAN: DHCP and ports without their own vlan= are on it (0 = untagged). */
  vlan: number;
  /** Host uplink: a TAP interface of this name holds the gateway address (when xvmd runs as root). */
  tap: string;
  /** Masquerade the subnet out of the host (needs the uplink, so root); src/net/nat.ts. */
  nat?: boolean;
  created: string;
}

export interface NetworkInfo extends NetworkDef {
  running: boolean;
  pid: number | null;
  uplink: { name: string; mac: string; readFrames: number; writeDropped: number; nat?: boolean } | null;
  ports: unknown[];
  fdb: unknown[];
  leases: { mac: string; ip: string; hostname?: string; expires: number }[];
  services: unknown;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Routes of the host (IPv4) as subnets, to keep new networks off them. */
function hostRoutes(): Subnet[] {
  const out: Subnet[] = [];
  try {
    for (const line of fs.readFileSync('/proc/net/route', 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 8) continue;
      const dest = Buffer.from(f[1]!, 'hex').readUInt32LE(0);
      const mask = Buffer.from(f[7]!, 'hex').readUInt32LE(0);
      if (mask === 0) continue; // the default route covers everything; not a collision
      let prefix = 0;
      for (let m = mask; m; m >>>= 1) prefix += m & 1;
      out.push({ net: dest >>> 0, mask: mask >>> 0 === 0 ? 0 : ((0xffffffff << (32 - prefix)) >>> 0), prefix });
    }
  } catch {
    /* no /proc: no routes to avoid */
  }
  return out;
}

function overlaps(a: Subnet, b: Subnet): boolean {
  const m = (a.mask & b.mask) >>> 0;
  return ((a.net & m) >>> 0) === ((b.net & m) >>> 0);
}

interface Running {
  pid: number;
  restarts: number[];
  restarting: boolean;
  stopping: boolean;
}

export class NetworkManager {
  private readonly running = new Map<string, Running>();
  /** Per-network serialisation of start / stop / port changes. */
  private readonly locks = new Map<string, Promise<unknown>>();
  private timer: NodeJS.Timeout;

  constructor(
    private readonly paths: StatePaths,
    private readonly log: Logger,
  ) {
    this.timer = setInterval(() => this.supervise(), 1000);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }

  private libDir(name: string): string {
    return path.join(this.paths.lib, 'networks', name);
  }
  private runDir(name: string): string {
    return path.join(this.paths.run, 'networks', name);
  }
  private defFile(name: string): string {
    return path.join(this.libDir(name), 'network.json');
  }
  controlPath(name: string): string {
    return path.join(this.runDir(name), 'control.sock');
  }
  private pidFile(name: string): string {
    return path.join(this.runDir(name), 'switch.pid');
  }
  private logFile(name: string): string {
    return path.join(this.paths.log, 'networks', `${name}.log`);
  }

  private serial<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    this.locks.set(name, next.catch(() => undefined));
    return next;
  }

  static checkName(name: string): void {
    if (!NAME_RE.test(name)) throw new XvmError('invalid', `bad network name ${JSON.stringify(name.slice(0, 40))}: 1 to 32 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit`);
  }

  // ---------------------------------------------------------------- definitions

  get(name: string): NetworkDef | undefined {
    try {
      return JSON.parse(fs.readFileSync(this.defFile(name), 'utf8')) as NetworkDef;
    } catch {
      return undefined;
    }
  }

  list(): NetworkDef[] {
    let names: string[] = [];
    try {
      names = fs.readdirSync(path.join(this.paths.lib, 'networks'));
    } catch {
      return [];
    }
    return names.sort().flatMap((n) => {
      const d = this.get(n);
      return d ? [d] : [];
    });
  }

  /** xvm + 8 hex digits of (state root, name): unique per installation and network, ≤ 15 characters. */
  private tapName(name: string): string {
    return `xvm${crypto.createHash('sha256').update(`${this.paths.lib}\0${name}`).digest('hex').slice(0, 8)}`;
  }

  /** A /24 in 10.0.99.0 … 10.0.254.0 used by no other network and no host route. */
  private pickSubnet(): string {
    const taken = [...this.list().map((d) => parseCidr(d.subnet)), ...hostRoutes()];
    for (let third = 99; third < 255; third++) {
      const s = parseCidr(`10.0.${third}.0/24`);
      if (!taken.some((t) => overlaps(s, t))) return `10.0.${third}.0/24`;
    }
    throw new XvmError('conflict', 'no free 10.0.X.0/24 subnet left: give one with --subnet');
  }

  create(name: string, opts: { subnet?: string; vlan?: number; nat?: boolean } = {}): NetworkDef {
    NetworkManager.checkName(name);
    if (this.get(name)) throw new XvmError('conflict', `network '${name}' already exists`);
    if (opts.nat && (process.getuid?.() !== 0 || process.env.XVM_NET_UPLINK === '0')) {
      throw new XvmError('invalid', `NAT needs the network's host uplink: xvmd must run as root (and XVM_NET_UPLINK not be 0)`);
    }
    let subnetText = opts.subnet ?? this.pickSubnet();
    let subnet: Subnet;
    try {
      subnet = parseCidr(subnetText);
    } catch (e) {
      throw new XvmError('invalid', errorMessage(e));
    }
    subnetText = `${formatIp(subnet.net)}/${subnet.prefix}`;
    for (const d of this.list()) {
      if (overlaps(parseCidr(d.subnet), subnet)) throw new XvmError('conflict', `subnet ${subnetText} overlaps network '${d.name}' (${d.subnet})`);
    }
    const vlan = opts.vlan ?? 0;
    if (!Number.isInteger(vlan) || vlan < 0 || vlan > 4094) throw new XvmError('invalid', `bad VLAN ${vlan}: an integer from 1 to 4094 (0 = untagged)`);
    const def: NetworkDef = { name, subnet: subnetText, gateway: formatIp(subnet.net + 1), vlan, tap: this.tapName(name), ...(opts.nat ? { nat: true } : {}), created: new Date().toISOString() };
    fs.mkdirSync(this.libDir(name), { recursive: true });
    const tmp = `${this.defFile(name)}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(def, null, 2) + '\n');
    fs.renameSync(tmp, this.defFile(name));
    this.log.info('network created', { network: name, subnet: subnetText });
    return def;
  }

  /** The network a vif names; `default` is created on first use. */
  resolve(name: string): NetworkDef {
    const d = this.get(name);
    if (d) return d;
    if (name === DEFAULT_NETWORK) {
      try {
        return this.create(DEFAULT_NETWORK);
      } catch (e) {
        const again = this.get(name);
        if (again) return again;
        throw e;
      }
    }
    throw new XvmError('not_found', `no network '${name}' (create it with 'xvm net create ${name}')`);
  }

  async delete(name: string): Promise<void> {
    NetworkManager.checkName(name);
    if (!this.get(name)) throw new XvmError('not_found', `no network '${name}'`);
    await this.serial(name, async () => {
      if (this.isRunning(name)) {
        const st = (await this.request(name, { op: 'status' })) as { status: { ports: { id: string }[] } };
        const users = st.status.ports.filter((p) => p.id !== 'services' && p.id !== 'uplink').map((p) => p.id);
        if (users.length > 0) throw new XvmError('conflict', `network '${name}' is in use by ${users.join(', ')}; detach them first`);
        await this.stopSwitch(name);
      }
      // The switch removes its NAT table when it stops; one killed with SIGKILL could not.
      const def = this.get(name);
      if (def?.nat) natDown(def.tap ?? this.tapName(name));
      fs.rmSync(this.libDir(name), { recursive: true, force: true });
      fs.rmSync(this.runDir(name), { recursive: true, force: true });
    });
    this.log.info('network deleted', { network: name });
  }

  async info(name: string): Promise<NetworkInfo> {
    const def = this.get(name);
    if (!def) throw new XvmError('not_found', `no network '${name}'`);
    if (this.isRunning(name)) {
      const st = (await this.request(name, { op: 'status' })) as { status: Omit<NetworkInfo, keyof NetworkDef | 'running'> };
      return { ...def, running: true, pid: st.status.pid, uplink: st.status.uplink, ports: st.status.ports, fdb: st.status.fdb, leases: st.status.leases, services: st.status.services };
    }
    let leases: NetworkInfo['leases'] = [];
    try {
      leases = (JSON.parse(fs.readFileSync(path.join(this.libDir(name), 'leases.json'), 'utf8')) as { leases: NetworkInfo['leases'] }).leases;
    } catch {
      /* none yet */
    }
    return { ...def, running: false, pid: null, uplink: null, ports: [], fdb: [], leases, services: null };
  }

  // ---------------------------------------------------------------- the switch process

  isRunning(name: string): boolean {
    const pid = this.running.get(name)?.pid ?? readPidFile(this.pidFile(name));
    return pid !== undefined && pid > 0 && pidAlive(pid) && this.isSwitch(pid, name);
  }

  private isSwitch(pid: number, name: string): boolean {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return argv.some((a) => a.endsWith('net/main.js')) && argv.includes(this.runDir(name));
    } catch {
      return false;
    }
  }

  /** Re-adopt switches still running from before an xvmd restart. */
  adoptAll(): void {
    for (const d of this.list()) {
      const pid = readPidFile(this.pidFile(d.name));
      if (pid && pidAlive(pid) && this.isSwitch(pid, d.name)) {
        this.running.set(d.name, { pid, restarts: [], restarting: false, stopping: false });
        this.log.info('switch re-adopted', { network: d.name, pid });
      }
    }
  }

  private async ensureSwitch(def: NetworkDef): Promise<void> {
    if (this.isRunning(def.name)) {
      const pid = readPidFile(this.pidFile(def.name))!;
      if (!this.running.has(def.name)) this.running.set(def.name, { pid, restarts: [], restarting: false, stopping: false });
      return;
    }
    const pid = await this.spawnSwitch(def);
    this.running.set(def.name, { pid, restarts: [], restarting: false, stopping: false });
  }

  private async spawnSwitch(def: NetworkDef): Promise<number> {
    const run = this.runDir(def.name);
    fs.mkdirSync(run, { recursive: true, mode: 0o700 });
    fs.mkdirSync(this.libDir(def.name), { recursive: true });
    if (Buffer.byteLength(this.controlPath(def.name)) > 107) throw new XvmError('invalid', `the socket path ${this.controlPath(def.name)} is too long for a unix socket: use a shorter XVM_HOME`);
    const logFile = this.logFile(def.name);
    const argv = [SWITCH_MAIN, '--name', def.name, '--subnet', def.subnet, '--gateway', def.gateway, '--vlan', String(def.vlan), '--state', this.libDir(def.name), '--run', run];
    // The host uplink needs CAP_NET_ADMIN; XVM_NET_UPLINK=0 turns it off.
    if (process.getuid?.() === 0 && process.env.XVM_NET_UPLINK !== '0' && fs.existsSync('/dev/net/tun')) {
      argv.push('--tap', def.tap ?? this.tapName(def.name));
      if (def.nat) argv.push('--nat');
    }
    const child = spawnDetached(process.execPath, argv, logFile);
    const deadline = Date.now() + READY_TIMEOUT_MS;
    const ready = `XVM_NET_READY name=${def.name}`;
    for (;;) {
      const err = child.spawnError();
      if (err) throw new XvmError('internal', `cannot start the switch of network '${def.name}': ${err.message}`);
      const text = readLogFrom(logFile, child.logStart);
      if (text.includes(ready)) break;
      const exited = child.exited();
      if (exited) {
        const why = text.split('\n').filter((l) => l.startsWith('xvm-switch')).slice(-3).join('; ');
        throw new XvmError('internal', `the switch of network '${def.name}' failed (${exited}): ${why || 'see ' + logFile}`);
      }
      if (Date.now() > deadline) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        throw new XvmError('timeout', `the switch of network '${def.name}' did not get ready within ${READY_TIMEOUT_MS / 1000} s (see ${logFile})`);
      }
      await sleep(20);
    }
    fs.writeFileSync(this.pidFile(def.name), `${child.pid}\n`);
    deviceEvent('switch-start', { network: def.name, pid: child.pid });
    this.log.info('switch started', { network: def.name, pid: child.pid });
    return child.pid;
  }

  private async stopSwitch(name: string): Promise<void> {
    const r = this.running.get(name);
    if (r) r.stopping = true;
    const pid = r?.pid ?? readPidFile(this.pidFile(name));
    if (pid && pidAlive(pid) && this.isSwitch(pid, name)) {
      process.kill(pid, 'SIGTERM');
      const end = Date.now() + 5000;
      while (pidAlive(pid) && Date.now() < end) await sleep(20);
      if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
      deviceEvent('switch-stop', { network: name, pid });
    }
    this.running.delete(name);
    fs.rmSync(this.pidFile(name), { force: true });
    fs.rmSync(path.join(this.runDir(name), 'ports.json'), { force: true });
  }

  /** Restart a switch that died; its ports come back from ports.json and QEMU reconnects. */
  private supervise(): void {
    for (const [name, r] of this.running) {
      if (r.stopping || r.restarting || pidAlive(r.pid)) continue;
      const def = this.get(name);
      if (!def) continue;
      const now = Date.now();
      r.restarts = r.restarts.filter((t) => now - t < 60_000);
      if (r.restarts.length >= 5) {
        if (r.pid !== 0) this.log.error('switch keeps dying; not restarting it again', { network: name });
        r.pid = 0;
        continue;
      }
      r.restarting = true;
      r.restarts.push(now);
      this.log.warn('switch died; restarting it', { network: name, pid: r.pid });
      this.spawnSwitch(def)
        .then((pid) => (r.pid = pid))
        .catch((e) => this.log.error('switch restart failed', { network: name, error: errorMessage(e) }))
        .finally(() => (r.restarting = false));
    }
  }

  /** One request on the control socket. */
  request(name: string, req: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const c = net.createConnection(this.controlPath(name));
      let buf = '';
      const timer = setTimeout(() => {
        c.destroy();
        reject(new XvmError('timeout', `the switch of network '${name}' did not answer`));
      }, REQUEST_TIMEOUT_MS);
      c.setEncoding('utf8');
      c.on('connect', () => c.write(JSON.stringify(req) + '\n'));
      c.on('data', (d: string) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        clearTimeout(timer);
        c.end();
        try {
          const r = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
          if (r.ok === true) resolve(r);
          else reject(new XvmError('invalid', `network '${name}': ${String(r.error)}`));
        } catch (e) {
          reject(new XvmError('internal', `network '${name}': bad answer from the switch: ${errorMessage(e)}`));
        }
      });
      c.on('error', (e) => {
        clearTimeout(timer);
        reject(new XvmError('unavailable', `the switch of network '${name}' is not reachable: ${e.message}`));
      });
    });
  }

  // ---------------------------------------------------------------- ports

  /** Add a port (starting the switch if needed). */
  async addPort(network: string, port: NetPortState, lease?: { ip: string; expires: number; hostname?: string }): Promise<void> {
    const def = this.resolve(network);
    await this.serial(network, async () => {
      await this.ensureSwitch(def);
      await this.request(network, { op: 'add-port', port, ...(lease ? { lease } : {}) });
    });
  }

  /** Remove a port; the switch stops when it has no ports left. */
  async removePort(network: string, id: string): Promise<void> {
    if (!this.get(network)) return;
    await this.serial(network, async () => {
      if (!this.isRunning(network)) return;
      await this.request(network, { op: 'remove-port', id });
      const st = (await this.request(network, { op: 'status' })) as { status: { ports: { id: string }[] } };
      if (st.status.ports.every((p) => p.id === 'services' || p.id === 'uplink')) await this.stopSwitch(network);
    });
  }

  async hasPort(network: string, id: string): Promise<boolean> {
    if (!this.isRunning(network)) return false;
    const st = (await this.request(network, { op: 'status' })) as { status: { ports: { id: string }[] } };
    return st.status.ports.some((p) => p.id === id);
  }

  /** Start a capture: a stream of pcap bytes (ends after `count` frames / `durationMs`, or when destroyed). */
  capture(network: string, port: string | null, count: number, durationMs: number): Promise<Readable> {
    if (!this.get(network)) return Promise.reject(new XvmError('not_found', `no network '${network}'`));
    if (!this.isRunning(network)) return Promise.reject(new XvmError('conflict', `network '${network}' has no ports attached: nothing to capture`));
    return new Promise((resolve, reject) => {
      const c = net.createConnection(this.controlPath(network));
      let head = Buffer.alloc(0);
      const onData = (d: Buffer) => {
        head = Buffer.concat([head, d]);
        const nl = head.indexOf(10);
        if (nl < 0) return;
        c.off('data', onData);
        c.pause();
        let r: { ok: boolean; error?: string };
        try {
          r = JSON.parse(head.subarray(0, nl).toString('utf8')) as { ok: boolean; error?: string };
        } catch (e) {
          c.destroy();
          return reject(new XvmError('internal', `bad answer from the switch: ${errorMessage(e)}`));
        }
        if (!r.ok) {
          c.destroy();
          return reject(new XvmError('not_found', r.error ?? 'capture refused'));
        }
        const rest = head.subarray(nl + 1);
        if (rest.length > 0) c.unshift(rest);
        resolve(c);
      };
      c.on('connect', () => c.write(JSON.stringify({ op: 'capture', port, count, durationMs }) + '\n'));
      c.on('data', onData);
      c.once('error', (e) => reject(new XvmError('unavailable', `the switch of network '${network}' is not reachable: ${e.message}`)));
    });
  }
}

/** An IPv4 address of a network for a vif's ip=, checked against its subnet. */
export function checkVifIp(def: NetworkDef, ip: string): void {
  let n: number;
  try {
    n = parseIp(ip);
  } catch {
    throw new XvmError('invalid', `vif ip ${ip}: only IPv4 addresses are supported on xvm networks`);
  }
  if (!inSubnet(n, parseCidr(def.subnet))) throw new XvmError('invalid', `vif ip ${ip} is outside network '${def.name}' (${def.subnet})`);
  if (ip === def.gateway) throw new XvmError('invalid', `vif ip ${ip} is the gateway address of network '${def.name}'`);
}

