// The domain manager: the state machine of every domain, the QEMU process
// behind each running one, and the policies (on_poweroff / on_reboot /
// on_crash) applied when a guest stops.
//
//   defined ──start──▶ running ⇄ paused
//                        │  guest poweroff / destroy ──▶ shutdown
//                        │  guest panic / QEMU died    ──▶ crashed
//   shutdown, crashed ──start──▶ running
//
// QEMU runs detached from xvmd (own session) and is never stopped by an xvmd
// restart: on start-up the manager re-adopts every domain whose QEMU is still
// alive, through its pidfile and QMP socket.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import { XvmError, errorMessage } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';
import { validateDomainConfig, type DomainConfig } from '../config/index.js';
import { READY_BANNER } from '../image/index.js';
import { DefaultImageCache } from './image-cache.js';
import { resolveAccel, type Accel } from '../engine/accel.js';
import { buildQemuArgs, runtimeFiles, QEMU_BINARY } from '../engine/qemu-args.js';
import { QmpClient, type QmpEvent } from '../engine/qmp.js';
import { cpuSeconds, isDomainQemu, pidAlive, readPidFile, rssKiB, spawnDetached } from '../engine/process.js';
import { ConsoleService, makeFifo } from './console.js';
import { DomainStore, writeFileAtomic, type DomainRecord, type DomainState } from './domain-store.js';
import type { Store } from '../store/index.js';
import type { Logger } from './log.js';
import { deviceEvent } from './device-log.js';

export type { DomainState } from './domain-store.js';

/** What xvmd asked for when it last acted on a running domain. */
type Intent = 'shutdown' | 'destroy' | 'restart' | undefined;

export interface Runtime {
  domid: number;
  pid: number;
  accel: Accel;
  accelReason: string;
  startedAt: string;
  argv: string[];
  kernel: string;
  initrd?: string;
  cmdline: string;
  /** Balloon target after `xvm mem-set`, MiB (absent: the config's memory). */
  memTargetMiB?: number;
  /** vCPUs plugged after `xvm vcpu-set` (absent: the config's vcpus). */
  vcpusOnline?: number;
}

export interface DomainInfo {
  name: string;
  uuid: string;
  domid: number | null;
  state: DomainState;
  /** QEMU kept alive after the guest stopped (on_* = preserve). */
  preserved: boolean;
  memory: number;
  vcpus: number;
  cpuTime: number;
  rssKiB: number;
  pid: number | null;
  accel: Accel | null;
  accelReason: string | null;
  startedAt: string | null;
  /** When the guest printed its ready banner since the last (re)boot, if it did. */
  readyAt: string | null;
  reboots: number;
  lastExit: { reason: string; at: string } | null;
  consoleLog: string;
  config: DomainConfig;
}

/** What a device provider (disks, NICs) gets to know about a domain. */
export interface DeviceContext {
  name: string;
  uuid: string;
  config: DomainConfig;
  /** The domain's runtime folder (sockets, pidfiles); emptied at every start. */
  runDir: string;
  log: Logger;
  /** The domain id of this run (assigned before prepare), null when the domain is not running. */
  domid: number | null;
  /** For device entries in the store (DomainStore.deviceUp). */
  store: DomainStore;
}

/**
 * Device providers serve a domain's `disk` / `vif` entries with their own
 * backends (vhost-user processes, switch ports) and tell QEMU how to reach
 * them. Each lives in its own module and is registered by xvmd's main.
 */
export interface DeviceProvider {
  /** Which config key it serves ('hvm': firmware, emulated disks, screen of type = "hvm" domains). */
  readonly kind: 'disk' | 'vif' | 'hvm';
  /** Before QEMU starts: start backends; returns QEMU arguments. Throw XvmError on bad config. */
  prepare(ctx: DeviceContext): Promise<string[]>;
  /** After QEMU started and the domain's store entry exists: publish device entries (optional). */
  started?(ctx: DeviceContext): void;
  /** After an xvmd restart, for a domain whose QEMU still runs: take the backends back. */
  adopt(ctx: DeviceContext): Promise<void>;
  /** After QEMU is gone (any reason) or a failed start: stop backends, free resources. */
  release(ctx: DeviceContext): Promise<void>;
  /** Cumulative I/O counters of a running domain's devices (xvm top, /metrics). */
  counters?(ctx: DeviceContext): DeviceCounters[];
}

/** One device's counters, cumulative since its backend started (bytes and requests). */
export interface DeviceCounters {
  kind: 'disk' | 'vif';
  /** vdev (xvda) or vif name (vif0). */
  device: string;
  /** Disks: read from / written to the disk. NICs: rx = received by the guest, tx = sent by it. */
  readBytes?: number;
  writeBytes?: number;
  readOps?: number;
  writeOps?: number;
  rxBytes?: number;
  txBytes?: number;
  rxPackets?: number;
  txPackets?: number;
  /** Requests or frames refused or dropped (malformed, spoofed, errors). */
  errors?: number;
}

const RESTART_WINDOW_MS = 60_000;
const MAX_RESTARTS_IN_WINDOW = 5;

