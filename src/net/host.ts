// One network's process: the switch, its services (DHCP, gateway
// responder), its vhost-user-net ports and the control socket xvmd talks to.
// Frames move between ports inside this process: xvmd is only asked to add
// and remove ports, read counters and start captures.
//
// Control protocol (unix socket, one JSON object per line, one reply line):
//   {"op":"add-port","port":{id,socket,mac,vlan,trunk?,ip?,kind?}} → {"ok":true}
//        kind "vhost-user" (default: virtio-net) or "stream" (emulated NIC, stream-port.ts)
//   {"op":"remove-port","id":…}                         → {"ok":true,"removed":bool}
//   {"op":"status"}                                     → {"ok":true,"status":{…}}
//   {"op":"capture","port":ID|null,"count":N,"durationMs":MS}
//        → {"ok":true} and then raw pcap bytes until the capture ends (the socket closes)
// Errors: {"ok":false,"error":"…"}.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { VhostUserBackend } from '../vhost/index.js';
import { NetDevice } from '../devices/net/device.js';
import { parsePortStates, savePortStates, type NetPortState } from '../devices/net/persist.js';
import { formatIp, formatMac, parseIp, parseMac, type Subnet } from './frame.js';
import { LeaseStore } from './dhcp.js';
import { pcapHeader, pcapRecord, tagged } from './pcap.js';
import { NetworkServices, SERVICES_PORT } from './services.js';
import { MAX_FRAME, Switch, type FrameTap } from './switch.js';
import { TapUplink, UPLINK_PORT } from './uplink.js';
import { StreamPort } from './stream-port.js';
import { natDown, natUp } from './nat.js';
import { Announcer } from './announce.js';

export interface NetworkHostOptions {
  name: string;
  subnet: Subnet;
  gateway: number;
  /** Native VLAN (the services live on it). */
  vlan: number;
  /** The network's own directory under the state root (leases). */
  stateDir: string;
  /** Runtime directory (control socket, port list). */
  runDir: string;
  /** Name of a TAP interface to create as the host uplink (needs root). */
  tap?: string;
  /** Masquerade the subnet out of the host through the TAP (nat.ts). */
  nat?: boolean;
  log: (msg: string) => void;
}

interface HostedPort {
  state: NetPortState;
  /** Whether QEMU is connected to the port's socket. */
  connected(): boolean;
  /** The port's transport metrics (virtio device or stream). */
  metrics(): unknown;
  close(): Promise<void>;
}

const MAX_LINE = 64 * 1024;
/**
 * Receive interrupt moderation (ms; XVM_NET_RX_COALESCE_MS, 0 = off): at
 * most one receive interrupt per interval per port, or sooner once 64
 * buffers wait. A lone frame (a ping) is signalled at once; a stream is
 * signalled in batches, so the guest takes several frames per interrupt,
 * merges them (GRO) and acks less often.
 * See docs/network.md, Benchmark.
 */
const RX_NOTIFY_INTERVAL_MS = Math.max(0, Math.min(100, Number(process.env.XVM_NET_RX_COALESCE_MS ?? '4') || 0));
/** XVM_NET_OFFLOADS=0: offer the guests no checksum/segmentation offloads (for comparisons). */
const OFFLOADS = process.env.XVM_NET_OFFLOADS !== '0';

export class NetworkHost {
  readonly sw: Switch;
  readonly services: NetworkServices;
  readonly leases: LeaseStore;
  private readonly ports = new Map<string, HostedPort>();
  private control: net.Server | null = null;
  private ageTimer: NodeJS.Timeout;
  private captures = 0;
  readonly servicesMac: number;
  uplink: TapUplink | null = null;
  /** Whether the NAT table is in place. */
  nat = false;

