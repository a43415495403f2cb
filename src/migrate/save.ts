// xvm save / xvm restore: a running domain into one file and back.
//
// Save: write xvm's header into FILE.partial, hand QEMU the file's fd
// (getfd), pause the guest (its vhost-user disk backends drain their rings
// when QEMU stops the devices), `migrate fd:` — QEMU writes its stream
// straight after the header while xvmd hashes it back from the page cache —
// then the trailer with the checksum, fsync, rename to FILE. Then either end
// QEMU without applying on_poweroff (the domain is "saved"; its disk
// backends stop and flush their images) or, with `checkpoint`, let the guest
// run on (continued as soon as QEMU has written the stream).
//
// Restore: verify the whole file first (magic, version, sizes, SHA-256);
// start QEMU with the saved configuration, its own disk backends on the same
// images, `-S -incoming defer`; `migrate-incoming fd:` on the file
// positioned at the stream; continue the guest if it was running. A failure
// at any step ends that QEMU and leaves no half-made domain behind.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { XvmError, errorMessage } from '../common/errors.js';
import { validateDomainConfig, type DomainConfig } from '../config/index.js';
import { QEMU_BINARY } from '../engine/qemu-args.js';
import type { QmpClient, QmpEvent } from '../engine/qmp.js';
import { pidAlive } from '../engine/process.js';
import type { Domain, DomainInfo, DomainManager } from '../daemon/domains.js';
import { diskProvider } from '../daemon/disks.js';
import { readAttachments } from '../daemon/nics.js';
import type { Logger } from '../daemon/log.js';
import { VERSION } from '../daemon/version.js';
import { encodePreamble, encodeTrailer, readSaveFile, type SaveFileInfo, type SaveHeader } from './format.js';
import { FollowHash } from './stream.js';
import { seekTo } from '../sys/fd.js';

export interface MigrateProgress {
  phase: string;
  /** Bytes done / total of the phase (total 0 when unknown). */
  done: number;
  total: number;
}

export interface SaveResult {
  domain: string;
  file: string;
  checkpoint: boolean;
  /** Size of the file and of QEMU's stream in it. */
  fileBytes: number;
  streamBytes: number;
  sha256: string;
  /** From the request to the file being durable. */
  ms: number;
  /** How long the guest's vCPUs were stopped (checkpoint of a running guest); null when the guest does not run on. */
  downtimeMs: number | null;
  /** The domain's state afterwards. */
  state: string;
  /** Where the time went, ms per step. */
  phases: Record<string, number>;
}

export interface RestoreResult {
  domain: string;
  file: string;
  ms: number;
  /** Verifying the file (checksum of the whole) took this long. */
  verifyMs: number;
  streamBytes: number;
  state: string;
  phases: Record<string, number>;
}

/** Where the time of an operation goes (ms per step, in order). */
class Phases {
  private t = performance.now();
  readonly ms: Record<string, number> = {};
  mark(name: string): void {
    const now = performance.now();
    this.ms[name] = Math.round((now - this.t) * 10) / 10;
    this.t = now;
  }
}


/** The name QEMU knows the save file's / restore file's fd by (QMP getfd). */
const SAVE_FD_NAME = 'xvm-save';

/** Huge migration bandwidth: a save is local, QEMU's default (32 MiB/s in 7.x) would throttle it. */
export const SAVE_MAX_BANDWIDTH = 64 * 1024 ** 3;

/** The machine type QEMU's `pc` alias stands for with this binary (e.g. pc-i440fx-7.2). */
let machineCache: string | undefined;
export function currentMachine(): string {
  if (machineCache) return machineCache;
  const r = spawnSync(QEMU_BINARY, ['-machine', 'help'], { encoding: 'utf8' });
  const m = /^pc\s+.*\(alias of (\S+)\)/m.exec(r.stdout ?? '');
  machineCache = m ? m[1]! : 'pc';
  return machineCache;
}