export type { Domain };

class Domain {
  rec: DomainRecord;
  runtime: Runtime | undefined;
  qmp: QmpClient | undefined;
  console: ConsoleService;
  preserved = false;
  intent: Intent;
  readyAt: string | undefined;
  reboots = 0;
  lastReset = 0;
  restarts: number[] = [];
  /** Tail of console output, searched for the ready banner across chunk edges. */
  bannerScan = '';
  bannerWatch: ((chunk: Buffer) => void) | undefined;
  /** The settling of the QEMU run `settlingFor` after it ended (see onQemuGone). */
  settling: Promise<void> | undefined;
  settlingFor: Runtime | undefined;
  /** Serialises lifecycle operations on this domain. */
  busy: Promise<unknown> = Promise.resolve();

  constructor(rec: DomainRecord, consoleLog: string) {
    this.rec = rec;
    this.console = new ConsoleService(consoleLog);
  }
  get name(): string {
    return this.rec.config.name;
  }
  get uuid(): string {
    return this.rec.config.uuid;
  }
  get state(): DomainState {
    return this.rec.status.state;
  }
}

export class DomainManager extends EventEmitter {
  private domains = new Map<string, Domain>();
  private store: DomainStore;
  private paths: StatePaths;
  private log: Logger;
  readonly images: DefaultImageCache;
  private providers: DeviceProvider[] = [];

  constructor(paths: StatePaths, log: Logger, store: Store) {
    super();
    this.setMaxListeners(0);
    this.paths = paths;
    this.log = log;
    this.store = new DomainStore(store, paths.lib, log);
    this.images = new DefaultImageCache(paths.images);
  }

  /** Registers the backend provider of a device kind (see DeviceProvider). */
  addProvider(p: DeviceProvider): void {
    this.providers.push(p);
  }

  private deviceContext(d: Domain, domid: number | null = d.runtime?.domid ?? null): DeviceContext {
    return { name: d.name, uuid: d.uuid, config: d.rec.config, runDir: this.runDir(d.uuid), log: this.log, domid, store: this.store };
  }

  private async releaseDevices(d: Domain): Promise<void> {
    for (const p of this.providers) {
      await p.release(this.deviceContext(d)).catch((e) => this.log.error('releasing devices failed', { domain: d.name, kind: p.kind, error: errorMessage(e) }));
      deviceEvent('backend-release', { domain: d.name, kind: p.kind });
    }
  }

  private runDir(uuid: string): string {
    return path.join(this.paths.run, 'domains', uuid);
  }

  private consoleLog(name: string): string {
    return path.join(this.paths.log, 'console', `${name}.log`);
  }

  /** Loads definitions and re-adopts every domain whose QEMU still runs. */
  async load(): Promise<void> {
    const { records, errors } = await this.store.loadAll();
    for (const e of errors) this.log.error('domain definition unreadable, skipped', { error: e });
    for (const rec of records) {
      const d = new Domain(rec, this.consoleLog(rec.config.name));
      this.domains.set(d.name, d);
      await this.adopt(d);
    }
    this.store.pruneRuntime([...this.domains.values()].flatMap((d) => (d.runtime ? [d.runtime.domid] : [])));
  }

  /** Resolves once every store write made so far is durable (the API answers after it). */
  flushStore(): Promise<void> {
    return this.store.flush();
  }

  private async adopt(d: Domain): Promise<void> {
    const files = runtimeFiles(this.runDir(d.uuid));
    let runtime: Runtime | undefined;
    try {
      runtime = JSON.parse(fs.readFileSync(files.runtime, 'utf8')) as Runtime;
    } catch {
      runtime = undefined;
    }
    if (!runtime) {
      if (d.state === 'running' || d.state === 'paused') {
        this.setState(d, 'crashed', 'its QEMU runtime record was lost while xvmd was not running');
      }
      return;
    }
    const pid = readPidFile(files.pid) ?? runtime.pid;
    if (!pidAlive(pid) || !isDomainQemu(pid, d.uuid)) {
      await this.releaseDevices(d);
      this.cleanupRuntime(d);
      if (d.state === 'running' || d.state === 'paused' || d.state === 'shutdown' || d.state === 'crashed') {
        this.setState(d, 'crashed', 'QEMU exited while xvmd was not running');
      }
      return;
    }
    d.runtime = { ...runtime, pid };
    this.store.domainUp(d.rec, runtime.domid, this.runtimeExtras(d));
    try {
      d.console.attach(files.consoleOut);
      this.watchConsole(d);
      await this.connectQmp(d, files.qmp);
      d.console.attachInput(files.consoleIn);
      for (const p of this.providers) {
        await p.adopt(this.deviceContext(d));
        deviceEvent('backend-adopt', { domain: d.name, kind: p.kind });
      }
      const status = await d.qmp!.execute<{ status: string; running: boolean }>('query-status');
      this.log.info('re-adopted running domain', { domain: d.name, pid, status: status.status });
      deviceEvent('qemu-adopt', { domain: d.name, domid: runtime.domid, pid });
      await this.reconcileStatus(d, status.status);
    } catch (e) {
      this.log.error('could not re-adopt domain', { domain: d.name, error: errorMessage(e) });
    }
  }