  constructor(readonly o: NetworkHostOptions) {
    this.sw = new Switch(o.name);
    this.leases = new LeaseStore(path.join(o.stateDir, 'leases.json'));
    // A locally administered MAC for the services, fixed per network name.
    let h = 0x5a17;
    for (const ch of o.name) h = (Math.imul(h, 31) + ch.charCodeAt(0)) >>> 0;
    const mac = 0x020000000000 + (h % 0x100000000);
    this.servicesMac = mac;
    this.services = new NetworkServices(this.sw, {
      subnet: o.subnet,
      gateway: o.gateway,
      mac,
      leases: this.leases,
      answerGateway: true,
      vlan: o.vlan,
      reserved: () => this.reservedIps(),
      onLease: (l) => o.log(`lease ${l.ip} → ${l.mac}${l.hostname ? ` (${l.hostname})` : ''}`),
    });
    if (o.tap !== undefined) {
      try {
        this.uplink = new TapUplink(o.tap, this.sw, { gateway: o.gateway, subnet: o.subnet, vlan: o.vlan });
        // The host's own stack now holds the gateway address and answers for it.
        this.services.answerGateway = false;
        o.log(`uplink ${o.tap} up with ${formatIp(o.gateway)}/${o.subnet.prefix}`);
      } catch (e) {
        o.log(`no uplink: ${(e as Error).message}`);
      }
    }
    if (o.nat) {
      if (this.uplink === null) o.log('no NAT: the network has no host uplink (xvmd must run as root)');
      else {
        try {
          natUp(this.uplink.name, o.subnet);
          this.nat = true;
          o.log(`NAT: ${formatIp(o.subnet.net)}/${o.subnet.prefix} masqueraded out of the host`);
        } catch (e) {
          o.log(`no NAT: ${(e as Error).message.split('\n')[0]}`);
        }
      }
    }
    this.ageTimer = setInterval(() => this.sw.expire(), 30_000);
    this.ageTimer.unref();
  }

  get controlPath(): string {
    return path.join(this.o.runDir, 'control.sock');
  }
  private get portsFile(): string {
    return path.join(this.o.runDir, 'ports.json');
  }

  private *reservedIps(): Iterable<number> {
    for (const p of this.ports.values()) if (p.state.ip) yield parseIp(p.state.ip);
  }

  /** Re-create the ports of a previous run (QEMU reconnects to their sockets). */
  async restorePorts(): Promise<void> {
    let states: NetPortState[] = [];
    try {
      states = parsePortStates(JSON.parse(fs.readFileSync(this.portsFile, 'utf8')));
    } catch {
      return;
    }
    for (const s of states) {
      try {
        this.addPort(s, false);
        this.o.log(`port ${s.id} restored on ${s.socket}`);
      } catch (e) {
        this.o.log(`port ${s.id} not restored: ${(e as Error).message}`);
      }
    }
    this.savePorts();
  }

