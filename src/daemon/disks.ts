// The disk provider: serves a domain's `disk = [...]` entries with our
// vhost-user-blk backend (src/devices/blk/main.ts), one process per disk.
//
// Backends run detached (own session, like QEMU) so an xvmd restart never
// takes a disk away from a running guest. Each one leaves in the domain's
// runtime folder:
//   blk-<vdev>.sock   the vhost-user socket QEMU connects (and reconnects) to
//   blk-<vdev>.pid    its pid
//   blk-<vdev>.json   what it serves (so adopt() can restart it after an xvmd restart)
// and logs to <log>/backends/<domain>-<vdev>.log.
//
// Supervision: a backend that dies while its domain runs is restarted on the
// same socket (QEMU reconnects; in-flight requests are replayed from the
// inflight memfd), at most MAX_RESTARTS times per RESTART_WINDOW_MS.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { XvmError, errorMessage } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';
import type { DiskSpec } from '../config/index.js';
import { pidAlive, readLogFrom, readPidFile, spawnDetached } from '../engine/process.js';
import { Storage } from '../storage/index.js';
import type { DeviceContext, DeviceCounters, DeviceProvider } from './domains.js';
import type { DomainStore } from './domain-store.js';
import type { Logger } from './log.js';
import { deviceEvent } from './device-log.js';
import { isEmulatedVdev } from '../engine/hvm-args.js';
import { BlkControlClient } from '../devices/blk/control.js';

const BACKEND_MAIN = fileURLToPath(new URL('../devices/blk/main.js', import.meta.url));
const RESTART_WINDOW_MS = 60_000;
const MAX_RESTARTS = 5;
const READY_TIMEOUT_MS = 20_000;
const POLL_MS = 250;
const VDEV_RE = /^(xvd|vd|sd)([a-z]{1,2})$|^hd[a-d]$/;

/** What one backend serves; written next to its pidfile. */
export interface BackendSpec {
  domain: string;
  uuid: string;
  vdev: string;
  image: string;
  format: 'raw' | 'qcow2';
  readOnly: boolean;
  queues: number;
  socket: string;
  /** Volume reference (pool/name) when the disk is a volume. */
  vol?: string;
  /** Hot-plugged (not in the domain's configuration). */
  hotplug?: boolean;
  /** Incoming migration on shared storage: the image is opened read-only until the source lets go of it (control `open`). */
  deferOpen?: boolean;
}

interface Backend {
  spec: BackendSpec;
  pid: number;
  runDir: string;
  restarts: number[];
  stopping: boolean;
  restarting: boolean;
}

/** Xen's device number of a vdev (xvda = 51712, hda = 768, sda = 2048), as in the store's vbd paths. */
export function vdevDevid(vdev: string): number {
  const m = VDEV_RE.exec(vdev);
  if (!m) throw new XvmError('invalid', `bad virtual device '${vdev}': use xvdX, vdX, sdX (X = a..z or aa..zz) or hda..hdd`);
  if (vdev.startsWith('hd')) return [768, 832, 5632, 5696][vdev.charCodeAt(2) - 97]!;
  const letters = m[2]!;
  const idx = letters.length === 1 ? letters.charCodeAt(0) - 97 : (letters.charCodeAt(0) - 96) * 26 + letters.charCodeAt(1) - 97;
  if (m[1] === 'sd') return idx < 16 ? 2048 + idx * 16 : (1 << 28) | (idx << 8);
  return idx < 16 ? 51712 + idx * 16 : (1 << 28) | (idx << 8);
}

