// Live migration between two xvmd (xVM's relocation service).
//
// Target: RelocationServer listens on a TCP address given in xvmd's
// configuration (off by default) and accepts a domain only from a peer that
// proves it knows the pre-shared token (wire.ts). It defines the domain from
// the source's configuration, starts QEMU with `-S -incoming defer`, takes
// the source's stream connection (a second TCP connection proven to belong
// to the session) and hands its socket to QEMU (`migrate-incoming fd:`).
// Only when the source says "commit" (its QEMU finished the stream) does it
// continue the guest and answer "running".
//
// Source: migrateDomain() authenticates, asks the target to prepare, opens
// the stream connection and hands it to its QEMU, which `migrate`s into it
// (live: pre-copy while the guest runs, QEMU stops it for the last pass):
// QEMU → TCP → QEMU, no xvmd in between. After "running" it ends its QEMU
// without policy and forgets the domain.
//
// Disks (storage-copy.ts) use the control connection, which carries only
// control messages now: with --copy-storage the bulk copy and dirty passes
// once the stream connection is in place (before QEMU migrates), more dirty
// passes while QEMU pre-copies memory, the last dirty blocks when QEMU's
// migration completes; shared images are released
// by the source's backend then and opened read-write on the target at
// "commit". NICs: the port and DHCP lease come with "prepare".
//
// Failure at any step before "running": the source cancels the migration,
// reopens the disk images it released and continues its guest as it was;
// the target ends its QEMU and removes the definition and the volumes it
// made when the connection breaks or an error comes.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import crypto from 'node:crypto';
import { XvmError, errorMessage } from '../common/errors.js';
import { validateDomainConfig } from '../config/index.js';
import type { DomainManager } from '../daemon/domains.js';
import type { DomainConfig } from '../config/index.js';
import type { BackendSpec } from '../daemon/disks.js';
import type { StatePaths } from '../common/paths.js';
import { diskProvider } from '../daemon/disks.js';
import { nicProvider, readAttachments, type MigratedLease, type MigratedVif, type VifAttachment } from '../daemon/nics.js';
import type { Logger } from '../daemon/log.js';
import { saveHeaderSchema } from './format.js';
import { parseVolumeRef } from '../storage/pool.js';
import { socketFd } from './stream.js';
import { contAfterMigration, currentMachine, describeDomain, enableMigrationEvents, live, SAVE_MAX_BANDWIDTH, waitIncoming, waitMigration, type MigrateProgress } from './save.js';
import { parseMigratingDisks, StorageSource, StorageTarget } from './storage-copy.js';
import { FrameReader, mac, macEqual, readToken, RELOCATION_PROTOCOL, sendControl } from './wire.js';

export const DEFAULT_RELOCATION_PORT = 8002;

/** The pre-shared relocation token: XVM_RELOCATION_TOKEN_FILE or <lib>/relocation.token. */
export function relocationTokenFile(paths: StatePaths): string {
  return process.env.XVM_RELOCATION_TOKEN_FILE ?? path.join(paths.lib, 'relocation.token');
}
/** The name QEMU knows the stream connection's fd by (QMP getfd). */
const STREAM_FD_NAME = 'xvm-mig';

export interface RelocationOptions {
  /** host:port to listen on. */
  listen: string;
  tokenFile: string;
  /** Where incoming domains are marked until they run (<lib>/relocation-incoming). */
  markerDir: string;
}

export function parseHostPort(s: string, defPort = DEFAULT_RELOCATION_PORT): { host: string; port: number } {
  const m = /^\[?([^\]\s]*?)\]?(?::(\d+))?$/.exec(s.trim());
  if (!m || (!m[1] && !m[2])) throw new XvmError('invalid', `bad address '${s}': use HOST[:PORT]`);
  const port = m[2] ? Number(m[2]) : defPort;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new XvmError('invalid', `bad port in '${s}'`);
  return { host: m[1] || '0.0.0.0', port };
}

export class RelocationServer {
  private server: net.Server | undefined;
  private readonly token: Buffer;
  private readonly conns = new Set<net.Socket>();
  /** Incoming migrations waiting for their stream connection, by the control connection's nonce. */
  private readonly streamWaiters = new Map<string, { nc: string; take: (sock: net.Socket) => void }>();

  constructor(
    private readonly domains: DomainManager,
    private readonly log: Logger,
    private readonly opts: RelocationOptions,
  ) {
    this.token = readToken(opts.tokenFile);
  }

