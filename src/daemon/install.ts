// `xvm install` (virt-install) behind the API: from a few answers (name,
// memory, disk size or volume, ISO or installer kernel, graphics, network)
// to a running domain. Creates the disk volume, writes the configuration,
// starts the guest, and says which console to attach. What it created is
// removed again when a later step fails, so a failed install leaves nothing.
import { XvmError, errorMessage } from '../common/errors.js';
import type { InstallBody, InstallResult } from '../api/hvm-schema.js';
import type { DomainConfigInput } from '../config/index.js';
import { DEFAULT_POOL, parseVolumeRef, Storage } from '../storage/index.js';
import { diskProvider } from './disks.js';
import type { DomainManager } from './domains.js';
import { hvmProvider } from './hvm.js';
import type { Logger } from './log.js';

type Body = Required<Pick<InstallBody, 'name' | 'type' | 'memory' | 'vcpus' | 'start'>> & Omit<InstallBody, 'name' | 'type' | 'memory' | 'vcpus' | 'start'>;

/** The domain configuration an install makes (the volume already resolved to POOL/NAME). */
export function installConfig(b: Body, volRef: string | undefined): DomainConfigInput {
  const hvm = b.type === 'hvm';
  const graphics = b.graphics ?? (hvm ? 'vnc' : 'none');
  if (!hvm && graphics === 'vnc') throw new XvmError('invalid', 'a pv domain has no graphics card: use --graphics none (its console is the serial one)');
  if (!hvm && b.cdrom) throw new XvmError('invalid', 'a pv domain boots its kernel directly and has no CD-ROM: give --kernel/--initrd, or use --type hvm');
  if (!hvm && !b.kernel) throw new XvmError('invalid', 'a pv install needs --kernel (and usually --initrd) of the installer');
  if (hvm && !b.cdrom && !b.kernel && !volRef) throw new XvmError('invalid', 'nothing to boot: give --cdrom ISO, --kernel KERNEL, or --disk vol=… of an installed system');
  if (b.initrd && !b.kernel) throw new XvmError('invalid', '--initrd needs --kernel');
  if (b.extra && !b.kernel) throw new XvmError('invalid', '--extra is for the kernel command line: it needs --kernel');
  const cfg: DomainConfigInput = {
    name: b.name,
    type: b.type,
    memory: b.memory,
    vcpus: b.vcpus,
    disk: volRef ? [{ vol: volRef, vdev: hvm ? 'hda' : 'xvda', access: 'rw' }] : [],
    vif: b.network ? [{ network: b.network, model: hvm ? 'e1000' : 'virtio' }] : [],
    ...(b.kernel ? { kernel: b.kernel } : {}),
    ...(b.initrd ? { ramdisk: b.initrd } : {}),
    ...(b.extra ? { extra: b.extra } : {}),
    // An installer reboots into the installed system: poweroff after it ends is the user's to decide.
    on_reboot: 'restart',
  };
  if (hvm) {
    if (b.cdrom) cfg.cdrom = b.cdrom;
    cfg.boot = b.cdrom ? 'dc' : 'cd';
    cfg.vnc = graphics === 'vnc';
    if (b.vnclisten) cfg.vnclisten = b.vnclisten;
    if (b.vncpasswd) cfg.vncpasswd = b.vncpasswd;
  }
  return cfg;
}

export async function install(domains: DomainManager, log: Logger, b: Body): Promise<InstallResult> {
  if (domains.has(b.name)) throw new XvmError('conflict', `a domain named '${b.name}' already exists`);
  const storage = diskProvider()?.storage ?? new Storage();
  let volume: InstallResult['volume'] = null;
  if (b.disk && 'vol' in b.disk) {
    const r = await storage.resolve(b.disk.vol);
    volume = { pool: r.pool, name: r.name, path: r.path, created: false };
  }
  // Check the whole request before creating anything.
  const probeRef = volume ? `${volume.pool}/${volume.name}` : b.disk && 'size' in b.disk ? `${b.disk.pool ?? DEFAULT_POOL}/${b.name}-disk0` : undefined;
  installConfig(b, probeRef);
  if (b.disk && 'size' in b.disk) {
    const pool = b.disk.pool ?? DEFAULT_POOL;
    const name = `${b.name}-disk0`;
    parseVolumeRef(`${pool}/${name}`);
    const sizeMiB = Math.round(b.disk.size * 1024);
    const v = await storage.createVolume(pool, name, { size: `${sizeMiB}M`, format: b.disk.format ?? 'qcow2' });
    volume = { pool: v.pool, name: v.name, path: v.path, created: true };
    log.info('install: volume created', { domain: b.name, volume: `${v.pool}/${v.name}`, sizeMiB });
  }
  const undoVolume = async () => {
    if (volume?.created) await storage.deleteVolume(volume.pool, volume.name).catch((e) => log.error('install: could not remove the volume it made', { error: errorMessage(e) }));
  };
  let info;
  try {
    info = domains.define(installConfig(b, volume ? `${volume.pool}/${volume.name}` : undefined));
  } catch (e) {
    await undoVolume();
    throw e;
  }
  if (b.start) {
    try {
      info = await domains.start(b.name);
    } catch (e) {
      try {
        domains.undefine(b.name);
      } catch {
        /* keep it if it cannot go */
      }
      await undoVolume();
      throw e;
    }
  }
  const hvm = b.type === 'hvm';
  const vncOn = hvm && info.config.vnc !== false;
  const vnc = vncOn && b.start ? hvmProvider()?.vncInfo(domains, b.name) ?? null : null;
  log.info('install: domain created', { domain: b.name, started: b.start });
  return { domain: info, volume, vnc, console: vncOn ? 'vnc' : 'serial' };
}
