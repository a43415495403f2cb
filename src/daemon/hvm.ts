// The HVM provider: what makes a `type = "hvm"` domain an unmodified PC.
// Before QEMU starts it resolves the emulated disks and CD-ROMs (files, or
// volumes by their active layer), prepares the firmware (OVMF needs a
// per-domain copy of its variable store, kept across starts under
// lib/nvram/), starts the domain's VNC server (vnc.ts) and returns the QEMU
// arguments (src/engine/hvm-args.ts). Paravirtual disks (vdX / xvdX) stay
// with the disk provider; NICs with the vif provider.
//
// It also owns the verbs that only make sense for an HVM guest while it
// runs: CD-ROM insert/eject, screenshots, the VNC address.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { XvmError, errorMessage } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';
import type { DomainConfig } from '../config/index.js';
import { buildHvmArgs, emulatedSlot, isEmulatedVdev, type EmulatedDisk } from '../engine/hvm-args.js';
import type { QmpClient } from '../engine/qmp.js';
import { Storage } from '../storage/index.js';
import type { DeviceContext, DeviceProvider, DomainManager } from './domains.js';
import { diskProvider } from './disks.js';
import type { Logger } from './log.js';
import { randomVncPassword } from './vnc-auth.js';
import { VNC_BASE_PORT, VncService, vncFiles, type VncEndpoint, type VncInfo, type VncToken } from './vnc.js';
import { deviceEvent } from './device-log.js';

export const OVMF_CODE = process.env.XVM_OVMF_CODE ?? '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = process.env.XVM_OVMF_VARS ?? '/usr/share/OVMF/OVMF_VARS_4M.fd';

export interface CdromInfo {
  vdev: string;
  /** The inserted image, or null when the drive is empty. */
  medium: string | null;
  trayOpen: boolean;
}

let current: HvmProvider | undefined;
/** The provider xvmd registered (for the API routes). */
export function hvmProvider(): HvmProvider | undefined {
  return current;
}

function imageFormat(file: string): 'raw' | 'qcow2' {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    return fs.readSync(fd, b, 0, 4, 0) === 4 && b.toString('latin1') === 'QFI\xfb' ? 'qcow2' : 'raw';
  } finally {
    fs.closeSync(fd);
  }
}

function checkReadable(domain: string, what: string, file: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
    fs.accessSync(file, fs.constants.R_OK);
  } catch (e) {
    throw new XvmError('not_found', `domain '${domain}': ${what}: cannot open ${file}: ${(e as NodeJS.ErrnoException).code ?? errorMessage(e)}`);
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new XvmError('invalid', `domain '${domain}': ${what}: ${file} is neither a file nor a block device`);
}

export class HvmProvider implements DeviceProvider {
  readonly kind = 'hvm' as const;
  readonly vnc: VncService;
  private readonly paths: StatePaths;
  private readonly log: Logger;
  /** The VNC endpoint each domain had last (by uuid), reused when it starts again. */
  private readonly lastVnc = new Map<string, VncEndpoint>();

  constructor(opts: { paths: StatePaths; log: Logger }) {
    this.paths = opts.paths;
    this.log = opts.log;
    this.vnc = new VncService(opts.log);
    current = this;
  }

  async close(): Promise<void> {
    await this.vnc.closeAll();
    if (current === this) current = undefined;
  }

  private storage(): Storage {
    return diskProvider()?.storage ?? new Storage();
  }

  /** The emulated disks and CD-ROMs of an HVM config, with their image files resolved. */
  async emulatedDisks(name: string, cfg: DomainConfig): Promise<EmulatedDisk[]> {
    const out: EmulatedDisk[] = [];
    if (cfg.cdrom !== undefined) {
      checkReadable(name, 'cdrom', cfg.cdrom);
      out.push({ vdev: 'hdc', file: cfg.cdrom, format: 'raw', readOnly: true, devtype: 'cdrom' });
    }
    for (const d of cfg.disk) {
      if (!isEmulatedVdev(d.vdev, d.devtype)) continue;
      try {
        emulatedSlot(d.vdev);
      } catch (e) {
        throw new XvmError('invalid', `domain '${name}': disk ${d.vdev}: ${errorMessage(e)}`);
      }
      let file: string | undefined;
      let format: 'raw' | 'qcow2' | undefined = d.format;
      if (d.vol !== undefined) {
        let r;
        try {
          r = await this.storage().resolve(d.vol);
        } catch (e) {
          throw new XvmError('not_found', `domain '${name}': disk ${d.vdev}: ${errorMessage(e)}`);
        }
        if (r.readOnly && d.access === 'rw') {
          throw new XvmError('conflict', `domain '${name}': disk ${d.vdev}: volume ${r.pool}/${r.name} is a read-only base of clones; attach it read-only or use a clone`);
        }
        file = r.path;
        format = r.format;
      } else if (d.target !== undefined) {
        checkReadable(name, `disk ${d.vdev}`, d.target);
        file = d.target;
        format ??= d.devtype === 'cdrom' ? 'raw' : imageFormat(d.target);
      }
      if (file !== undefined && d.access === 'rw') {
        const users = diskProvider()?.users(file) ?? [];
        if (users.length > 0) {
          const u = users[0]!;
          throw new XvmError('conflict', `domain '${name}': disk ${d.vdev}: ${d.vol ?? file} is already in use by domain '${u.domain}' (${u.vdev})`);
        }
      }
      out.push({ vdev: d.vdev, file, format: format ?? 'raw', readOnly: d.access === 'ro', devtype: d.devtype });
    }
    return out;
  }