export function live(d: Domain, verb: string): QmpClient {
  if (!d.runtime || !d.qmp || d.preserved || (d.state !== 'running' && d.state !== 'paused')) {
    throw new XvmError('conflict', `cannot ${verb} domain '${d.name}': it is ${d.state}${d.preserved ? ' (preserved)' : ''}`);
  }
  return d.qmp;
}

/** Checks the target of a save: absolute path, existing writable folder, not a folder or device itself. */
export function checkSaveTarget(file: unknown): string {
  if (typeof file !== 'string' || !file) throw new XvmError('invalid', 'save needs a file name');
  if (!path.isAbsolute(file)) throw new XvmError('invalid', `the save file must be an absolute path (got '${file}')`);
  if (/[\u0000-\u001f]/.test(file)) throw new XvmError('invalid', 'the save file name contains control characters');
  const dir = path.dirname(file);
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new XvmError('invalid', `cannot save to ${file}: folder ${dir} does not exist`);
  }
  if (!st.isDirectory()) throw new XvmError('invalid', `cannot save to ${file}: ${dir} is not a folder`);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new XvmError('invalid', `cannot save to ${file}: folder ${dir} is not writable by xvmd`);
  }
  try {
    if (!fs.lstatSync(file).isFile()) throw new XvmError('invalid', `cannot save to ${file}: it exists and is not a regular file`);
  } catch (e) {
    if (e instanceof XvmError) throw e;
  }
  const user = diskProvider()?.users(file)[0];
  if (user) throw new XvmError('conflict', `cannot save to ${file}: it is the disk image behind domain '${user.domain}' (${user.vdev})`);
  return file;
}

/** QEMU emits MIGRATION events (status changes) once this is on: completion is seen at once, not at the next poll. */
export async function enableMigrationEvents(qmp: QmpClient): Promise<void> {
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
}

/**
 * `cont` after QEMU's migration completed: QEMU refuses it ("Migration is
 * not finalized yet") until its migration clean-up has run, a moment after
 * the completed status; retry until then.
 */
