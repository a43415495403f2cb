// Kernel modules for the initramfs: which ones, in which order.
//
// The order comes from modules.dep. Debian's kernel packages do not ship
// modules.dep (their postinst runs depmod), so when it is missing we run
// `depmod -b` on the extracted tree, and without depmod we read each
// module's own `depends=` (its .modinfo section).
import fs from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { XvmError } from '../common/errors.js';
import { runOk } from './exec.js';

/**
 * Modules the default guest loads (names as the kernel spells them).
 * Their dependencies are added from modules.dep; built-in ones are skipped.
 */
export const GUEST_MODULES: readonly string[] = [
  'virtio_ring',
  'virtio',
  'virtio_pci',
  'virtio_mmio', // -M microvm (devices found through its ACPI tables)
  'virtio_blk',
  'virtio_net',
  '8021q', // VLAN interfaces (vconfig / ip link … type vlan) on a trunk port
  'virtio_console',
  'virtio_balloon',
  'virtio_rng',
  'pvpanic_mmio', // QEMU -device pvpanic (ISA, ACPI QEMU0001)
  'pvpanic_pci', // QEMU -device pvpanic-pci
  'button', // ACPI power button -> input event
  'evdev', // /dev/input/event* for acpid
];

const KO_RE = /\.ko(\.xz|\.zst|\.gz)?$/;

/** Module name from a path: kernel/drivers/char/hw_random/virtio-rng.ko.xz -> virtio_rng */
export function moduleName(file: string): string {
  return path.basename(file).replace(KO_RE, '').replace(/-/g, '_');
}

/** modules.dep text -> map of module path -> paths it depends on. */
export function parseModulesDep(text: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const i = line.indexOf(':');
    if (i <= 0) throw new XvmError('invalid', `modules.dep: malformed line: ${line.slice(0, 120)}`);
    const mod = line.slice(0, i).trim();
    const rest = line.slice(i + 1).trim();
    deps.set(mod, rest ? rest.split(/\s+/) : []);
  }
  return deps;
}

/** modules.builtin text -> set of module names built into the kernel. */
export function parseModulesBuiltin(text: string): Set<string> {
  const names = new Set<string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line) names.add(moduleName(line));
  }
  return names;
}

export interface ModulePlan {
  /** Module paths (relative to lib/modules/<kver>) in load order. */
  order: string[];
  /** Wanted modules that are built into the kernel (nothing to load). */
  builtin: string[];
  /** Wanted modules the package has neither as module nor built in. */
  missing: string[];
}

/**
 * Load order for `wanted` and everything they need: each module comes after
 * all of its dependencies (depth-first over modules.dep).
 */
export function planModules(deps: Map<string, string[]>, builtin: Set<string>, wanted: readonly string[]): ModulePlan {
  const byName = new Map<string, string>();
  for (const p of deps.keys()) byName.set(moduleName(p), p);
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (p: string, chain: string[]): void => {
    const s = state.get(p);
    if (s === 'done') return;
    if (s === 'visiting') {
      throw new XvmError('invalid', `modules.dep: dependency cycle: ${[...chain, p].map(moduleName).join(' -> ')}`);
    }
    state.set(p, 'visiting');
    for (const d of deps.get(p) ?? []) {
      if (!deps.has(d)) throw new XvmError('invalid', `modules.dep: ${p} needs ${d}, which has no entry`);
      visit(d, [...chain, p]);
    }
    state.set(p, 'done');
    order.push(p);
  };
  const builtinHit: string[] = [];
  const missing: string[] = [];
  for (const raw of wanted) {
    const name = raw.replace(/-/g, '_');
    const p = byName.get(name);
    if (p) visit(p, []);
    else if (builtin.has(name)) builtinHit.push(name);
    else missing.push(name);
  }
  return { order, builtin: builtinHit, missing };
}