/** Reads the first bytes of a file: qcow2 when it starts with "QFI\xfb". */
function probeFormat(file: string): 'raw' | 'qcow2' {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    const n = fs.readSync(fd, b, 0, 4, 0);
    return n === 4 && b.equals(Buffer.from([0x51, 0x46, 0x49, 0xfb])) ? 'qcow2' : 'raw';
  } finally {
    fs.closeSync(fd);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function files(runDir: string, vdev: string): { socket: string; pid: string; spec: string; metrics: string; control: string } {
  return {
    socket: path.join(runDir, `blk-${vdev}.sock`),
    control: path.join(runDir, `blk-${vdev}.ctl`),
    pid: path.join(runDir, `blk-${vdev}.pid`),
    spec: path.join(runDir, `blk-${vdev}.json`),
    metrics: path.join(runDir, `blk-${vdev}.metrics.json`),
  };
}

/** A backend's counters file (see src/devices/blk/main.ts --metrics) as DeviceCounters; null if unreadable. */
export function readBlkCounters(file: string, vdev: string): DeviceCounters | null {
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8')) as { device?: Record<string, number> };
    const d = m.device ?? {};
    const n = (k: string) => (typeof d[k] === 'number' && Number.isFinite(d[k]) ? d[k]! : 0);
    return {
      kind: 'disk',
      device: vdev,
      readBytes: n('readBytes'),
      writeBytes: n('writeBytes'),
      readOps: n('readRequests'),
      writeOps: n('writeRequests'),
      errors: n('invalidRequests') + n('ioErrors') + n('droppedRequests'),
    };
  } catch {
    return null;
  }
}

/** Is `pid` our backend serving `socket` (and not a recycled pid)? */
function isBackend(pid: number, socket: string): boolean {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.some((a) => a.endsWith('blk/main.js')) && argv.includes(socket);
  } catch {
    return false;
  }
}

let current: DiskProvider | undefined;
/** The provider xvmd registered (for the API routes: block-attach, snapshots). */
export function diskProvider(): DiskProvider | undefined {
  return current;
}

export interface DiskProviderOptions {
  paths: StatePaths;
  log: Logger;
  storage?: Storage;
}

export class DiskProvider implements DeviceProvider {
  readonly kind = 'disk' as const;
  readonly storage: Storage;
  private readonly paths: StatePaths;
  private readonly log: Logger;
  /** Where vbd entries go (the domains' store; set by the first domain context). */
  private store: DomainStore | null = null;
  /** Running backends by domain uuid, then vdev. */
  private readonly backends = new Map<string, Map<string, Backend>>();
  private timer: NodeJS.Timeout;

  constructor(opts: DiskProviderOptions) {
    this.paths = opts.paths;
    this.log = opts.log;
    this.storage = opts.storage ?? new Storage();
    this.timer = setInterval(() => this.supervise(), POLL_MS);
    this.timer.unref();
    current = this;
  }

  /** Incoming migrations on shared storage: uuid → the vdevs whose backends start with --defer-open. */
  private readonly deferred = new Map<string, Set<string>>();

  /** The next start of this domain's backends for `vdevs` opens their images only on the control channel's `open`. */
  deferOpen(uuid: string, vdevs: string[] | null): void {
    if (vdevs && vdevs.length) this.deferred.set(uuid, new Set(vdevs));
    else this.deferred.delete(uuid);
  }

  /** The control channel socket of a running disk's backend (src/devices/blk/control.ts). */
  controlSocket(uuid: string, vdev: string): string {
    const b = this.backends.get(uuid)?.get(vdev);
    if (!b) throw new XvmError('not_found', `no running disk ${vdev}`);
    return files(b.runDir, vdev).control;
  }

  /** The image was opened read-write after a hand-over: a restart of the backend opens it at once again. */
  handedOver(uuid: string, vdev: string): void {
    const b = this.backends.get(uuid)?.get(vdev);
    if (!b || !b.spec.deferOpen) return;
    const { deferOpen: _d, ...spec } = b.spec;
    b.spec = spec;
    fs.writeFileSync(files(b.runDir, vdev).spec, JSON.stringify(b.spec, null, 2) + '\n');
  }

  close(): void {
    clearInterval(this.timer);
    if (current === this) current = undefined;
  }

  /** The backends of a running domain (vdev → spec). */
  disksOf(uuid: string): BackendSpec[] {
    return [...(this.backends.get(uuid)?.values() ?? [])].map((b) => b.spec);
  }