  /** Maps QEMU's run state to ours after an adoption and applies pending policies. */
  private async reconcileStatus(d: Domain, status: string): Promise<void> {
    switch (status) {
      case 'running':
        this.setState(d, 'running');
        break;
      case 'shutdown':
        await this.onGuestStop(d, 'poweroff');
        break;
      case 'guest-panicked':
        await this.onGuestStop(d, 'crash');
        break;
      case 'inmigrate':
        // A restore or incoming migration that xvmd's exit interrupted: that
        // QEMU holds no guest yet (src/migrate); end it.
        d.intent = 'destroy';
        this.pendingStop.set(d.name, { state: 'shutdown', reason: 'a restore or incoming migration was interrupted when xvmd stopped' });
        await this.quit(d);
        break;
      default:
        // paused by the user, or in a preserved shutdown/crash: keep what we recorded
        if (d.state === 'shutdown' || d.state === 'crashed') d.preserved = true;
        else this.setState(d, 'paused');
    }
  }

  // ---- queries -------------------------------------------------------

  get(name: string): Domain {
    const d = this.domains.get(name);
    if (!d) throw new XvmError('not_found', `no domain named '${name}' (see 'xvm list')`);
    return d;
  }

  has(name: string): boolean {
    return this.domains.has(name);
  }

  /** Every domain; definitions and status as the store holds them. */
  list(): DomainInfo[] {
    const recs = this.store.list();
    return [...this.domains.values()]
      .sort((a, b) => (a.runtime?.domid ?? Infinity) - (b.runtime?.domid ?? Infinity) || a.name.localeCompare(b.name))
      .map((d) => this.infoOf(d, recs.get(d.uuid)));
  }

  info(name: string): DomainInfo {
    const d = this.get(name);
    return this.infoOf(d, this.store.get(d.uuid));
  }

  /** `stored`: the domain's record read from the store (the in-memory mirror if the store has none). */
  private infoOf(d: Domain, stored: DomainRecord | undefined): DomainInfo {
    const rec = stored ?? d.rec;
    const rt = d.runtime;
    return {
      name: d.name,
      uuid: d.uuid,
      domid: rt?.domid ?? null,
      state: rec.status.state,
      preserved: d.preserved,
      memory: rt?.memTargetMiB ?? rec.config.memory,
      vcpus: rt?.vcpusOnline ?? rec.config.vcpus,
      cpuTime: rt ? cpuSeconds(rt.pid) : 0,
      rssKiB: rt ? rssKiB(rt.pid) : 0,
      pid: rt?.pid ?? null,
      accel: rt?.accel ?? null,
      accelReason: rt?.accelReason ?? null,
      startedAt: rt?.startedAt ?? null,
      readyAt: d.readyAt ?? null,
      reboots: d.reboots,
      lastExit: rec.status.lastExit ?? null,
      consoleLog: d.console.logFile,
      config: rec.config,
    };
  }

  consoleOf(name: string): ConsoleService {
    return this.get(name).console;
  }

  // ---- definitions ---------------------------------------------------

  define(input: unknown, source?: string): DomainInfo {
    const config = validateDomainConfig(input, source);
    if (this.domains.has(config.name)) {
      throw new XvmError('conflict', `a domain named '${config.name}' already exists (start it with 'xvm start ${config.name}', or remove it with 'xvm undefine ${config.name}')`);
    }
    const uuid = config.uuid ?? crypto.randomUUID();
    for (const other of this.domains.values()) {
      if (other.uuid === uuid) throw new XvmError('conflict', `UUID ${uuid} is already used by domain '${other.name}'`);
    }
    const rec: DomainRecord = {
      config: { ...config, uuid },
      createdAt: new Date().toISOString(),
      status: { state: 'defined' },
    };
    this.store.save(rec);
    const d = new Domain(rec, this.consoleLog(config.name));
    this.domains.set(d.name, d);
    this.log.info('domain defined', { domain: d.name, uuid });
    this.emitChange(d);
    return this.info(d.name);
  }

  undefine(name: string): void {
    const d = this.get(name);
    if (d.runtime) {
      throw new XvmError('conflict', `domain '${name}' is ${d.state}${d.preserved ? ' (preserved)' : ''}; destroy it first ('xvm destroy ${name}')`);
    }
    this.store.remove(d.uuid);
    d.console.close();
    this.domains.delete(name);
    this.log.info('domain undefined', { domain: name });
    this.emit('removed', name);
  }

  // ---- lifecycle -----------------------------------------------------

  /** Runs `fn` after every earlier lifecycle operation on the domain has finished. */
  private serial<T>(d: Domain, fn: () => Promise<T>): Promise<T> {
    const run = d.busy.then(fn, fn);
    d.busy = run.catch(() => undefined);
    return run;
  }

