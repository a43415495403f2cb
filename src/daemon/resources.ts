// Resources of a running domain, changed while it runs (xl mem-set /
// vcpu-set): the memory target through the virtio balloon every domain has
// (`-device virtio-balloon-pci`), the vCPU count through ACPI CPU hotplug
// within `-smp vcpus,maxcpus=maxvcpus`.
import { XvmError } from '../common/errors.js';
import type { QmpClient } from '../engine/qmp.js';
import type { DomainManager } from './domains.js';
import type { Logger } from './log.js';
import { live } from './debug.js';

const MIB = 1024 * 1024;
/** Below this a Linux guest is unlikely to survive; xl refuses similar values. */
export const MIN_MEMORY_MIB = 32;

export interface MemoryResult {
  domain: string;
  /** The new balloon target, MiB. */
  targetMiB: number;
  /** What the guest holds now, MiB (QEMU's query-balloon); moves towards the target as the guest's balloon driver works. */
  actualMiB: number;
  /** The most the domain can have without a restart (its RAM size: max(memory, maxmem)). */
  maxMiB: number;
}

async function balloonActualMiB(qmp: QmpClient): Promise<number> {
  const r = await qmp.execute<{ actual: number }>('query-balloon');
  return Math.round(r.actual / MIB);
}

/** Sets the guest's memory target (xl mem-set); waits up to `waitMs` for the guest to reach it. */
export async function setMemory(domains: DomainManager, log: Logger, name: string, mib: number, waitMs = 0): Promise<MemoryResult> {
  const d = domains.get(name);
  const { qmp } = live(d, 'change the memory of', ['running', 'paused']);
  const cfg = d.rec.config;
  const maxMiB = Math.max(cfg.memory, cfg.maxmem ?? 0);
  if (!Number.isInteger(mib) || mib < MIN_MEMORY_MIB) throw new XvmError('invalid', `memory target must be a whole number of MiB, at least ${MIN_MEMORY_MIB} (got ${mib})`);
  if (mib > maxMiB) {
    throw new XvmError(
      'invalid',
      `domain '${name}' cannot grow to ${mib} MiB while running: its RAM is ${maxMiB} MiB (${cfg.maxmem ? 'maxmem' : 'memory'} at start); set maxmem = ${mib} in its configuration and restart it`,
    );
  }
  try {
    await qmp.execute('balloon', { value: mib * MIB });
  } catch (e) {
    throw new XvmError('unavailable', `domain '${name}' has no working memory balloon: ${(e as Error).message} (the guest needs the virtio_balloon driver)`);
  }
  domains.noteResources(name, { memTargetMiB: mib });
  log.info('memory target set', { domain: name, targetMiB: mib });
  d.console.mark(`memory target set to ${mib} MiB (xvm mem-set)`);
  let actual = await balloonActualMiB(qmp);
  const end = Date.now() + waitMs;
  while (Math.abs(actual - mib) > 1 && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 200));
    actual = await balloonActualMiB(qmp);
  }
  return { domain: name, targetMiB: mib, actualMiB: actual, maxMiB };
}

interface HotpluggableCpu {
  type: string;
  'vcpus-count': number;
  props: { 'socket-id'?: number; 'core-id'?: number; 'thread-id'?: number; 'die-id'?: number; 'node-id'?: number };
  'qom-path'?: string;
}

export interface VcpuResult {
  domain: string;
  /** vCPUs plugged in now. */
  vcpus: number;
  requested: number;
  maxVcpus: number;
  /** True while the guest has not yet released vCPUs asked to go (ACPI eject is the guest's to do). */
  pending: boolean;
}

function slotOrder(a: HotpluggableCpu, b: HotpluggableCpu): number {
  const k = (c: HotpluggableCpu) => [c.props['socket-id'] ?? 0, c.props['die-id'] ?? 0, c.props['core-id'] ?? 0, c.props['thread-id'] ?? 0];
  const ka = k(a);
  const kb = k(b);
  for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i]! - kb[i]!;
  return 0;
}

async function slots(qmp: QmpClient): Promise<HotpluggableCpu[]> {
  return (await qmp.execute<HotpluggableCpu[]>('query-hotpluggable-cpus')).sort(slotOrder);
}

/**
 * Plugs or unplugs vCPUs until `n` are present (xl vcpu-set). New vCPUs are
 * onlined by the guest (the default guest's hotplug helper does it); removal
 * is an ACPI eject request the guest completes, so it may still be pending.
 */
export async function setVcpus(domains: DomainManager, log: Logger, name: string, n: number, waitMs = 15_000): Promise<VcpuResult> {
  const d = domains.get(name);
  const { qmp } = live(d, 'change the vCPUs of', ['running']);
  const cfg = d.rec.config;
  const max = Math.max(cfg.vcpus, cfg.maxvcpus ?? 0);
  if (!Number.isInteger(n) || n < 1) throw new XvmError('invalid', `vCPU count must be a whole number >= 1 (got ${n})`);
  if (n > max) {
    throw new XvmError('invalid', `domain '${name}' can have at most ${max} vCPUs while running (maxvcpus${cfg.maxvcpus ? '' : ', not set, defaults to vcpus'}); set maxvcpus = ${n} in its configuration and restart it`);
  }
  let all = await slots(qmp);
  const plugged = all.filter((c) => c['qom-path']);
  if (n > plugged.length) {
    for (const slot of all.filter((c) => !c['qom-path']).slice(0, n - plugged.length)) {
      const id = `xvm-vcpu-s${slot.props['socket-id'] ?? 0}c${slot.props['core-id'] ?? 0}t${slot.props['thread-id'] ?? 0}`;
      await qmp.execute('device_add', { driver: slot.type, id, ...slot.props });
    }
  } else if (n < plugged.length) {
    // The last ones go first; the boot vCPU (the first slot) never does.
    for (const slot of plugged.slice(Math.max(1, n)).reverse()) {
      try {
        await qmp.execute('device_del', { id: slot['qom-path']! });
      } catch (e) {
        throw new XvmError('unavailable', `cannot unplug a vCPU of domain '${name}': ${(e as Error).message}`);
      }
    }
  }
  const end = Date.now() + waitMs;
  let count = plugged.length;
  for (;;) {
    all = await slots(qmp);
    count = all.filter((c) => c['qom-path']).length;
    if (count === n || Date.now() >= end) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  domains.noteResources(name, { vcpusOnline: count });
  log.info('vcpus set', { domain: name, requested: n, vcpus: count });
  d.console.mark(`vCPUs set to ${n} (xvm vcpu-set), ${count} present`);
  return { domain: name, vcpus: count, requested: n, maxVcpus: max, pending: count !== n };
}