  /** Which running domain uses this image file, and how. */
  users(image: string): { domain: string; uuid: string; vdev: string; readOnly: boolean }[] {
    const real = realpath(image);
    const out: { domain: string; uuid: string; vdev: string; readOnly: boolean }[] = [];
    for (const m of this.backends.values()) {
      for (const b of m.values()) if (realpath(b.spec.image) === real) out.push({ domain: b.spec.domain, uuid: b.spec.uuid, vdev: b.spec.vdev, readOnly: b.spec.readOnly });
    }
    return out;
  }

  /** Which running domain has this volume (pool/name) attached. */
  volumeUsers(pool: string, name: string): { domain: string; uuid: string; vdev: string; readOnly: boolean }[] {
    const out: { domain: string; uuid: string; vdev: string; readOnly: boolean }[] = [];
    for (const m of this.backends.values()) {
      for (const b of m.values()) if (b.spec.vol === `${pool}/${name}`) out.push({ domain: b.spec.domain, uuid: b.spec.uuid, vdev: b.spec.vdev, readOnly: b.spec.readOnly });
    }
    return out;
  }

  /** Turns a disk entry into what a backend serves; throws XvmError with a clear message. */
  async resolveDisk(domain: string, uuid: string, disk: Pick<DiskSpec, 'target' | 'vol' | 'vdev' | 'access' | 'format' | 'devtype'>, runDir: string, queues: number): Promise<BackendSpec> {
    vdevDevid(disk.vdev);
    if (disk.devtype === 'cdrom') {
      throw new XvmError('invalid', `domain '${domain}': disk ${disk.vdev} is a cdrom; pv domains have no cdrom device yet (use a read-only disk: '<path>,${disk.vdev},r')`);
    }
    let image: string;
    let format: 'raw' | 'qcow2' | undefined = disk.format as 'raw' | 'qcow2' | undefined;
    let vol: string | undefined;
    if (disk.vol !== undefined) {
      let r;
      try {
        r = await this.storage.resolve(disk.vol);
      } catch (e) {
        throw new XvmError('not_found', `domain '${domain}': disk ${disk.vdev}: ${errorMessage(e)}`);
      }
      if (r.readOnly && disk.access === 'rw') {
        throw new XvmError('conflict', `domain '${domain}': disk ${disk.vdev}: volume ${r.pool}/${r.name} is a read-only base of clones; attach it read-only or use a clone ('xvm vol clone ${r.pool}/${r.name} NEW')`);
      }
      image = r.path;
      format = r.format;
      vol = `${r.pool}/${r.name}`;
    } else if (disk.target !== undefined) {
      image = disk.target;
      let st: fs.Stats;
      try {
        st = fs.statSync(image);
      } catch (e) {
        throw new XvmError('not_found', `domain '${domain}': disk ${disk.vdev}: cannot open ${image}: ${(e as NodeJS.ErrnoException).code ?? errorMessage(e)}`);
      }
      if (!st.isFile() && !st.isBlockDevice()) throw new XvmError('invalid', `domain '${domain}': disk ${disk.vdev}: ${image} is neither a file nor a block device`);
      if (format === undefined) format = probeFormat(image);
    } else {
      throw new XvmError('invalid', `domain '${domain}': disk ${disk.vdev} has neither target nor vol`);
    }
    const readOnly = disk.access === 'ro';
    for (const u of this.users(image)) {
      if (u.uuid === uuid && u.vdev === disk.vdev) continue;
      if (!readOnly || !u.readOnly) {
        const by = u.uuid === uuid ? `this domain's ${u.vdev}` : `domain '${u.domain}' (${u.vdev})`;
        throw new XvmError('conflict', `domain '${domain}': disk ${disk.vdev}: ${vol ?? image} is already in use ${u.readOnly ? 'read-only' : 'read-write'} by ${by}; only read-only sharing is allowed`);
      }
    }
    return { domain, uuid, vdev: disk.vdev, image, format: format ?? 'raw', readOnly, queues, socket: files(runDir, disk.vdev).socket, ...(vol ? { vol } : {}) };
  }

  // ---------------------------------------------------------------- DeviceProvider