  /**
   * At xvmd start: a domain still marked incoming was being received when
   * xvmd stopped (killed mid-migration). It is not a whole domain: end it
   * and forget it.
   */
  async cleanupStale(): Promise<string[]> {
    const removed: string[] = [];
    let names: string[] = [];
    try {
      names = fs.readdirSync(this.opts.markerDir).filter((n) => !n.endsWith('.tmp'));
    } catch {
      return removed;
    }
    for (const n of names) {
      try {
        if (this.domains.has(n)) {
          if (this.domains.info(n).domid !== null) await this.domains.destroy(n);
          this.domains.undefine(n);
          removed.push(n);
          this.log.warn('removed a half-received incoming domain', { domain: n });
        }
        // Volumes made for it (--copy-storage) are half-copied: they go too.
        for (const v of this.markedVolumes(n)) {
          const { pool, name } = parseVolumeRef(v);
          await diskProvider()?.storage.deleteVolume(pool, name);
          this.log.warn('removed a half-copied volume of an incoming migration', { domain: n, volume: v });
        }
      } catch (e) {
        this.log.error('could not remove a half-received incoming domain', { domain: n, error: errorMessage(e) });
        continue;
      }
      fs.rmSync(path.join(this.opts.markerDir, n), { force: true });
    }
    return removed;
  }

  /** The marker of an incoming domain: when it began, and the volumes made for it so far. */
  private mark(name: string, on: boolean, volumes: string[] = []): void {
    const f = path.join(this.opts.markerDir, name);
    if (on) {
      fs.mkdirSync(this.opts.markerDir, { recursive: true, mode: 0o700 });
      fs.writeFileSync(`${f}.tmp`, JSON.stringify({ at: new Date().toISOString(), volumes }) + '\n');
      fs.renameSync(`${f}.tmp`, f);
    } else fs.rmSync(f, { force: true });
  }

  private markedVolumes(name: string): string[] {
    try {
      const m = JSON.parse(fs.readFileSync(path.join(this.opts.markerDir, name), 'utf8')) as { volumes?: unknown };
      return Array.isArray(m.volumes) ? m.volumes.filter((v): v is string => typeof v === 'string') : [];
    } catch {
      return [];
    }
  }