  start(name: string, opts: { paused?: boolean } = {}): Promise<DomainInfo> {
    const d = this.get(name);
    return this.serial(d, async () => {
      if (d.runtime) {
        throw new XvmError('conflict', `domain '${name}' is already ${d.state}${d.preserved ? ' (preserved: destroy it first)' : ''}`);
      }
      await this.launch(d, opts);
      return this.info(name);
    });
  }

  private async resolveBoot(cfg: DomainConfig): Promise<{ kernel: string; initrd?: string; cmdline: string }> {
    // An HVM guest boots its firmware (src/daemon/hvm.ts) unless it names a kernel.
    if (cfg.type === 'hvm' && !cfg.kernel) return { kernel: '', cmdline: '' };
    const extra = [cfg.root ? `root=${cfg.root}` : '', cfg.extra ?? ''].filter(Boolean).join(' ');
    if (cfg.kernel) {
      for (const [key, file] of [['kernel', cfg.kernel], ['ramdisk', cfg.ramdisk]] as const) {
        if (file && !fs.existsSync(file)) {
          throw new XvmError('invalid', `domain '${cfg.name}': ${key} file ${file} does not exist`);
        }
      }
      const cmdline = cfg.cmdline ?? ['console=ttyS0', extra].filter(Boolean).join(' ');
      return { kernel: cfg.kernel, initrd: cfg.ramdisk, cmdline };
    }
    const img = await this.images.getOrBuild();
    const cmdline = cfg.cmdline ?? [img.cmdline, `xvm.name=${cfg.name}`, extra].filter(Boolean).join(' ');
    return { kernel: img.kernel, initrd: cfg.ramdisk ?? img.initrd, cmdline };
  }