  async prepare(ctx: DeviceContext): Promise<string[]> {
    const cfg = ctx.config;
    const seen = new Set<string>();
    for (const d of cfg.disk) {
      if (seen.has(d.vdev)) throw new XvmError('invalid', `domain '${ctx.name}': virtual device ${d.vdev} is used by two disks`);
      seen.add(d.vdev);
    }
    this.store = ctx.store;
    const queues = Math.max(1, Math.min(cfg.vcpus, 4));
    const args: string[] = [];
    // The guest names its virtio disks vda, vdb, … in PCI order, and QEMU
    // gives the devices slots in argument order: so the devices go in vdev
    // order (xvda before xvdb whatever the list order) and xvda is vda.
    const disks = [...cfg.disk].sort((a, b) => vdevDevid(a.vdev) - vdevDevid(b.vdev));
    // Resolve and start one disk at a time: a started backend claims its
    // image at once, so a second disk (of this or another domain) on the same
    // image is refused by resolveDisk's in-use check.
    // An HVM domain's hdX / sdX / CD-ROM disks are emulated (hvm.ts); its vdX / xvdX ones are ours.
    for (const d of cfg.type === 'hvm' ? disks.filter((x) => !isEmulatedVdev(x.vdev, x.devtype)) : disks) {
      const spec = await this.resolveDisk(ctx.name, ctx.uuid, d, ctx.runDir, queues);
      if (this.deferred.get(ctx.uuid)?.has(spec.vdev)) spec.deferOpen = true;
      await this.startBackend(spec, ctx.runDir);
      args.push(...qemuDiskArgs(spec));
    }
    return args;
  }

  counters(ctx: DeviceContext): DeviceCounters[] {
    return readSpecs(ctx.runDir).flatMap((spec) => readBlkCounters(files(ctx.runDir, spec.vdev).metrics, spec.vdev) ?? []);
  }

  /** QEMU runs and the domain's store entry exists: the Xen-style vbd entries of its disks. */
  started(ctx: DeviceContext): void {
    this.store = ctx.store;
    if (ctx.domid === null) return;
    for (const b of this.backends.get(ctx.uuid)?.values() ?? []) this.publish(ctx.domid, b.spec);
  }

  /**
   * /local/domain/<domid>/device/vbd/<devid> and
   * /local/domain/0/backend/vbd/<domid>/<devid> for one disk, as Xen's
   * toolstack writes them (plus what our backend serves: socket, format,
   * volume). They go away with the domain (DomainStore.domainDown).
   */
  publish(domid: number, spec: BackendSpec): void {
    const devid = vdevDevid(spec.vdev);
    this.store?.deviceUp(
      domid,
      'vbd',
      devid,
      { 'virtual-device': String(devid), 'device-type': 'disk', state: '4' },
      {
        dev: spec.vdev,
        'device-type': 'disk',
        type: 'vhost-user-blk',
        params: spec.image,
        format: spec.format,
        mode: spec.readOnly ? 'r' : 'w',
        online: '1',
        removable: spec.hotplug ? '1' : '0',
        bootable: '1',
        state: '4',
        socket: spec.socket,
        ...(spec.vol ? { vol: spec.vol } : {}),
      },
    );
  }

  /** The vbd entries of a hot-unplugged disk go. */
  unpublish(domid: number, vdev: string): void {
    this.store?.deviceDown(domid, 'vbd', vdevDevid(vdev));
  }

  async adopt(ctx: DeviceContext): Promise<void> {
    this.store = ctx.store;
    for (const spec of readSpecs(ctx.runDir)) {
      const f = files(ctx.runDir, spec.vdev);
      const pid = readPidFile(f.pid);
      const b: Backend = { spec, pid: pid ?? 0, runDir: ctx.runDir, restarts: [], stopping: false, restarting: false };
      this.track(b);
      if (pid && pidAlive(pid) && isBackend(pid, spec.socket)) {
        this.log.info('disk backend re-adopted', { domain: ctx.name, vdev: spec.vdev, pid });
        deviceEvent('disk-adopt', { domain: ctx.name, device: spec.vdev, pid });
      } else {
        this.log.warn('disk backend gone while xvmd was away; restarting it', { domain: ctx.name, vdev: spec.vdev });
        await this.restart(b, 'gone while xvmd was not running');
      }
      if (ctx.domid !== null) this.publish(ctx.domid, spec);
    }
  }