  async listen(): Promise<{ host: string; port: number }> {
    const { host, port } = parseHostPort(this.opts.listen);
    const server = net.createServer((sock) => {
      this.conns.add(sock);
      sock.on('close', () => this.conns.delete(sock));
      this.handle(sock).catch((e) => this.log.error('relocation connection failed', { peer: sock.remoteAddress, error: errorMessage(e) }));
    });
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(port, host, () => res());
    });
    this.server = server;
    const a = server.address() as net.AddressInfo;
    this.log.info('relocation service listening', { host: a.address, port: a.port });
    return { host: a.address, port: a.port };
  }

  close(): void {
    this.server?.close();
    for (const c of this.conns) c.destroy();
  }

  private async handle(sock: net.Socket): Promise<void> {
    sock.setNoDelay(true);
    const peer = `${sock.remoteAddress}:${sock.remotePort}`;
    const reader = new FrameReader(sock);
    const ns = crypto.randomBytes(16).toString('hex');
    sendControl(sock, { type: 'hello', nonce: ns, protocol: RELOCATION_PROTOCOL });
    let auth: Record<string, unknown>;
    try {
      auth = await reader.control(10_000, 'authentication');
    } catch (e) {
      this.log.warn('relocation peer refused: no authentication', { peer, error: errorMessage(e) });
      sock.destroy();
      return;
    }
    if (auth.type === 'data') {
      // The stream connection of a migration authenticated on its control connection.
      const w = typeof auth.session === 'string' ? this.streamWaiters.get(auth.session) : undefined;
      if (!w || !macEqual(auth.mac, mac(this.token, 'data', ns, `${auth.session as string}:${w.nc}`))) {
        this.log.warn('relocation peer refused: stream connection not authenticated', { peer });
        sock.destroy();
        return;
      }
      this.streamWaiters.delete(auth.session as string);
      reader.detach();
      w.take(sock);
      return;
    }
    if (auth.type !== 'auth' || typeof auth.nonce !== 'string' || auth.nonce.length !== 32 || !macEqual(auth.mac, mac(this.token, 'client', ns, auth.nonce))) {
      this.log.warn('relocation peer refused: authentication failed', { peer });
      sendControl(sock, { type: 'error', code: 'invalid', message: 'authentication failed (wrong relocation token?)' });
      sock.end();
      return;
    }
    sendControl(sock, { type: 'ok', mac: mac(this.token, 'server', auth.nonce, ns) });
    const prep = await reader.control(30_000, 'prepare');
    const fail = (e: unknown) => {
      const code = e instanceof XvmError ? e.code : 'internal';
      if (!sock.destroyed) {
        sendControl(sock, { type: 'error', code, message: errorMessage(e) });
        sock.end();
      }
    };
    const parsed = saveHeaderSchema.safeParse(prep.header);
    if (prep.type !== 'prepare' || !parsed.success) return fail(new XvmError('invalid', 'malformed prepare message'));
    const header = parsed.data;
    if (header.qemu.machine !== currentMachine()) return fail(new XvmError('invalid', `the guest runs machine type ${header.qemu.machine}; this host's QEMU runs ${currentMachine()}`));
    let config;
    try {
      config = validateDomainConfig(header.config);
    } catch (e) {
      return fail(e);
    }
    if (this.domains.has(config.name)) return fail(new XvmError('conflict', `a domain named '${config.name}' already exists on the target`));
    const name = config.name;
    // Disks and NICs: checked before anything is made here (refusals leave nothing behind).
    let storage: StorageTarget;
    try {
      storage = new StorageTarget(parseMigratingDisks(prep.disks ?? []), diskProvider()?.storage);
    } catch (e) {
      return fail(e);
    }
    const leases = new Map<number, MigratedLease>();
    try {
      const vifs = (Array.isArray(prep.vifs) ? prep.vifs : []) as MigratedVif[];
      if (config.vif.length > 0) {
        const nics = nicProvider();
        if (!nics) throw new XvmError('invalid', 'this xvmd serves no NICs');
        nics.checkIncoming(vifs);
        for (const v of vifs) if (v.lease && typeof v.lease.ip === 'string') leases.set(v.index, v.lease);
      }
      if (config.disk.length > 0 && !diskProvider()) throw new XvmError('invalid', 'this xvmd serves no disks');
      this.mark(name, true);
      await storage.prepare(() => this.mark(name, true, storage.created));
    } catch (e) {
      this.log.warn('incoming migration refused', { domain: name, peer, error: errorMessage(e) });
      await storage.removeCreated((m, err) => this.log.error(m, { error: errorMessage(err) }));
      this.mark(name, false);
      return fail(e);
    }
    this.log.info('incoming migration', { domain: name, peer, storage: storage.disks.length ? (storage.disks.some((x) => x.copy) ? 'copy' : 'shared') : 'none' });
    let defined = false;
    try {
      this.domains.define(config);
      defined = true;
      await this.domains.exclusive(name, async (d) => {
        diskProvider()?.deferOpen(d.uuid, storage.deferred);
        nicProvider()?.expectLeases(d.uuid, leases);
        try {
          await this.domains.launchIncomingLocked(d);
        } finally {
          diskProvider()?.deferOpen(d.uuid, null);
          nicProvider()?.expectLeases(d.uuid, null);
        }
        try {
          await storage.connect(diskProvider(), d.uuid);
          const qmp = d.qmp!;
          // The source's stream connection, authenticated against this session.
          const stream = new Promise<net.Socket>((res, rej) => {
            const t = setTimeout(() => {
              this.streamWaiters.delete(ns);
              rej(new XvmError('timeout', 'the source did not open its stream connection within 30 s'));
            }, 30_000);
            this.streamWaiters.set(ns, {
              nc: auth.nonce as string,
              take: (s) => {
                clearTimeout(t);
                res(s);
              },
            });
          });
          stream.catch(() => undefined);
          await enableMigrationEvents(qmp);
          d.console.mark(`incoming live migration from ${peer}`);
          sendControl(sock, { type: 'ready' });
          const ds = await Promise.race([stream, reader.control(30_000, 'the stream connection').then((m) => Promise.reject(new XvmError('invalid', `unexpected ${String(m.type)} before the stream connection`)))]).finally(() => this.streamWaiters.delete(ns));
          // QEMU reads the stream itself from the TCP connection; xvmd's copy of the fd goes.
          await qmp.sendFd(STREAM_FD_NAME, socketFd(ds));
          await qmp.execute('migrate-incoming', { uri: `fd:${STREAM_FD_NAME}` });
          ds.destroy();
          sendControl(sock, { type: 'data-ready' });
          // The control connection now carries only control messages: the
          // disk data of --copy-storage (bulk, dirty passes, the final dirty
          // set, blk-sync/blk-ack, blk-flush) until "commit", while QEMU
          // loads its stream from the other connection. (No backpressure
          // pause on this connection any more: nothing to resume.)
          const commitP = (async () => {
            for (;;) {
              const m = await reader.control(3_600_000, 'commit');
              if (await storage.handle(sock, m)) continue;
              if (m.type !== 'commit') throw new XvmError('invalid', `expected commit, got ${String(m.type)}`);
              return m;
            }
          })();
          commitP.catch(() => undefined);
          // Loaded (QEMU leaves inmigrate), unless the control connection fails first.
          await Promise.race([waitIncoming(d, qmp, 3_600_000), commitP.then(() => new Promise<never>(() => undefined))]);
          this.log.info('incoming migration: stream loaded', { domain: name });
          await commitP;
          // Fault injection for tests: the target dies after the source let go of the images.
          if (process.env.XVM_TEST === '1' && process.env.XVM_TEST_RELOCATION_DIE === 'takeover') process.kill(process.pid, 'SIGKILL');
          await storage.takeOver(diskProvider(), d.uuid);
          if (storage.deferred.length) this.log.info('incoming migration: disk images taken over', { domain: name, disks: storage.deferred });
          this.domains.setRunFacts(d, { readyAt: header.run.readyAt, reboots: header.run.reboots });
          this.domains.incomingDoneLocked(d);
          if (header.state === 'running') {
            await qmp.execute('cont');
            this.domains.markRunningLocked(d);
          }
          d.console.mark(`migrated in from ${peer}`);
          sendControl(sock, { type: 'running', state: this.domains.info(name).state });
        } catch (e) {
          await this.domains.retireLocked(d, `incoming migration failed: ${errorMessage(e)}`);
          throw e;
        } finally {
          storage.close();
        }
      });
      this.mark(name, false);
      this.log.info('incoming migration done', { domain: name, peer });
      sock.end();
    } catch (e) {
      this.log.error('incoming migration failed; domain removed', { domain: name, peer, error: errorMessage(e) });
      try {
        if (defined) this.domains.undefine(name);
        await storage.removeCreated((m, err) => this.log.error(m, { error: errorMessage(err) }));
        this.mark(name, false);
      } catch {
        /* kept; cleanupStale() at the next start */
      }
      fail(e);
    }
  }
}