  private async launch(d: Domain, opts: { paused?: boolean; incoming?: boolean } = {}): Promise<void> {
    const cfg = d.rec.config;
    if (cfg.type === 'hvm' && !this.providers.some((p) => p.kind === 'hvm')) {
      throw new XvmError('invalid', `domain '${cfg.name}': type "hvm" guests are not served by this xvmd`);
    }
    for (const kind of ['disk', 'vif'] as const) {
      if (cfg[kind].length > 0 && !this.providers.some((p) => p.kind === kind)) {
        throw new XvmError('invalid', `domain '${cfg.name}': ${kind} devices are parsed but not served yet in this version; remove the ${kind} entries from the configuration`);
      }
    }
    const boot = await this.resolveBoot(cfg);
    const { accel, reason } = resolveAccel(cfg.accel);
    const runDir = this.runDir(d.uuid);
    fs.rmSync(runDir, { recursive: true, force: true });
    fs.mkdirSync(runDir, { recursive: true, mode: 0o700 });
    const files = runtimeFiles(runDir);
    if (Buffer.byteLength(files.qmp) > 107) {
      throw new XvmError('invalid', `the runtime folder ${runDir} is too deep for a unix socket path (108 bytes max): use a shorter XVM_HOME`);
    }
    makeFifo(files.consoleIn);
    makeFifo(files.consoleOut);
    // Open the console before QEMU exists: not one byte of output is missed.
    d.console.attach(files.consoleOut);
    this.watchConsole(d);

    const domid = this.store.nextDomid();
    const deviceArgs: string[] = [];
    try {
      for (const p of this.providers) {
        const args = await p.prepare(this.deviceContext(d, domid));
        deviceEvent('backend-prepare', { domain: cfg.name, kind: p.kind, qemuArgs: args });
        deviceArgs.push(...args);
      }
    } catch (e) {
      d.console.detach();
      await this.releaseDevices(d);
      throw e;
    }

    const argv = buildQemuArgs({
      name: cfg.name,
      uuid: d.uuid,
      memoryMiB: cfg.memory,
      maxMemoryMiB: cfg.maxmem,
      vcpus: cfg.vcpus,
      maxVcpus: cfg.maxvcpus,
      accel,
      kernel: boot.kernel,
      initrd: boot.initrd,
      cmdline: boot.cmdline,
      runDir,
      onReboot: cfg.on_reboot,
      extraArgs: deviceArgs,
    });
    if (opts.paused || opts.incoming) argv.push('-S');
    // Restore / incoming migration: QEMU waits for migrate-incoming (src/migrate).
    if (opts.incoming) argv.push('-incoming', 'defer');
    const qemuLog = path.join(this.paths.log, 'qemu', `${cfg.name}.log`);
    const child = spawnDetached(QEMU_BINARY, argv, qemuLog);

    // Wait for the QMP socket; fail with QEMU's own words if it dies first.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const spawnError = child.spawnError();
      const exited = child.exited();
      if (spawnError) {
        d.console.detach();
        await this.releaseDevices(d);
        throw new XvmError('unavailable', `cannot run ${QEMU_BINARY}: ${spawnError.message} (run scripts/install-deps.sh)`);
      }
      if (exited) {
        d.console.detach();
        await this.releaseDevices(d);
        const tail = readTail(qemuLog, 2000).split('\n').filter((l) => l && !l.includes(' starting: ')).slice(-5).join('\n');
        throw new XvmError('internal', `QEMU for domain '${cfg.name}' exited at start (${exited}):\n${tail}`);
      }
      if (fs.existsSync(files.qmp)) {
        try {
          await this.connectQmp(d, files.qmp);
          break;
        } catch {
          /* not listening yet */
        }
      }
      if (Date.now() > deadline) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        d.console.detach();
        await this.releaseDevices(d);
        throw new XvmError('timeout', `QEMU for domain '${cfg.name}' did not open its monitor within 15 s`);
      }
      await sleep(10);
    }
    d.runtime = {
      domid,
      pid: child.pid,
      accel,
      accelReason: reason,
      startedAt: new Date().toISOString(),
      argv,
      kernel: boot.kernel,
      initrd: boot.initrd,
      cmdline: boot.cmdline,
    };
    writeFileAtomic(files.runtime, JSON.stringify(d.runtime, null, 2));
    this.store.domainUp(d.rec, domid, this.runtimeExtras(d));
    if (cfg.maxmem !== undefined && cfg.maxmem > cfg.memory) {
      // RAM is maxmem (room to grow by mem-set); the balloon holds the rest back from the start.
      await d.qmp!.execute('balloon', { value: cfg.memory * 1024 * 1024 }).catch((e) =>
        this.log.warn('could not set the initial balloon target', { domain: cfg.name, error: errorMessage(e) }),
      );
    }
    for (const p of this.providers) p.started?.(this.deviceContext(d, domid));
    d.console.attachInput(files.consoleIn);
    d.preserved = false;
    d.intent = undefined;
    d.readyAt = undefined;
    d.bannerScan = '';
    d.console.mark(`domain ${cfg.name} started (id ${domid}, ${accel})`);
    this.setState(d, opts.paused || opts.incoming ? 'paused' : 'running');
    this.log.info('domain started', { domain: cfg.name, domid, pid: child.pid, accel });
    deviceEvent('qemu-start', { domain: cfg.name, domid, pid: child.pid, accel, qmp: files.qmp });
  }

  private runtimeExtras(d: Domain) {
    return { consoleLog: d.console.logFile, memoryTargetMiB: d.runtime?.memTargetMiB, vcpusOnline: d.runtime?.vcpusOnline };
  }

  /**
   * Records a running domain's resources changed by mem-set / vcpu-set: in
   * its runtime record (kept across xvmd restarts), the store and `info`.
   */
  noteResources(name: string, change: { memTargetMiB?: number; vcpusOnline?: number }): void {
    const d = this.get(name);
    if (!d.runtime) return;
    Object.assign(d.runtime, change);
    writeFileAtomic(runtimeFiles(this.runDir(d.uuid)).runtime, JSON.stringify(d.runtime, null, 2));
    this.store.domainUp(d.rec, d.runtime.domid, this.runtimeExtras(d));
    this.emitChange(d);
  }

  /** Every device provider's counters for a running domain ([] when it is not running). */
  deviceCounters(name: string): DeviceCounters[] {
    const d = this.get(name);
    if (!d.runtime) return [];
    const out: DeviceCounters[] = [];
    for (const p of this.providers) {
      try {
        out.push(...(p.counters?.(this.deviceContext(d)) ?? []));
      } catch (e) {
        this.log.warn('reading device counters failed', { domain: d.name, kind: p.kind, error: errorMessage(e) });
      }
    }
    return out;
  }

  /** Notes when the guest prints its ready banner (once per boot). Idempotent. */
  private watchConsole(d: Domain): void {
    if (d.bannerWatch) return;
    d.bannerWatch = (chunk: Buffer) => {
      if (d.readyAt) return;
      d.bannerScan = (d.bannerScan + chunk.toString('latin1')).slice(-4096);
      if (d.bannerScan.includes(READY_BANNER)) {
        d.readyAt = new Date().toISOString();
        d.bannerScan = '';
        this.emitChange(d);
      }
    };
    d.console.on('data', d.bannerWatch);
  }

  private async connectQmp(d: Domain, socket: string): Promise<void> {
    const qmp = await QmpClient.connect(socket, 3000);
    d.qmp = qmp;
    qmp.on('event', (ev: QmpEvent) => {
      this.onQmpEvent(d, ev).catch((e) => this.log.error('handling QEMU event failed', { domain: d.name, event: ev.event, error: errorMessage(e) }));
    });
    qmp.on('close', () => {
      if (d.qmp === qmp) {
        d.qmp = undefined;
        this.onQemuGone(d).catch((e) => this.log.error('cleanup after QEMU exit failed', { domain: d.name, error: errorMessage(e) }));
      }
    });
  }

  private async onQmpEvent(d: Domain, ev: QmpEvent): Promise<void> {
    this.log.debug('qemu event', { domain: d.name, event: ev.event, data: ev.data });
    switch (ev.event) {
      case 'STOP':
        if (d.state === 'running') this.setState(d, 'paused');
        break;
      case 'RESUME':
        if (d.state === 'paused') this.setState(d, 'running');
        break;
      case 'RESET':
        // One reboot can reset the machine more than once (kernel, then BIOS): count it once.
        if (Date.now() - d.lastReset < 3000) {
          d.lastReset = Date.now();
          break;
        }
        d.lastReset = Date.now();
        d.reboots++;
        d.readyAt = undefined;
        d.bannerScan = '';
        d.console.mark(`domain ${d.name} is rebooting`);
        this.emitChange(d);
        break;
      case 'SHUTDOWN': {
        const reason = String(ev.data?.reason ?? '');
        if (reason === 'guest-shutdown') await this.onGuestStop(d, 'poweroff');
        else if (reason === 'guest-reset') await this.onGuestStop(d, 'reboot');
        // host-qmp-quit etc.: our own doing, handled when QEMU is gone
        break;
      }
      case 'GUEST_PANICKED':
        await this.onGuestStop(d, 'crash');
        break;
    }
  }

  /** The guest powered off, asked to reboot (on_reboot != restart), or panicked: apply its policy. */
  private async onGuestStop(d: Domain, why: 'poweroff' | 'reboot' | 'crash'): Promise<void> {
    const cfg = d.rec.config;
    const words =
      why === 'poweroff' && d.intent === 'shutdown'
        ? 'shut down (xvm shutdown)'
        : { poweroff: 'the guest powered off', reboot: 'the guest rebooted', crash: 'the guest kernel panicked' }[why];
    let policy = why === 'poweroff' ? cfg.on_poweroff : why === 'reboot' ? cfg.on_reboot : cfg.on_crash;
    // A shutdown the user asked for ends the domain, whatever on_poweroff says.
    if (why === 'poweroff' && d.intent === 'shutdown') policy = 'destroy';
    const stopped: DomainState = why === 'crash' ? 'crashed' : 'shutdown';
    d.console.mark(`${words}; ${{ destroy: 'destroying the domain', restart: 'restarting it', preserve: 'keeping it (preserve)' }[policy]}`);
    this.log.info('guest stopped', { domain: d.name, why, policy });
    if (policy === 'preserve') {
      d.preserved = true;
      this.setState(d, stopped, words + ' (preserved)');
      return;
    }
    if (policy === 'restart' && !this.restartAllowed(d)) {
      policy = 'destroy';
      d.console.mark(`restarted more than ${MAX_RESTARTS_IN_WINDOW} times in ${RESTART_WINDOW_MS / 1000} s: giving up`);
    }
    d.intent = policy === 'restart' ? 'restart' : 'destroy';
    this.pendingStop.set(d.name, { state: stopped, reason: words });
    await this.quit(d);
  }

  private pendingStop = new Map<string, { state: DomainState; reason: string }>();

  private restartAllowed(d: Domain): boolean {
    const now = Date.now();
    d.restarts = d.restarts.filter((t) => now - t < RESTART_WINDOW_MS);
    d.restarts.push(now);
    return d.restarts.length <= MAX_RESTARTS_IN_WINDOW;
  }

  /** Asks QEMU to quit; SIGKILL if it does not go within a few seconds. */
  private async quit(d: Domain): Promise<void> {
    const pid = d.runtime?.pid;
    try {
      await d.qmp?.execute('quit', undefined, 3000);
    } catch {
      /* it may close before answering */
    }
    if (pid && !(await waitFor(() => !pidAlive(pid), 5000))) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      await waitFor(() => !pidAlive(pid), 5000);
    }
    // Settle the state now rather than when the monitor's close event comes
    // (onQemuGone settles once per QEMU run, whoever calls it first).
    await this.onQemuGone(d);
  }

  /** QEMU's monitor closed: wait for the process to go, then settle the domain's state. */
  /**
   * QEMU's monitor closed or we quit it: settle the domain once per QEMU run.
   * Every caller (the close handler, quit) gets the same settling promise, so
   * destroy returns only after the backends are released.
   */
  private onQemuGone(d: Domain): Promise<void> {
    const rt = d.runtime;
    if (!rt) return d.settling ?? Promise.resolve();
    if (d.settling && d.settlingFor === rt) return d.settling;
    d.settlingFor = rt;
    d.settling = this.settle(d, rt);
    return d.settling;
  }

  private async settle(d: Domain, rt: Runtime): Promise<void> {
    await waitFor(() => !pidAlive(rt.pid), 5000);
    if (pidAlive(rt.pid)) {
      // Monitor gone but the process lingers: it is unusable, end it.
      try {
        process.kill(rt.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    if (d.runtime !== rt) return; // settled by someone else meanwhile
    deviceEvent('qemu-stop', { domain: d.name, domid: rt.domid, pid: rt.pid });
    d.runtime = undefined;
    this.store.domainDown(rt.domid);
    d.qmp = undefined;
    d.preserved = false;
    d.console.detach();
    await this.releaseDevices(d);
    this.cleanupRuntime(d);
    const intent = d.intent;
    d.intent = undefined;
    const pending = this.pendingStop.get(d.name);
    this.pendingStop.delete(d.name);
    if (intent === 'restart') {
      this.setState(d, pending?.state ?? 'shutdown', pending?.reason ?? 'restarting');
      try {
        await this.launch(d);
      } catch (e) {
        this.setState(d, 'crashed', `restart failed: ${errorMessage(e)}`);
      }
      return;
    }
    if (pending) {
      this.setState(d, pending.state, pending.reason);
    } else if (intent === 'destroy') {
      this.setState(d, 'shutdown', 'destroyed');
    } else if (intent === 'shutdown') {
      this.setState(d, 'shutdown', 'shut down');
    } else {
      const reason = 'QEMU exited unexpectedly (see ' + path.join(this.paths.log, 'qemu', `${d.name}.log`) + ')';
      d.console.mark(reason);
      this.log.error('domain crashed', { domain: d.name, reason });
      if (d.rec.config.on_crash === 'restart' && this.restartAllowed(d)) {
        this.setState(d, 'crashed', reason);
        try {
          await this.launch(d);
        } catch (e) {
          this.setState(d, 'crashed', `restart failed: ${errorMessage(e)}`);
        }
      } else {
        this.setState(d, 'crashed', reason);
      }
    }
  }

  private cleanupRuntime(d: Domain): void {
    fs.rmSync(this.runDir(d.uuid), { recursive: true, force: true });
  }

  private requireRunning(d: Domain, verb: string, allowed: DomainState[] = ['running', 'paused']): QmpClient {
    if (!d.runtime || !d.qmp || !allowed.includes(d.state) || d.preserved) {
      const st = d.preserved ? `${d.state} (preserved)` : d.state;
      throw new XvmError('conflict', `cannot ${verb} domain '${d.name}': it is ${st}`);
    }
    return d.qmp;
  }

  pause(name: string): Promise<DomainInfo> {
    const d = this.get(name);
    return this.serial(d, async () => {
      const qmp = this.requireRunning(d, 'pause', ['running']);
      await qmp.execute('stop');
      this.setState(d, 'paused');
      return this.info(name);
    });
  }

  unpause(name: string): Promise<DomainInfo> {
    const d = this.get(name);
    return this.serial(d, async () => {
      const qmp = this.requireRunning(d, 'unpause', ['paused']);
      await qmp.execute('cont');
      this.setState(d, 'running');
      return this.info(name);
    });
  }

  /** Graceful shutdown through the ACPI power button; with `wait`, returns once the domain is down. */
  async shutdown(name: string, opts: { wait?: boolean; timeoutSec?: number } = {}): Promise<DomainInfo> {
    const d = this.get(name);
    await this.serial(d, async () => {
      const qmp = this.requireRunning(d, 'shut down', ['running']);
      d.intent = 'shutdown';
      await qmp.execute('system_powerdown');
      d.console.mark('ACPI power button pressed (xvm shutdown)');
    });
    if (opts.wait) {
      const timeout = (opts.timeoutSec ?? 60) * 1000;
      const ok = await this.waitForState(d, ['shutdown', 'crashed', 'defined'], timeout);
      if (!ok) {
        throw new XvmError('timeout', `domain '${name}' did not shut down within ${timeout / 1000} s after the ACPI power button; the guest may ignore it: use 'xvm destroy ${name}'`);
      }
    }
    return this.info(name);
  }

  /** Reboot: Ctrl-Alt-Del to the guest (graceful), or a hard reset with `force`. */
  async reboot(name: string, opts: { force?: boolean; wait?: boolean; timeoutSec?: number } = {}): Promise<DomainInfo> {
    const d = this.get(name);
    const before = d.reboots;
    await this.serial(d, async () => {
      const qmp = this.requireRunning(d, 'reboot', ['running']);
      if (opts.force) {
        await qmp.execute('system_reset');
      } else {
        await qmp.execute('send-key', {
          keys: [
            { type: 'qcode', data: 'ctrl' },
            { type: 'qcode', data: 'alt' },
            { type: 'qcode', data: 'delete' },
          ],
        });
        d.console.mark('Ctrl-Alt-Del sent (xvm reboot)');
      }
    });
    if (opts.wait) {
      const timeout = (opts.timeoutSec ?? 60) * 1000;
      const ok = await waitForEvent(this, () => d.reboots > before || !d.runtime, timeout);
      if (!ok) throw new XvmError('timeout', `domain '${name}' did not reboot within ${timeout / 1000} s; the guest may ignore Ctrl-Alt-Del: use 'xvm reboot --force ${name}'`);
    }
    return this.info(name);
  }

  destroy(name: string): Promise<DomainInfo> {
    const d = this.get(name);
    return this.serial(d, async () => {
      if (!d.runtime) throw new XvmError('conflict', `domain '${name}' is not running (it is ${d.state})`);
      d.intent = 'destroy';
      if (d.preserved) {
        this.pendingStop.set(d.name, { state: d.state, reason: d.rec.status.lastExit?.reason ?? 'destroyed' });
      }
      await this.quit(d);
      return this.info(name);
    });
  }

  private waitForState(d: Domain, states: DomainState[], timeoutMs: number): Promise<boolean> {
    return waitForEvent(this, () => states.includes(d.state) && !d.runtime, timeoutMs);
  }

  private setState(d: Domain, state: DomainState, reason?: string): void {
    const changed = d.rec.status.state !== state || reason !== undefined;
    d.rec.status.state = state;
    if (reason !== undefined) d.rec.status.lastExit = { reason, at: new Date().toISOString() };
    if (changed && this.domains.get(d.name) === d) {
      try {
        this.store.save(d.rec);
      } catch (e) {
        this.log.error('could not save domain status', { domain: d.name, error: errorMessage(e) });
      }
    }
    this.emitChange(d);
  }

  private emitChange(d: Domain): void {
    if (this.domains.get(d.name) !== d) return;
    this.emit('change', this.info(d.name));
  }

  /** Sets or clears `autostart` in the stored definition (xvm autostart DOMAIN on|off). */
  setAutostart(name: string, on: boolean): DomainInfo {
    const d = this.get(name);
    d.rec.config = { ...d.rec.config, autostart: on };
    this.store.save(d.rec);
    this.log.info('autostart changed', { domain: name, autostart: on });
    this.emitChange(d);
    return this.info(name);
  }

  // ---- hooks for src/migrate (save, restore, migration) ---------------

  /**
   * Runs `fn` with the domain to itself (no other lifecycle operation on it
   * meanwhile). Inside `fn`, use the `*Locked` hooks below, not start/destroy.
   */
  exclusive<T>(name: string, fn: (d: Domain) => Promise<T>): Promise<T> {
    const d = this.get(name);
    return this.serial(d, () => fn(d));
  }

  /** Starts QEMU waiting for a migration stream (-S -incoming defer); the domain shows as paused. */
  async launchIncomingLocked(d: Domain): Promise<void> {
    if (d.runtime) throw new XvmError('conflict', `domain '${d.name}' is already ${d.state}`);
    await this.launch(d, { incoming: true });
    // Until the stream is in, a QEMU exit is a failed restore, not a crash to apply on_crash to.
    d.intent = 'destroy';
    this.pendingStop.set(d.name, { state: 'shutdown', reason: 'QEMU exited while loading a migration stream' });
  }

  /** The incoming stream is loaded: the domain is a normal running (or paused) one again. */
  incomingDoneLocked(d: Domain): void {
    d.intent = undefined;
    this.pendingStop.delete(d.name);
  }

  /** Records that QEMU runs the guest again (after a `cont` issued by src/migrate). */
  markRunningLocked(d: Domain): void {
    this.setState(d, 'running');
  }

  /** The domain's runtime folder (sockets live there). */
  runDirOf(d: Domain): string {
    return this.runDir(d.uuid);
  }

  /** Where QEMU's own output for a domain goes. */
  qemuLogFile(name: string): string {
    return path.join(this.paths.log, 'qemu', `${name}.log`);
  }

  /** After a restore: what the saved run had seen (its ready banner, reboots). */
  setRunFacts(d: Domain, facts: { readyAt?: string | null; reboots?: number }): void {
    if (facts.readyAt) d.readyAt = facts.readyAt;
    if (facts.reboots !== undefined) d.reboots = facts.reboots;
    this.emitChange(d);
  }

  /**
   * Ends the domain's QEMU without applying on_poweroff / on_crash (its state
   * went into a save file or to another host): state `shutdown` with `reason`.
   */
  async retireLocked(d: Domain, reason: string): Promise<void> {
    if (!d.runtime) return;
    d.intent = 'destroy';
    this.pendingStop.set(d.name, { state: 'shutdown', reason });
    d.console.mark(reason);
    await this.quit(d);
  }

  /** Replaces the stored configuration of a domain that is not running (a restore brings its saved one). */
  replaceConfigLocked(d: Domain, config: DomainConfig): void {
    if (d.runtime) throw new XvmError('conflict', `domain '${d.name}' is ${d.state}`);
    d.rec.config = { ...config, name: d.name, uuid: d.uuid };
    this.store.save(d.rec);
  }

  /** Detaches from every domain without stopping any (xvmd shutting down). */
  close(): void {
    for (const d of this.domains.values()) {
      const qmp = d.qmp;
      d.qmp = undefined; // so the close handler does not treat this as QEMU exiting
      qmp?.close();
      d.console.close();
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(cond: () => boolean, timeoutMs: number, stepMs = 20): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(stepMs);
  }
  return true;
}

/** Waits until `cond` holds, re-checking on every 'change' the manager emits. */
function waitForEvent(em: EventEmitter, cond: () => boolean, timeoutMs: number): Promise<boolean> {
  if (cond()) return Promise.resolve(true);
  return new Promise((resolve) => {
    const onChange = () => {
      if (cond()) done(true);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    const done = (v: boolean) => {
      clearTimeout(timer);
      em.off('change', onChange);
      resolve(v);
    };
    em.on('change', onChange);
  });
}

function readTail(file: string, bytes: number): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const n = Math.min(size, bytes);
      const b = Buffer.alloc(n);
      fs.readSync(fd, b, 0, n, size - n);
      return b.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}