  async release(ctx: DeviceContext): Promise<void> {
    const known = this.backends.get(ctx.uuid);
    const specs = new Map<string, BackendSpec>();
    for (const s of readSpecs(ctx.runDir)) specs.set(s.vdev, s);
    for (const b of known?.values() ?? []) specs.set(b.spec.vdev, b.spec);
    await Promise.all([...specs.values()].map((s) => this.stopBackend(ctx.uuid, ctx.runDir, s.vdev)));
    this.backends.delete(ctx.uuid);
  }

  // ---------------------------------------------------------------- backends

  private track(b: Backend): void {
    let m = this.backends.get(b.spec.uuid);
    if (!m) this.backends.set(b.spec.uuid, (m = new Map()));
    m.set(b.spec.vdev, b);
  }

  /** Starts a backend for `spec` and waits until it listens. */
  async startBackend(spec: BackendSpec, runDir: string): Promise<Backend> {
    const f = files(runDir, spec.vdev);
    if (Buffer.byteLength(f.socket) > 107) throw new XvmError('invalid', `the socket path ${f.socket} is too long for a unix socket (108 bytes max): use a shorter XVM_HOME`);
    fs.mkdirSync(runDir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(f.spec, JSON.stringify(spec, null, 2) + '\n');
    const b: Backend = { spec, pid: 0, runDir, restarts: [], stopping: false, restarting: false };
    // Claimed before the process exists: a second domain racing for the same image sees it.
    this.track(b);
    try {
      b.pid = await this.spawnBackend(spec, runDir);
    } catch (e) {
      this.backends.get(spec.uuid)?.delete(spec.vdev);
      fs.rmSync(f.spec, { force: true });
      throw e;
    }
    return b;
  }

  private logFile(spec: BackendSpec): string {
    return path.join(this.paths.log, 'backends', `${spec.domain}-${spec.vdev}.log`);
  }

  private async spawnBackend(spec: BackendSpec, runDir: string): Promise<number> {
    const f = files(runDir, spec.vdev);
    const logFile = this.logFile(spec);
    const argv = [BACKEND_MAIN, '--socket', spec.socket, '--image', spec.image, '--format', spec.format, '--queues', String(spec.queues), '--serial', spec.vdev, '--metrics', f.metrics, '--control', f.control];
    if (spec.readOnly) argv.push('--readonly');
    if (spec.deferOpen) argv.push('--defer-open');
    const child = spawnDetached(process.execPath, argv, logFile);
    const start = child.logStart;
    const deadline = Date.now() + READY_TIMEOUT_MS;
    const ready = `XVM_BLK_READY socket=${spec.socket}`;
    for (;;) {
      const spawnError = child.spawnError();
      const exited = child.exited();
      if (spawnError) throw new XvmError('internal', `cannot start the disk backend for ${spec.vdev}: ${spawnError.message}`);
      const text = readLogFrom(logFile, start);
      if (text.includes(ready)) break;
      if (exited) {
        const why = text.split('\n').filter((l) => l.startsWith('xvm-blk')).map((l) => l.replace(/^xvm-blk(\[\d+\])?: /, '')).slice(-3).join('; ');
        throw new XvmError('invalid', `domain '${spec.domain}': disk ${spec.vdev} (${spec.vol ?? spec.image}): the backend failed (${exited}): ${why || 'see ' + logFile}`);
      }
      if (Date.now() > deadline) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        throw new XvmError('timeout', `the disk backend for ${spec.vdev} did not get ready within ${READY_TIMEOUT_MS / 1000} s (see ${logFile})`);
      }
      await sleep(20);
    }
    fs.writeFileSync(f.pid, `${child.pid}\n`);
    deviceEvent('disk-backend-start', { domain: spec.domain, device: spec.vdev, backend: 'vhost-user-blk', pid: child.pid, socket: spec.socket, image: spec.image, format: spec.format, readOnly: spec.readOnly });
    return child.pid;
  }