export interface MigrateResult {
  domain: string;
  target: string;
  live: boolean;
  ms: number;
  /** QEMU's own downtime (last pass) + the hand-over to the target's cont. */
  downtimeMs: number;
  qemuDowntimeMs: number | null;
  bytes: number;
  storage: 'none' | 'shared' | 'copy';
  storageBytes: number;
  storagePasses: number;
  /** Dirty passes that ran during QEMU's memory pre-copy. */
  storageAlongsidePasses: number;
  finalDirtyBlocks: number;
}

function connectTcp(host: string, port: number): Promise<net.Socket> {
  return new Promise<net.Socket>((res, rej) => {
    const s = net.createConnection({ host, port });
    const t = setTimeout(() => {
      s.destroy();
      rej(new XvmError('timeout', `cannot reach the relocation service at ${host}:${port} within 10 s`));
    }, 10_000);
    s.once('connect', () => {
      clearTimeout(t);
      res(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      rej(new XvmError('unavailable', `cannot reach the relocation service at ${host}:${port}: ${e.message}`));
    });
  });
}

/** Moves a running domain to the xvmd at `target` (HOST[:PORT]). */
export async function migrateDomain(
  domains: DomainManager,
  log: Logger,
  name: string,
  target: string,
  opts: { live?: boolean; copyStorage?: boolean; tokenFile: string; onProgress?: (p: MigrateProgress) => void },
): Promise<MigrateResult> {
  const { host, port } = parseHostPort(target);
  const token = readToken(opts.tokenFile);
  const t0 = Date.now();
  const result = await domains.exclusive(name, async (d) => {
    const qmp = live(d, 'migrate');
    const runDir = domains.runDirOf(d);
    checkMovable(d.rec.config, name, diskProvider()?.disksOf(d.uuid) ?? [], readAttachments(runDir), d.runtime?.vcpusOnline);
    const vifs = d.rec.config.vif.length ? ((await nicProvider()?.migrationInfo(runDir)) ?? []) : [];
    const storage = await StorageSource.open(diskProvider(), d.uuid, name, Boolean(opts.copyStorage));
    if (opts.copyStorage && storage.mode !== 'copy') {
      storage.close();
      throw new XvmError('invalid', `cannot migrate domain '${name}' with --copy-storage: it has no volume (vol=) disks to copy; disk files must be on shared storage`);
    }
    const sock = await connectTcp(host, port).catch((e: unknown) => {
      storage.close();
      throw e;
    });
    sock.setNoDelay(true);
    const reader = new FrameReader(sock);
    // Registered at once: a target that dies at any point fails every wait below.
    const closed = new Promise<never>((_r, rej) => sock.once('close', () => rej(new XvmError('unavailable', 'the target closed the connection during the migration'))));
    closed.catch(() => undefined);
    const wasRunning = d.state === 'running';
    let streamSock: net.Socket | undefined;
    let fdPassed = false;
    let alongside: ReturnType<StorageSource['dirtyAlongside']> | undefined;
    let started = false;
    let bytes = 0;
    try {
      const hello = await reader.control(10_000, 'hello');
      if (hello.type !== 'hello' || typeof hello.nonce !== 'string') throw new XvmError('invalid', `${host}:${port} is not an xvm relocation service`);
      if (hello.protocol !== RELOCATION_PROTOCOL) throw new XvmError('invalid', `${host}:${port} speaks relocation protocol ${String(hello.protocol)}; this xvm speaks ${RELOCATION_PROTOCOL} (run the same xvm on both hosts)`);
      const nc = crypto.randomBytes(16).toString('hex');
      sendControl(sock, { type: 'auth', nonce: nc, mac: mac(token, 'client', hello.nonce, nc) });
      const ok = await reader.control(10_000, 'authentication');
      if (ok.type !== 'ok' || !macEqual(ok.mac, mac(token, 'server', nc, hello.nonce))) throw new XvmError('invalid', `${host}:${port} did not prove it knows the relocation token`);
      const header = await describeDomain(domains, d, qmp, false);
      sendControl(sock, { type: 'prepare', header, disks: storage.describe(), vifs });
      const ready = await reader.control(120_000, 'the target to prepare the domain');
      if (ready.type !== 'ready') throw new XvmError('invalid', 'expected ready');

      // The stream connection: authenticated for this session, then handed to QEMU (no copy through xvmd).
      const ds = await connectTcp(host, port);
      streamSock = ds;
      const dreader = new FrameReader(ds);
      const dhello = await dreader.control(10_000, 'hello (stream connection)');
      if (typeof dhello.nonce !== 'string') throw new XvmError('invalid', `${host}:${port} sent a bad hello on the stream connection`);
      sendControl(ds, { type: 'data', session: hello.nonce, mac: mac(token, 'data', dhello.nonce, `${hello.nonce}:${nc}`) });
      const dready = await Promise.race([reader.control(30_000, 'the target to take the stream connection'), closed]);
      if (dready.type !== 'data-ready') throw new XvmError('invalid', 'expected data-ready');
      dreader.detach();
      ds.setNoDelay(true);
      await enableMigrationEvents(qmp);
      await qmp.execute('migrate-set-parameters', { 'max-bandwidth': SAVE_MAX_BANDWIDTH });
      await qmp.sendFd(STREAM_FD_NAME, socketFd(ds));
      fdPassed = true;
      ds.destroy(); // QEMU holds its own copy
      // --copy-storage: the disks first, on the control connection while the
      // guest runs (bulk, then dirty passes); the target's QEMU waits on the
      // stream connection meanwhile.
      await Promise.race([storage.copyLive(sock, reader, opts.onProgress), closed]);
      if (!opts.live && wasRunning) await qmp.execute('stop');
      d.console.mark(`migrating to ${host}:${port}${opts.live ? ' (live)' : ''}`);
      started = true;
      await qmp.execute('migrate', { uri: `fd:${STREAM_FD_NAME}` });
      fdPassed = false;
      // While QEMU pre-copies memory on the stream connection, the disks'
      // dirty passes go on over the control connection.
      alongside = storage.mode === 'copy' ? storage.dirtyAlongside(sock, reader) : undefined;
      await Promise.race([waitMigration(qmp, opts.onProgress, () => bytes, 3_600_000), closed, ...(alongside ? [alongside.failed] : [])]);
      const completedAt = Date.now();
      await Promise.race([alongside?.stop(), closed]);
      alongside = undefined;
      const q = await qmp.execute<{ downtime?: number; ram?: { transferred?: number } }>('query-migrate');
      bytes = q.ram?.transferred ?? 0;
      // Stop-and-copy of the disks (QEMU stopped the guest): the last dirty blocks, or the images handed over.
      await Promise.race([storage.finish(sock, reader, opts.onProgress), closed]);
      sendControl(sock, { type: 'commit' });
      const running = await reader.control(120_000, 'the target to run the domain');
      if (running.type !== 'running') throw new XvmError('invalid', 'expected running');
      const handover = Date.now() - completedAt;
      await domains.retireLocked(d, `migrated to ${host}:${port}`);
      sock.end();
      return {
        domain: name,
        target: `${host}:${port}`,
        live: Boolean(opts.live),
        ms: Date.now() - t0,
        downtimeMs: (q.downtime ?? 0) + handover,
        qemuDowntimeMs: q.downtime ?? null,
        bytes,
        storage: storage.mode,
        storageBytes: storage.bytes,
        storagePasses: storage.passes,
        storageAlongsidePasses: storage.alongsidePasses,
        finalDirtyBlocks: storage.finalBlocks,
      };
    } catch (e) {
      sock.destroy();
      streamSock?.destroy();
      if (started) await qmp.execute('migrate_cancel').catch(() => undefined);
      if (fdPassed) await qmp.execute('closefd', { fdname: STREAM_FD_NAME }).catch(() => undefined);
      await alongside?.stop().catch(() => undefined);
      // Disk images back in this backend's hands before the guest continues.
      await storage.undo((m, err) => log.error(m, { domain: name, error: errorMessage(err) }));
      // The guest runs on here as it was.
      if (wasRunning && d.qmp === qmp) {
        const st = await qmp.execute<{ status: string }>('query-status').catch(() => ({ status: 'unknown' }));
        if (st.status !== 'running') await contAfterMigration(qmp).catch((err) => log.error('could not continue the guest after a failed migration', { domain: name, error: errorMessage(err) }));
      }
      d.console.mark(`migration to ${host}:${port} failed: ${errorMessage(e)}`);
      log.error('migration failed; the domain runs on here', { domain: name, target: `${host}:${port}`, error: errorMessage(e) });
      throw e;
    } finally {
      storage.close();
    }
  });
  domains.undefine(name);
  log.info('domain migrated', { domain: name, target: result.target, ms: result.ms, downtimeMs: result.downtimeMs, storage: result.storage, storageBytes: result.storageBytes });
  return result;
}

/** Refuses what a migration cannot carry (like save: the target starts QEMU from the configuration). */
function checkMovable(cfg: DomainConfig, name: string, disks: BackendSpec[], atts: VifAttachment[], vcpusOnline: number | undefined): void {
  if (cfg.type === 'hvm' && cfg.disk.length) throw new XvmError('invalid', `cannot migrate domain '${name}': HVM domains with disks cannot be migrated yet (their emulated disks are QEMU's own)`);
  const hot = disks.filter((x) => x.hotplug);
  if (hot.length) throw new XvmError('conflict', `cannot migrate domain '${name}': disk ${hot[0]!.vdev} was hot-plugged; detach it first ('xvm block-detach ${name} ${hot[0]!.vdev}')`);
  const hotVif = atts.find((a) => a.hotplug);
  if (hotVif) throw new XvmError('conflict', `cannot migrate domain '${name}': NIC vif${hotVif.index} was hot-plugged; detach it first ('xvm network-detach ${name} vif${hotVif.index}')`);
  if (vcpusOnline !== undefined && vcpusOnline !== cfg.vcpus) throw new XvmError('conflict', `cannot migrate domain '${name}': it has ${vcpusOnline} vCPUs since 'xvm vcpu-set' and its configuration ${cfg.vcpus}; set them back first`);
  if (atts.some((a) => a.model !== 'virtio')) throw new XvmError('invalid', `cannot migrate domain '${name}': emulated NICs (model=e1000/rtl8139) cannot be migrated yet`);
}