  private savePorts(): void {
    const tmp = `${this.portsFile}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(savePortStates([...this.ports.values()].map((p) => p.state)), null, 2) + '\n');
    fs.renameSync(tmp, this.portsFile);
  }

  addPort(s: NetPortState, save = true): void {
    if (this.ports.has(s.id)) throw new Error(`port ${s.id} exists`);
    if (s.id === SERVICES_PORT || s.id === UPLINK_PORT) throw new Error(`port name ${s.id} is reserved`);
    const mac = parseMac(s.mac);
    if (this.sw.portByMac(mac)) throw new Error(`MAC ${s.mac} is already on network ${this.o.name}`);
    if (s.ip !== undefined) parseIp(s.ip);
    if (Buffer.byteLength(s.socket) > 107) throw new Error(`socket path ${s.socket} is too long`);
    const log = (m: string) => this.o.log(`${s.id}: ${m}`);
    // An IP is locked from the config, or from an unexpired lease of this MAC.
    let ip = s.ip !== undefined ? parseIp(s.ip) : undefined;
    const lease = this.leases.get(mac);
    if (ip === undefined && lease !== undefined && lease.expires > Date.now()) ip = parseIp(lease.ip);
    const hosted = s.kind === 'stream' ? this.streamPort(s, mac, ip, log) : this.vhostPort(s, mac, ip, log);
    this.ports.set(s.id, hosted);
    if (save) this.savePorts();
  }

  /** A virtio-net port: the switch is the vhost-user back-end of QEMU's virtio-net-pci. */
  private vhostPort(s: NetPortState, mac: number, ip: number | undefined, log: (m: string) => void): HostedPort {
    const macBuf = Buffer.alloc(6);
    macBuf.writeUIntBE(mac, 0, 6);
    // After a migration QEMU's SEND_RARP makes the port announce the guest (announce.ts).
    const announcer = new Announcer({ mac, trunk: s.trunk, send: (f) => this.sw.input(s.id, f) });
    const onAnnounce = () => {
      if (Date.now() - announcer.stats.lastAt > 5000) log(`announcing ${s.mac} (RARP: QEMU's SEND_RARP after a migration or restore)`);
      announcer.announce();
    };
    const device = new NetDevice({ mac: macBuf, maxFrame: MAX_FRAME, onFrame: (f, off) => this.sw.input(s.id, f, off), onAnnounce, offloads: OFFLOADS, log });
    this.sw.addPort({ id: s.id, mac, vlan: s.vlan, trunk: s.trunk, ip }, device);
    const backend = new VhostUserBackend(device, { socketPath: s.socket, log });
    device.rxRing = backend.vrings[0]!;
    device.rxRing.notifyIntervalMs = RX_NOTIFY_INTERVAL_MS;
    backend.on('connect', () => log('front-end connected'));
    backend.on('disconnect', () => log('front-end disconnected'));
    try {
      fs.rmSync(s.socket, { force: true });
      backend.listen();
    } catch (e) {
      this.sw.removePort(s.id);
      throw e;
    }
    // The rings' own counters (kicks from the guest, interrupts to it) next to the device's.
    const rings = () => ({ rx: { ...backend.vrings[0]!.stats }, tx: { ...backend.vrings[1]!.stats } });
    return {
      state: s,
      connected: () => backend.connected,
      metrics: () => ({ ...(device.metrics.toJSON() as object), rings: rings(), announce: { ...announcer.stats } }),
      close: () => {
        announcer.close();
        return backend.close();
      },
    };
  }

  /** An emulated NIC's port: QEMU's `-netdev stream` connects to the socket the switch listens on. */
  private streamPort(s: NetPortState, mac: number, ip: number | undefined, log: (m: string) => void): HostedPort {
    const port = new StreamPort({ socketPath: s.socket, onFrame: (f) => this.sw.input(s.id, f), log });
    this.sw.addPort({ id: s.id, mac, vlan: s.vlan, trunk: s.trunk, ip }, port);
    try {
      port.listen();
    } catch (e) {
      this.sw.removePort(s.id);
      throw e;
    }
    return { state: s, connected: () => port.connected, metrics: () => ({ stream: { ...port.metrics } }), close: () => port.close() };
  }

  async removePort(id: string): Promise<boolean> {
    const p = this.ports.get(id);
    if (!p) return false;
    this.ports.delete(id);
    this.sw.removePort(id);
    this.savePorts();
    await p.close();
    return true;
  }

  status(): unknown {
    return {
      name: this.o.name,
      subnet: `${formatIp(this.o.subnet.net)}/${this.o.subnet.prefix}`,
      gateway: formatIp(this.o.gateway),
      servicesMac: formatMac(this.servicesMac),
      uplink: this.uplink ? { name: this.uplink.name, mac: formatMac(this.uplink.mac), readFrames: this.uplink.readFrames, writeDropped: this.uplink.writeDropped, nat: this.nat } : null,
      pid: process.pid,
      ports: this.sw.portInfo().map((p) => {
        const h = this.ports.get(p.id);
        return { ...p, kind: h?.state.kind ?? 'vhost-user', connected: h?.connected() ?? null, device: h?.metrics() ?? null };
      }),
      fdb: this.sw.fdbEntries(),
      leases: this.leases.all(),
      services: this.services.stats,
      captures: this.captures,
      orphanFrames: this.sw.orphanFrames,
    };
  }