  /** This domain's UEFI variable store: a copy of OVMF's template, made on first use and kept. */
  nvramFile(uuid: string): string {
    const file = path.join(this.paths.lib, 'nvram', `${uuid}.fd`);
    if (!fs.existsSync(file)) {
      fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      const tmp = `${file}.tmp-${process.pid}`;
      fs.copyFileSync(OVMF_VARS, tmp);
      fs.renameSync(tmp, file);
    }
    return file;
  }

  // ---------------------------------------------------------------- DeviceProvider

  async prepare(ctx: DeviceContext): Promise<string[]> {
    const cfg = ctx.config;
    if (cfg.type !== 'hvm') return [];
    const disks = await this.emulatedDisks(ctx.name, cfg);
    const firmware = cfg.firmware ?? 'bios';
    let ovmfVars: string | undefined;
    if (firmware === 'uefi') {
      for (const f of [OVMF_CODE, OVMF_VARS]) {
        if (!fs.existsSync(f)) throw new XvmError('unavailable', `domain '${ctx.name}': firmware = "uefi" needs ${f} (Debian package ovmf; run scripts/install-deps.sh)`);
      }
      ovmfVars = this.nvramFile(ctx.uuid);
    }
    const vncOn = cfg.vnc !== false;
    if (vncOn) {
      const f = vncFiles(ctx.runDir);
      if (Buffer.byteLength(f.socket) > 107) throw new XvmError('invalid', `the runtime folder ${ctx.runDir} is too deep for the VNC socket path: use a shorter XVM_HOME`);
      // A restart (on_crash = "restart", xvm destroy + start) keeps the address and the
      // random password the user already has, while the same xvmd runs.
      const last = this.lastVnc.get(ctx.uuid);
      const listen = cfg.vnclisten ?? '127.0.0.1';
      const e = await this.vnc.start(ctx.name, ctx.uuid, ctx.runDir, {
        listen,
        // An empty vncpasswd does not mean "no password" here: no screen without one.
        password: cfg.vncpasswd ? cfg.vncpasswd : last?.password ?? randomVncPassword(),
        ...(last && last.listen === listen ? { port: last.port } : {}),
      });
      this.lastVnc.set(ctx.uuid, e);
    }
    const args = buildHvmArgs({
      firmware,
      ovmfCode: OVMF_CODE,
      ovmfVars,
      disks,
      boot: cfg.boot ?? 'cd',
      vncSocket: vncOn ? vncFiles(ctx.runDir).socket : undefined,
    });
    deviceEvent('hvm-prepare', { domain: ctx.name, firmware, disks: disks.map((d) => d.vdev), vnc: vncOn });
    return args;
  }

  async adopt(ctx: DeviceContext): Promise<void> {
    if (ctx.config.type !== 'hvm' || ctx.config.vnc === false) return;
    const saved = this.vnc.saved(ctx.runDir);
    if (!saved) {
      this.log.warn('vnc state of a running domain is missing; no VNC server for it', { domain: ctx.name });
      return;
    }
    this.lastVnc.set(ctx.uuid, await this.vnc.start(ctx.name, ctx.uuid, ctx.runDir, saved));
  }

  async release(ctx: DeviceContext): Promise<void> {
    await this.vnc.stop(ctx.uuid);
  }

  // ---------------------------------------------------------------- verbs of a running HVM guest