export async function contAfterMigration(qmp: QmpClient, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      await qmp.execute('cont');
      return;
    } catch (e) {
      if (!/not finalized/i.test(errorMessage(e)) || Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

export async function waitMigration(qmp: QmpClient, onProgress: ((p: MigrateProgress) => void) | undefined, fileBytes: () => number, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  // A MIGRATION event wakes the loop early; query-migrate stays the source of truth.
  const pause = new WakeablePause();
  const onEvent = (ev: QmpEvent) => {
    if (ev.event === 'MIGRATION' && ['completed', 'failed', 'cancelled'].includes(String(ev.data?.status))) pause.wake();
  };
  qmp.on('event', onEvent);
  try {
    for (;;) {
      const q = await qmp.execute<{ status?: string; 'error-desc'?: string; ram?: { transferred: number; remaining: number; total: number } }>('query-migrate');
      if (q.status === 'completed') return;
      if (q.status === 'failed' || q.status === 'cancelled') {
        throw new XvmError('internal', `QEMU's migration ${q.status}${q['error-desc'] ? `: ${q['error-desc']}` : ''}`);
      }
      if (q.ram) onProgress?.({ phase: 'memory', done: q.ram.total - q.ram.remaining, total: q.ram.total });
      else onProgress?.({ phase: 'memory', done: fileBytes(), total: 0 });
      if (Date.now() > end) throw new XvmError('timeout', `QEMU's migration did not complete within ${timeoutMs / 1000} s (status ${q.status})`);
      await pause.for(100);
    }
  } finally {
    qmp.off('event', onEvent);
  }
}

/** The header of a save file / a migration: what the domain is and how it ran. */
export async function describeDomain(domains: DomainManager, d: Domain, qmp: QmpClient, checkpoint: boolean): Promise<SaveHeader> {
  const info = domains.info(d.name);
  const disks = diskProvider()?.disksOf(d.uuid) ?? [];
  const version = await qmp.execute<{ qemu: { major: number; minor: number; micro: number } }>('query-version');
  return {
    xvmVersion: VERSION,
    createdAt: new Date().toISOString(),
    config: d.rec.config as unknown as Record<string, unknown>,
    state: d.state === 'paused' ? 'paused' : 'running',
    checkpoint,
    qemu: { version: `${version.qemu.major}.${version.qemu.minor}.${version.qemu.micro}`, machine: currentMachine() },
    memoryMiB: d.rec.config.memory,
    run: { readyAt: info.readyAt, reboots: info.reboots, startedAt: info.startedAt },
    disks: disks.map((x) => ({ vdev: x.vdev, image: x.image, format: x.format, readOnly: x.readOnly, ...(x.vol ? { vol: x.vol } : {}) })),
  };
}

export async function saveDomain(
  domains: DomainManager,
  log: Logger,
  name: string,
  fileArg: unknown,
  opts: { checkpoint?: boolean; timeoutSec?: number; onProgress?: (p: MigrateProgress) => void } = {},
): Promise<SaveResult> {
  const file = checkSaveTarget(fileArg);
  const checkpoint = opts.checkpoint ?? false;
  const timeoutMs = (opts.timeoutSec ?? 600) * 1000;
  return domains.exclusive(name, async (d) => {
    const qmp = live(d, checkpoint ? 'checkpoint' : 'save');
    const disks = diskProvider()?.disksOf(d.uuid) ?? [];
    const hot = disks.filter((x) => x.hotplug);
    if (hot.length) {
      throw new XvmError('conflict', `cannot save domain '${name}': disk ${hot.map((x) => x.vdev).join(', ')} was hot-plugged; detach it first ('xvm block-detach ${name} ${hot[0]!.vdev}') or add it to the configuration and restart the domain`);
    }
    // A restore starts QEMU from the configuration: devices plugged since
    // would be missing there and QEMU would refuse the stream.
    const cfgVcpus = d.rec.config.vcpus;
    if (d.runtime?.vcpusOnline !== undefined && d.runtime.vcpusOnline !== cfgVcpus) {
      throw new XvmError('conflict', `cannot save domain '${name}': it has ${d.runtime.vcpusOnline} vCPUs since 'xvm vcpu-set' and its configuration ${cfgVcpus}; set them back first ('xvm vcpu-set ${name} ${cfgVcpus}')`);
    }
    const hotVifs = readAttachments(domains.runDirOf(d)).filter((a) => a.hotplug);
    if (hotVifs.length) {
      throw new XvmError('conflict', `cannot save domain '${name}': NIC vif${hotVifs[0]!.index} was hot-plugged; detach it first ('xvm network-detach ${name} vif${hotVifs[0]!.index}') or add it to the configuration and restart the domain`);
    }
    const t0 = Date.now();
    const ph = new Phases();
    const header = await describeDomain(domains, d, qmp, checkpoint);
    const preamble = encodePreamble(header);
    const partial = `${file}.partial`;
    const fd = fs.openSync(partial, 'w+', 0o600); // read too: the checksum reads back what QEMU writes
    let hasher: FollowHash | undefined;
    let fdPassed = false;
    let migrating = false;
    let resumed = false;
    let stoppedAt: number | undefined;
    const wasRunning = d.state === 'running';
    try {
      // The header first, through the fd's own offset: QEMU writes its
      // stream from there on, straight into the file (no copy through xvmd).
      fs.writeSync(fd, preamble);
      await enableMigrationEvents(qmp);
      await qmp.execute('migrate-set-parameters', { 'max-bandwidth': SAVE_MAX_BANDWIDTH });
      await qmp.sendFd(SAVE_FD_NAME, fd);
      fdPassed = true;
      ph.mark('prepare');
      opts.onProgress?.({ phase: 'stopping', done: 0, total: 0 });
      if (wasRunning) {
        await qmp.execute('stop');
        stoppedAt = Date.now();
      }
      ph.mark('stop');
      d.console.mark(checkpoint ? `writing a checkpoint to ${file} (xvm save --checkpoint)` : `saving to ${file} (xvm save)`);
      // The checksum follows QEMU's writes (read back from the page cache as they land).
      hasher = new FollowHash(fd, 0, crypto.createHash('sha256'));
      migrating = true;
      await qmp.execute('migrate', { uri: `fd:${SAVE_FD_NAME}` });
      fdPassed = false; // QEMU took it
      await waitMigration(qmp, opts.onProgress, () => hasher?.pos ?? 0, timeoutMs);
      migrating = false;
      ph.mark('migrate');
      let downtimeMs: number | null = null;
      if (checkpoint && wasRunning) {
        // The memory is in the file (page cache): the guest goes on while xvmd checks and syncs it.
        await contAfterMigration(qmp);
        resumed = true;
        downtimeMs = Date.now() - stoppedAt!;
      }
      // 'completed' comes after QEMU flushed its last write: the file's size is the stream's end.
      const end = fs.fstatSync(fd).size;
      const streamBytes = end - preamble.length;
      if (streamBytes <= 0) throw new XvmError('internal', 'QEMU completed the migration but wrote no stream');
      opts.onProgress?.({ phase: 'sync', done: 0, total: 0 });
      await hasher.finish(end);
      ph.mark('hash');
      const trailer = encodeTrailer(streamBytes, hasher.digest());
      fs.writeSync(fd, trailer, 0, trailer.length, end);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.renameSync(partial, file);
      fsyncDir(path.dirname(file));
      ph.mark('sync');
      if (!checkpoint) await domains.retireLocked(d, `saved to ${file} (xvm save); 'xvm restore ${file}' continues it`);
      ph.mark(checkpoint ? 'resume' : 'end-qemu');
      const result: SaveResult = {
        domain: name,
        file,
        checkpoint,
        fileBytes: preamble.length + streamBytes + trailer.length,
        streamBytes,
        sha256: trailer.subarray(16).toString('hex'),
        ms: Date.now() - t0,
        downtimeMs,
        state: domains.info(name).state,
        phases: ph.ms,
      };
      log.info(checkpoint ? 'domain checkpointed' : 'domain saved', { domain: name, file, bytes: result.fileBytes, ms: result.ms, downtimeMs });
      return result;
    } catch (e) {
      hasher?.stop();
      try {
        fs.closeSync(fd);
      } catch {
        /* closed */
      }
      fs.rmSync(partial, { force: true });
      // The guest keeps running as it was.
      if (migrating) await qmp.execute('migrate_cancel').catch(() => undefined);
      if (fdPassed) await qmp.execute('closefd', { fdname: SAVE_FD_NAME }).catch(() => undefined);
      if (wasRunning && !resumed && d.qmp === qmp) {
        await contAfterMigration(qmp).catch((err) => log.error('could not resume the guest after a failed save', { domain: name, error: errorMessage(err) }));
      }
      log.error('save failed', { domain: name, file, error: errorMessage(e) });
      d.console.mark(`save to ${file} failed: ${errorMessage(e)}`);
      throw e instanceof XvmError ? e : new XvmError('internal', `saving domain '${name}' failed: ${errorMessage(e)}`);
    }
  });
}

export async function restoreDomain(
  domains: DomainManager,
  log: Logger,
  fileArg: unknown,
  opts: { name?: string; paused?: boolean; timeoutSec?: number; onProgress?: (p: MigrateProgress) => void } = {},
): Promise<RestoreResult> {
  if (typeof fileArg !== 'string' || !path.isAbsolute(fileArg)) throw new XvmError('invalid', `the save file must be an absolute path (got '${String(fileArg)}')`);
  const file = fileArg;
  const t0 = Date.now();
  const ph = new Phases();
  opts.onProgress?.({ phase: 'verifying', done: 0, total: 0 });
  const saved = await readSaveFile(file);
  const verifyMs = Date.now() - t0;
  ph.mark('verify');
  const header = saved.header;
  const machine = currentMachine();
  if (header.qemu.machine !== machine) {
    throw new XvmError('invalid', `${file} holds a guest of machine type ${header.qemu.machine} (QEMU ${header.qemu.version}); this host's QEMU runs ${machine}: restore it on a host with the same QEMU`);
  }
  let config: DomainConfig;
  try {
    config = validateDomainConfig(header.config);
  } catch (e) {
    throw new XvmError('invalid', `${file}: the saved domain configuration is not valid here: ${errorMessage(e)}`);
  }
  if (opts.name !== undefined) {
    const { uuid: _old, ...rest } = config;
    config = validateDomainConfig({ ...rest, name: opts.name });
  }
  const name = config.name;

  // The domain to restore into: the saved one (same uuid, not running) or a new definition.
  let created = false;
  let previous: DomainConfig | undefined;
  if (domains.has(name)) {
    const cur = domains.info(name);
    if (opts.name === undefined && cur.uuid !== config.uuid) {
      throw new XvmError('conflict', `a different domain named '${name}' exists (uuid ${cur.uuid}, the file's is ${config.uuid}); restore under another name with --name NEW`);
    }
    if (opts.name !== undefined) throw new XvmError('conflict', `a domain named '${name}' already exists; choose another --name`);
    if (cur.domid !== null) throw new XvmError('conflict', `domain '${name}' is ${cur.state}; destroy it first, or restore a copy with --name NEW`);
    previous = cur.config;
  } else {
    domains.define(config);
    created = true;
  }

  try {
    return await domains.exclusive(name, async (d) => {
      if (d.runtime) throw new XvmError('conflict', `domain '${name}' is already ${d.state}`);
      if (previous) domains.replaceConfigLocked(d, { ...config, uuid: d.uuid });
      opts.onProgress?.({ phase: 'starting', done: 0, total: saved.streamBytes });
      ph.mark('define');
      await domains.launchIncomingLocked(d);
      ph.mark('start-qemu');
      try {
        const qmp = d.qmp!;
        d.console.mark(`restoring from ${file} (xvm restore)`);
        // QEMU reads the stream straight from the file, from the stream's
        // offset (the fd's position, which QEMU's copy shares with ours).
        const fd = fs.openSync(file, 'r');
        // Progress: how far QEMU has read (the shared file position).
        const progress = setInterval(() => {
          const pos = filePosition(fd);
          if (pos !== undefined) opts.onProgress?.({ phase: 'memory', done: Math.min(saved.streamBytes, Math.max(0, pos - saved.streamOffset)), total: saved.streamBytes });
        }, 100);
        try {
          seekTo(fd, saved.streamOffset);
          await enableMigrationEvents(qmp);
          await qmp.sendFd(SAVE_FD_NAME, fd);
          await qmp.execute('migrate-incoming', { uri: `fd:${SAVE_FD_NAME}` });
          ph.mark('feed');
          await waitIncoming(d, qmp, (opts.timeoutSec ?? 600) * 1000);
        } finally {
          clearInterval(progress);
          fs.closeSync(fd);
        }
        opts.onProgress?.({ phase: 'memory', done: saved.streamBytes, total: saved.streamBytes });
        ph.mark('load');
        domains.setRunFacts(d, { readyAt: header.run.readyAt, reboots: header.run.reboots });
        domains.incomingDoneLocked(d);
        if (header.state === 'running' && !opts.paused) {
          await qmp.execute('cont');
          domains.markRunningLocked(d);
        }
        d.console.mark(`restored from ${file}`);
        ph.mark('resume');
      } catch (e) {
        const tail = qemuLogTail(domains, name);
        await domains.retireLocked(d, `restore from ${file} failed`);
        throw new XvmError(e instanceof XvmError ? e.code : 'internal', `restoring '${name}' from ${file} failed: ${errorMessage(e)}${tail ? `\nQEMU: ${tail}` : ''}`);
      }
      const result: RestoreResult = { domain: name, file, ms: Date.now() - t0, verifyMs, streamBytes: saved.streamBytes, state: domains.info(name).state, phases: ph.ms };
      log.info('domain restored', { domain: name, file, ms: result.ms, verifyMs });
      return result;
    });
  } catch (e) {
    // No half-made domain: a definition made for this restore goes, an old one gets its configuration back.
    if (created) {
      try {
        domains.undefine(name);
      } catch (err) {
        log.error('could not remove the domain of a failed restore', { domain: name, error: errorMessage(err) });
      }
    } else if (previous) {
      await domains.exclusive(name, async (d) => domains.replaceConfigLocked(d, previous!)).catch(() => undefined);
    }
    log.error('restore failed', { domain: name, file, error: errorMessage(e) });
    throw e;
  }
}

/**
 * Waits until QEMU has loaded the whole incoming stream (run state leaves
 * inmigrate). With migration events on, it polls slowly until QEMU's
 * MIGRATION event says the stream is in, then closely for the run state.
 */
export async function waitIncoming(d: Domain, qmp: QmpClient, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  let near = false;
  const pause = new WakeablePause();
  const onEvent = (ev: QmpEvent) => {
    if (ev.event === 'MIGRATION' && ['completed', 'failed', 'cancelled'].includes(String(ev.data?.status))) {
      near = true;
      pause.wake();
    }
  };
  qmp.on('event', onEvent);
  try {
    for (;;) {
      if (d.qmp !== qmp || !d.runtime || !pidAlive(d.runtime.pid)) throw new XvmError('internal', 'QEMU exited while loading the migration stream');
      // QEMU loading from a file does not yield to its monitor: the answer comes when the load is done.
      const st = await qmp.execute<{ status: string }>('query-status', undefined, Math.max(30_000, end - Date.now()));
      if (st.status !== 'inmigrate') {
        if (st.status === 'paused' || st.status === 'prelaunch' || st.status === 'running') return;
        throw new XvmError('internal', `QEMU is ${st.status} after loading the migration stream`);
      }
      if (Date.now() > end) throw new XvmError('timeout', `QEMU did not finish loading the migration stream within ${timeoutMs / 1000} s`);
      await pause.for(near ? 5 : 50);
    }
  } finally {
    qmp.off('event', onEvent);
  }
}

/** The offset of an open file description (shared with QEMU's copy of the fd), from /proc. */
function filePosition(fd: number): number | undefined {
  try {
    const m = /^pos:\s*(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** What a save file holds, checked (xvm restore --info / GET). */
export async function inspectSaveFile(file: unknown, checksum = true): Promise<SaveFileInfo> {
  if (typeof file !== 'string' || !path.isAbsolute(file)) throw new XvmError('invalid', `the save file must be an absolute path (got '${String(file)}')`);
  return readSaveFile(file, { checksum });
}

function qemuLogTail(domains: DomainManager, name: string): string {
  try {
    const f = domains.qemuLogFile(name);
    const text = fs.readFileSync(f, 'utf8');
    return text.trim().split('\n').filter((l) => l && !l.includes(' starting: ')).slice(-3).join(' | ');
  } catch {
    return '';
  }
}

function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    /* best effort */
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new XvmError('timeout', `timed out after ${ms / 1000} s waiting for ${what}`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

/** A pause that an event can cut short (QMP events wake the polling loops above). */
class WakeablePause {
  private waker: (() => void) | undefined;
  for(ms: number): Promise<void> {
    return new Promise<void>((r) => {
      const t = setTimeout(() => {
        this.waker = undefined;
        r();
      }, ms);
      this.waker = () => {
        clearTimeout(t);
        this.waker = undefined;
        r();
      };
    });
  }
  wake(): void {
    this.waker?.();
  }
}