  listen(): void {
    fs.mkdirSync(this.o.runDir, { recursive: true, mode: 0o700 });
    fs.rmSync(this.controlPath, { force: true });
    this.control = net.createServer((c) => this.onControl(c));
    this.control.listen(this.controlPath);
  }

  private onControl(c: net.Socket): void {
    let buf = '';
    let done = false;
    c.setEncoding('utf8');
    c.on('error', () => undefined);
    c.on('data', (d: string) => {
      if (done) return;
      buf += d;
      if (buf.length > MAX_LINE) {
        done = true;
        c.end(JSON.stringify({ ok: false, error: 'request too long' }) + '\n');
        return;
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let req: Record<string, unknown>;
      try {
        req = JSON.parse(line) as Record<string, unknown>;
        if (typeof req !== 'object' || req === null) throw new Error('not an object');
      } catch (e) {
        c.write(JSON.stringify({ ok: false, error: `bad request: ${(e as Error).message}` }) + '\n');
        return;
      }
      if (req.op === 'capture') {
        done = true;
        this.capture(c, req);
        return;
      }
      this.request(req).then(
        (r) => c.write(JSON.stringify({ ok: true, ...r }) + '\n'),
        (e: unknown) => c.write(JSON.stringify({ ok: false, error: (e as Error).message }) + '\n'),
      );
    });
  }

  private async request(req: Record<string, unknown>): Promise<Record<string, unknown>> {
    switch (req.op) {
      case 'add-port': {
        const [s] = parsePortStates({ version: 1, ports: [req.port] });
        // A lease that moves with a migrating guest (its address on the source's network of the same name).
        const l = req.lease as { ip?: unknown; expires?: unknown; hostname?: unknown } | undefined;
        if (l && typeof l.ip === 'string' && typeof l.expires === 'number' && l.expires > Date.now()) {
          const ip = parseIp(l.ip);
          if ((ip & this.o.subnet.mask) >>> 0 === this.o.subnet.net && !this.leases.all().some((x) => x.ip === l.ip && parseMac(x.mac) !== parseMac(s!.mac) && x.expires > Date.now())) {
            this.leases.set(parseMac(s!.mac), { mac: s!.mac, ip: l.ip, expires: l.expires, ...(typeof l.hostname === 'string' ? { hostname: l.hostname } : {}) });
          }
        }
        this.addPort(s!);
        return {};
      }
      case 'remove-port':
        return { removed: await this.removePort(String(req.id)) };
      case 'status':
        return { status: this.status() };
      default:
        throw new Error(`unknown op ${JSON.stringify(req.op)}`);
    }
  }

  private capture(c: net.Socket, req: Record<string, unknown>): void {
    const port = req.port === null || req.port === undefined ? null : String(req.port);
    if (port !== null && !this.sw.port(port)) {
      c.end(JSON.stringify({ ok: false, error: `no port ${port} on network ${this.o.name}` }) + '\n');
      return;
    }
    const count = Number(req.count ?? 0);
    const durationMs = Number(req.durationMs ?? 0);
    let seen = 0;
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const stop = () => {
      if (stopped) return;
      stopped = true;
      this.sw.removeTap(tap);
      if (timer) clearTimeout(timer);
      this.captures--;
      c.end();
    };
    const tap: FrameTap = {
      port,
      frame: (f, vlan) => {
        // Slow readers must not make the switch hold frames: drop the capture's backlog instead.
        if (c.writableLength < 8 << 20) c.write(pcapRecord(tagged(f, vlan), Date.now()));
        if (count > 0 && ++seen >= count) stop();
      },
    };
    c.write(JSON.stringify({ ok: true }) + '\n');
    c.write(pcapHeader());
    this.captures++;
    this.sw.addTap(tap);
    if (durationMs > 0) timer = setTimeout(stop, durationMs);
    c.on('close', stop);
  }

  async close(): Promise<void> {
    clearInterval(this.ageTimer);
    this.control?.close();
    fs.rmSync(this.controlPath, { force: true });
    await Promise.all([...this.ports.values()].map((p) => p.close()));
    if (this.nat && this.uplink) natDown(this.uplink.name);
    this.uplink?.close();
  }
}