  /** Stops one backend: SIGTERM, then SIGKILL after 5 s; removes its files. */
  async stopBackend(uuid: string, runDir: string, vdev: string): Promise<void> {
    const b = this.backends.get(uuid)?.get(vdev);
    if (b) b.stopping = true;
    const f = files(runDir, vdev);
    const pid = b?.pid || readPidFile(f.pid);
    let spec: BackendSpec | undefined = b?.spec;
    if (!spec) spec = readSpecs(runDir).find((s) => s.vdev === vdev);
    if (pid && pidAlive(pid) && (!spec || isBackend(pid, spec.socket))) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      const end = Date.now() + 5000;
      while (pidAlive(pid) && Date.now() < end) await sleep(20);
      if (pidAlive(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        const end2 = Date.now() + 2000;
        while (pidAlive(pid) && Date.now() < end2) await sleep(20);
      }
      deviceEvent('disk-backend-stop', { domain: spec?.domain, device: vdev, pid });
    }
    for (const p of [f.socket, f.pid, f.spec, f.control]) fs.rmSync(p, { force: true });
    this.backends.get(uuid)?.delete(vdev);
  }

  /** Periodic check: restarts backends that died while their domain runs. */
  private supervise(): void {
    for (const m of this.backends.values()) {
      for (const b of m.values()) {
        if (b.stopping || b.restarting || !b.pid) continue;
        if (pidAlive(b.pid)) continue;
        void this.restart(b, 'exited').catch((e) => this.log.error('restarting a disk backend failed', { domain: b.spec.domain, vdev: b.spec.vdev, error: errorMessage(e) }));
      }
    }
  }

  private async restart(b: Backend, why: string): Promise<void> {
    if (b.restarting || b.stopping) return;
    const now = Date.now();
    b.restarts = b.restarts.filter((t) => now - t < RESTART_WINDOW_MS);
    if (b.restarts.length >= MAX_RESTARTS) {
      if (b.pid !== 0) {
        this.log.error('disk backend keeps dying; not restarting it again', { domain: b.spec.domain, vdev: b.spec.vdev, restarts: b.restarts.length });
        deviceEvent('disk-backend-given-up', { domain: b.spec.domain, device: b.spec.vdev, restarts: b.restarts.length });
        b.pid = 0;
      }
      return;
    }
    b.restarting = true;
    b.restarts.push(now);
    const old = b.pid;
    this.log.warn('disk backend died; restarting it on the same socket', { domain: b.spec.domain, vdev: b.spec.vdev, pid: old, why });
    deviceEvent('disk-backend-restart', { domain: b.spec.domain, device: b.spec.vdev, oldPid: old, why });
    try {
      b.pid = await this.spawnBackend(b.spec, b.runDir);
      this.log.info('disk backend restarted', { domain: b.spec.domain, vdev: b.spec.vdev, pid: b.pid });
    } catch (e) {
      this.log.error('disk backend restart failed', { domain: b.spec.domain, vdev: b.spec.vdev, error: errorMessage(e) });
      // Try again at the next tick while the budget lasts.
      b.pid = old;
    } finally {
      b.restarting = false;
    }
  }

  /**
   * Stops a running disk's backend for a switch to another image file (a
   * snapshot's new top layer); supervision leaves it stopped until
   * resumeBackend(). The image is closed cleanly (flushed) when this returns.
   */
  async suspendBackend(uuid: string, vdev: string): Promise<void> {
    const b = this.backends.get(uuid)?.get(vdev);
    if (!b) throw new XvmError('not_found', `no running disk ${vdev}`);
    b.stopping = true;
    if (b.pid && pidAlive(b.pid)) {
      // QEMU must not reconnect to the old backend while it shuts down (a
      // connection dropped halfway through QEMU's vhost start leaves the
      // device dead): take the socket's name away first.
      fs.rmSync(b.spec.socket, { force: true });
      process.kill(b.pid, 'SIGTERM');
      const end = Date.now() + 10_000;
      while (pidAlive(b.pid) && Date.now() < end) await sleep(20);
      if (pidAlive(b.pid)) {
        process.kill(b.pid, 'SIGKILL');
        while (pidAlive(b.pid)) await sleep(20);
      }
    }
  }