  private live(domains: DomainManager, name: string, verb: string): { qmp: QmpClient; uuid: string; config: DomainConfig; runDir: string } {
    const d = domains.get(name);
    if (d.rec.config.type !== 'hvm') throw new XvmError('invalid', `cannot ${verb} domain '${name}': it is a pv domain (type = "hvm" only)`);
    if (!d.runtime || !d.qmp || d.preserved || !['running', 'paused'].includes(d.state)) {
      throw new XvmError('conflict', `cannot ${verb} domain '${name}': it is ${d.state}${d.preserved ? ' (preserved)' : ''}`);
    }
    return { qmp: d.qmp, uuid: d.uuid, config: d.rec.config, runDir: path.join(this.paths.run, 'domains', d.uuid) };
  }

  async cdroms(domains: DomainManager, name: string): Promise<CdromInfo[]> {
    const { qmp } = this.live(domains, name, 'list the CD-ROMs of');
    const blocks = await qmp.execute<{ qdev?: string; removable: boolean; tray_open?: boolean; inserted?: { file: string } }[]>('query-block');
    return blocks
      .filter((b) => b.removable && b.qdev)
      .map((b) => ({ vdev: b.qdev!.replace(/^.*\//, ''), medium: b.inserted?.file ?? null, trayOpen: Boolean(b.tray_open) }));
  }

  private async pickCdrom(domains: DomainManager, name: string, vdev: string | undefined): Promise<string> {
    const cds = await this.cdroms(domains, name);
    if (cds.length === 0) throw new XvmError('invalid', `domain '${name}' has no CD-ROM drive (add cdrom = "/path.iso" or a disk with devtype=cdrom, then restart it)`);
    if (vdev === undefined) return cds[0]!.vdev;
    if (!cds.some((c) => c.vdev === vdev)) throw new XvmError('not_found', `domain '${name}' has no CD-ROM drive ${vdev} (it has ${cds.map((c) => c.vdev).join(', ')})`);
    return vdev;
  }

  async cdromInsert(domains: DomainManager, name: string, file: string, vdev?: string): Promise<CdromInfo[]> {
    this.live(domains, name, 'insert a CD into');
    checkReadable(name, 'cdrom-insert', file);
    const id = await this.pickCdrom(domains, name, vdev);
    const { qmp } = this.live(domains, name, 'insert a CD into');
    await qmp.execute('blockdev-change-medium', { id, filename: file, format: 'raw', 'read-only-mode': 'read-only' });
    this.log.info('cdrom inserted', { domain: name, vdev: id, file });
    deviceEvent('cdrom-insert', { domain: name, device: id, file });
    return this.cdroms(domains, name);
  }

  async cdromEject(domains: DomainManager, name: string, vdev?: string): Promise<CdromInfo[]> {
    const id = await this.pickCdrom(domains, name, vdev);
    const { qmp } = this.live(domains, name, 'eject the CD of');
    // force: the guest may have locked the tray (a mounted CD); the user asked.
    await qmp.execute('eject', { id, force: true });
    this.log.info('cdrom ejected', { domain: name, vdev: id });
    deviceEvent('cdrom-eject', { domain: name, device: id });
    return this.cdroms(domains, name);
  }

  /** The guest's screen as PNG bytes (QMP screendump). */
  async screenshot(domains: DomainManager, name: string): Promise<Buffer> {
    const { qmp, runDir } = this.live(domains, name, 'take a screenshot of');
    const file = path.join(runDir, `screendump-${crypto.randomBytes(6).toString('hex')}.png`);
    try {
      await qmp.execute('screendump', { filename: file, format: 'png' }, 30_000);
      return fs.readFileSync(file);
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  vncInfo(domains: DomainManager, name: string): VncInfo {
    const { uuid, config } = this.live(domains, name, 'show the VNC console of');
    if (config.vnc === false) throw new XvmError('invalid', `domain '${name}' has vnc = 0: it has no graphics console`);
    const e = this.vnc.endpoint(uuid);
    if (!e) throw new XvmError('unavailable', `domain '${name}' has no VNC server right now (see xvmd's log)`);
    const display = e.port >= VNC_BASE_PORT && e.port < VNC_BASE_PORT + 100 ? e.port - VNC_BASE_PORT : null;
    const host = e.listen.includes(':') ? `[${e.listen}]` : e.listen;
    return {
      domain: name,
      ...e,
      display,
      address: display !== null ? `${host}:${display}` : `${host}::${e.port}`,
      websocket: `/v1/domains/${encodeURIComponent(name)}/vnc/ws`,
    };
  }

  vncToken(domains: DomainManager, name: string): VncToken {
    this.vncInfo(domains, name);
    return this.vnc.issueToken(name);
  }
}