/** A module file's contents, decompressed if it is .ko.xz/.ko.zst/.ko.gz. */
export async function readModule(file: string): Promise<Buffer> {
  if (file.endsWith('.ko')) return fs.readFile(file);
  if (file.endsWith('.ko.gz')) return zlib.gunzipSync(await fs.readFile(file));
  if (file.endsWith('.ko.xz')) return (await runOk('xz', ['-dc', file], { timeoutMs: 60_000 })).stdout;
  if (file.endsWith('.ko.zst')) return (await runOk('zstd', ['-qdc', file], { timeoutMs: 60_000 })).stdout;
  throw new XvmError('invalid', `not a kernel module: ${file}`);
}

/** The `depends=` list of a module image's .modinfo strings. */
export function modinfoDepends(ko: Buffer): string[] {
  // .modinfo is a run of NUL-terminated key=value strings; depends= is
  // unique in it, and a NUL precedes it.
  const key = Buffer.from('\0depends=');
  const i = ko.indexOf(key);
  if (i < 0) return [];
  const start = i + key.length;
  const end = ko.indexOf(0, start);
  const v = ko.subarray(start, end < 0 ? ko.length : end).toString('latin1');
  return v ? v.split(',').filter(Boolean) : [];
}

async function walkModules(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await walkModules(dir, r)));
    else if (KO_RE.test(e.name)) out.push(r);
  }
  return out;
}

/**
 * modules.dep content for just the modules reachable from `wanted`, built
 * from each module's own depends= (fallback when depmod is missing).
 */
export async function depsFromModinfo(modDir: string, wanted: readonly string[]): Promise<Map<string, string[]>> {
  const byName = new Map<string, string>();
  for (const p of await walkModules(modDir, 'kernel')) byName.set(moduleName(p), p);
  const deps = new Map<string, string[]>();
  const queue = wanted.map((w) => byName.get(w.replace(/-/g, '_'))).filter((p): p is string => !!p);
  while (queue.length) {
    const p = queue.pop()!;
    if (deps.has(p)) continue;
    const names = modinfoDepends(await readModule(path.join(modDir, p)));
    const paths = names.map((n) => {
      const d = byName.get(n.replace(/-/g, '_'));
      if (!d) throw new XvmError('invalid', `module ${moduleName(p)} depends on ${n}, which the package lacks`);
      return d;
    });
    deps.set(p, paths);
    queue.push(...paths);
  }
  return deps;
}

/**
 * The modules.dep of an extracted kernel package (modDir = root/lib/modules/<kver>):
 * the package's own, else `depmod -b root kver`, else (no depmod) a partial
 * one from the wanted modules' modinfo. `source` says which.
 */
export async function loadModulesDep(
  root: string,
  modDir: string,
  kver: string,
  wanted: readonly string[],
): Promise<{ deps: Map<string, string[]>; source: 'package' | 'depmod' | 'modinfo' }> {
  const depFile = path.join(modDir, 'modules.dep');
  const read = async (): Promise<string | null> => fs.readFile(depFile, 'utf8').catch(() => null);
  let text = await read();
  if (text !== null) return { deps: parseModulesDep(text), source: 'package' };
  try {
    await runOk('depmod', ['-b', root, kver], { timeoutMs: 5 * 60_000 });
    text = await read();
    if (text !== null) return { deps: parseModulesDep(text), source: 'depmod' };
  } catch (e) {
    if (!(e instanceof XvmError && e.code === 'unavailable')) throw e;
    // no depmod (kmod not installed): fall through
  }
  return { deps: await depsFromModinfo(modDir, wanted), source: 'modinfo' };
}

/** The module trees in an extracted package: [lib|usr/lib]/modules/<kver>. */
export async function moduleTreesIn(root: string): Promise<{ kver: string; modDir: string }[]> {
  for (const lib of ['lib', 'usr/lib']) {
    const dir = path.join(root, lib, 'modules');
    const names = await fs.readdir(dir).catch(() => [] as string[]);
    if (names.length) return names.sort().map((kver) => ({ kver, modDir: path.join(dir, kver) }));
  }
  return [];
}