  /**
   * Holds a running disk's requests and flushes its image (the backend's
   * control socket, src/devices/blk/control.ts), for a switch in place to
   * a snapshot's new top layer: QEMU keeps its connection and never
   * notices. Returns null when the backend has no control socket (started
   * by an older xvmd): then only suspendBackend/resumeBackend can switch it.
   */
  async freezeBackend(uuid: string, vdev: string): Promise<FrozenDisk | null> {
    const b = this.backends.get(uuid)?.get(vdev);
    if (!b) throw new XvmError('not_found', `no running disk ${vdev}`);
    const ctl = files(b.runDir, vdev).control;
    if (!fs.existsSync(ctl)) return null;
    const c = await BlkControlClient.connect(ctl, `disk ${vdev}`);
    try {
      await c.request({ op: 'freeze' });
    } catch (e) {
      c.close(); // the backend thaws when its client goes away
      throw new XvmError('internal', `disk ${vdev}: cannot hold its requests for the switch: ${errorMessage(e)}`);
    }
    let thawed = false;
    return {
      switchTo: async (image: string) => {
        const format = probeFormat(image);
        await c.request({ op: 'switch', image, format }, undefined, 60_000);
        b.spec = { ...b.spec, image, format };
        fs.writeFileSync(files(b.runDir, vdev).spec, JSON.stringify(b.spec, null, 2) + '\n');
      },
      thaw: async () => {
        if (thawed) return;
        thawed = true;
        try {
          await c.request({ op: 'thaw' });
        } finally {
          c.close();
        }
      },
    };
  }

  /** Starts a suspended backend again on the same socket, on `image` if given (QEMU reconnects). */
  async resumeBackend(uuid: string, vdev: string, image?: string): Promise<void> {
    const b = this.backends.get(uuid)?.get(vdev);
    if (!b) throw new XvmError('not_found', `no running disk ${vdev}`);
    if (image !== undefined) {
      b.spec = { ...b.spec, image };
      fs.writeFileSync(files(b.runDir, vdev).spec, JSON.stringify(b.spec, null, 2) + '\n');
    }
    try {
      b.pid = await this.spawnBackend(b.spec, b.runDir);
    } finally {
      b.stopping = false;
    }
  }
}

/** A disk whose backend holds the guest's requests (freezeBackend). */
export interface FrozenDisk {
  /** Close the image and serve this one instead (same size); the backend stays on the old one if this throws. */
  switchTo(image: string): Promise<void>;
  /** Let requests flow again (also what the backend does if xvmd goes away). */
  thaw(): Promise<void>;
}

/** The QEMU arguments that connect a backend's socket to a vhost-user-blk-pci device. */
export function qemuDiskArgs(spec: BackendSpec): string[] {
  return [
    '-chardev', `socket,id=vhu-${spec.vdev},path=${spec.socket},reconnect=1`,
    '-device', `vhost-user-blk-pci,chardev=vhu-${spec.vdev},num-queues=${spec.queues},id=${spec.vdev}`,
  ];
}

function readSpecs(runDir: string): BackendSpec[] {
  let names: string[];
  try {
    names = fs.readdirSync(runDir).filter((n) => /^blk-[^.]+\.json$/.test(n)); // not blk-X.metrics.json
  } catch {
    return [];
  }
  const out: BackendSpec[] = [];
  for (const n of names) {
    try {
      const s = JSON.parse(fs.readFileSync(path.join(runDir, n), 'utf8')) as BackendSpec;
      if (typeof s.vdev === 'string' && typeof s.socket === 'string' && typeof s.image === 'string') out.push(s);
    } catch {
      /* unreadable: ignored */
    }
  }
  return out;
}


function realpath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}
