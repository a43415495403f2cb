// Asking apt which kernel package is current and fetching .deb files.
// Only apt-cache (local package lists, no network) and `apt-get download`
// (works as non-root, into any writable directory) are used.
import fs from 'node:fs/promises';
import path from 'node:path';
import { XvmError } from '../common/errors.js';
import { run, runOk } from './exec.js';

export const UPDATE_HINT = 'run apt-get update';

export interface AptPackage {
  name: string;
  version: string;
  /** Size of the .deb in bytes, from the package lists (0: not looked up). */
  size: number;
  /** SHA256 of the .deb from the package lists, if apt has it. */
  sha256?: string;
}

export interface KernelPackage extends AptPackage {
  /** The metapackage it was resolved from, e.g. linux-image-cloud-amd64. */
  meta: string;
  metaVersion: string;
}

/** The "Candidate:" of `apt-cache policy PKG` output; null if none. */
export function parseCandidate(policyOutput: string): string | null {
  const m = /^\s*Candidate:\s*(\S+)\s*$/m.exec(policyOutput);
  if (!m || m[1] === '(none)') return null;
  return m[1];
}

/** Fields of the first stanza of `apt-cache show` output (continuation lines joined). */
export function parseStanza(showOutput: string): Map<string, string> {
  const fields = new Map<string, string>();
  let last: string | null = null;
  for (const line of showOutput.split('\n')) {
    if (line.trim() === '') {
      if (fields.size > 0) break;
      continue;
    }
    if (/^\s/.test(line)) {
      if (last) fields.set(last, `${fields.get(last)}\n${line.trim()}`);
      continue;
    }
    const i = line.indexOf(':');
    if (i <= 0) continue;
    last = line.slice(0, i);
    fields.set(last, line.slice(i + 1).trim());
  }
  return fields;
}

export interface Dependency {
  name: string;
  /** e.g. '=' and '6.1.192-2' */
  op?: string;
  version?: string;
}

/** Parses a Depends: value into its alternatives groups. */
export function parseDepends(value: string): Dependency[][] {
  const groups: Dependency[][] = [];
  for (const group of value.split(',')) {
    const alts: Dependency[] = [];
    for (const alt of group.split('|')) {
      const m = /^\s*([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*(?:\(\s*(<<|<=|=|>=|>>)\s*([^)\s]+)\s*\))?/.exec(alt);
      if (m) alts.push({ name: m[1], op: m[2], version: m[3] });
    }
    if (alts.length) groups.push(alts);
  }
  return groups;
}

/**
 * The versioned kernel image package a metapackage depends on
 * (linux-image-cloud-amd64 -> linux-image-6.1.0-56-cloud-amd64).
 */
export function kernelDependency(dependsValue: string): Dependency | null {
  for (const group of parseDepends(dependsValue)) {
    for (const d of group) {
      if (/^linux-image-\d/.test(d.name)) return d;
    }
  }
  return null;
}

async function aptCache(args: string[]): Promise<string> {
  const r = await run('apt-cache', args, { timeoutMs: 60_000 });
  // `apt-cache show` exits 100 for unknown packages: the caller reports that.
  return r.code === 0 ? r.stdout.toString('utf8') : '';
}

// apt-cache rebuilds its whole cache on every call when Dir::Cache::pkgcache
// is "" (Docker's apt config does that): about a second of CPU each, so
// the calls are kept few. `show --no-all-versions` prints the candidate.
async function show(name: string, version?: string): Promise<Map<string, string>> {
  return parseStanza(await aptCache(['show', '--no-all-versions', version ? `${name}=${version}` : name]));
}

function noCandidate(name: string): XvmError {
  return new XvmError(
    'unavailable',
    `apt has no installable version of ${name}: ${UPDATE_HINT} (as root) so the package lists are current`,
  );
}

function toPackage(name: string, f: Map<string, string>): AptPackage {
  const version = f.get('Version');
  if (!version || f.get('Package') !== name) throw noCandidate(name);
  return { name, version, size: Number(f.get('Size') ?? 0) || 0, sha256: f.get('SHA256') };
}

/** Describes a package's candidate (or the given version); no download. */
export async function resolvePackage(name: string, version?: string): Promise<AptPackage> {
  const pkg = toPackage(name, await show(name, version));
  if (version && pkg.version !== version) throw noCandidate(`${name}=${version}`);
  return pkg;
}

/**
 * Resolves the metapackage's candidate to the versioned kernel package it
 * pulls in, and that package's version (never hard-coded).
 */
export async function resolveKernelPackage(meta: string): Promise<KernelPackage> {
  const metaFields = await show(meta);
  const metaVersion = toPackage(meta, metaFields).version;
  const dep = kernelDependency(metaFields.get('Depends') ?? '');
  if (!dep) {
    throw new XvmError('unavailable', `${meta} ${metaVersion} depends on no linux-image-<version> package; ${UPDATE_HINT}`);
  }
  // The metapackage pins its kernel with (= version): that is the version
  // (size and checksum are looked up only when it has to be downloaded).
  // Otherwise, the kernel package's own candidate.
  if (dep.op === '=' && dep.version) return { name: dep.name, version: dep.version, size: 0, meta, metaVersion };
  return { ...(await resolvePackage(dep.name)), meta, metaVersion };
}

/** Reads Package and Version from a .deb's control file; null if unreadable. */
export async function debIdentity(file: string): Promise<{ name: string; version: string } | null> {
  const r = await run('dpkg-deb', ['-f', file, 'Package', 'Version'], { timeoutMs: 60_000 });
  if (r.code !== 0) return null;
  const f = parseStanza(r.stdout.toString('utf8'));
  const name = f.get('Package');
  const version = f.get('Version');
  return name && version ? { name, version } : null;
}

/**
 * Downloads PKG=VERSION with `apt-get download` into an empty scratch
 * directory under `into`, and returns the .deb's path (moved into `into`).
 * onBytes reports progress by watching the file grow.
 */
export async function downloadPackage(
  pkg: AptPackage,
  into: string,
  onBytes?: (done: number, total: number) => void,
): Promise<string> {
  await fs.mkdir(into, { recursive: true });
  const scratch = await fs.mkdtemp(path.join(into, '.download-'));
  let timer: NodeJS.Timeout | undefined;
  try {
    if (onBytes) {
      const poll = async (): Promise<void> => {
        let done = 0;
        for (const dir of [scratch, path.join(scratch, 'partial')]) {
          try {
            for (const n of await fs.readdir(dir)) {
              const st = await fs.stat(path.join(dir, n)).catch(() => null);
              if (st?.isFile()) done += st.size;
            }
          } catch {
            /* not there yet */
          }
        }
        onBytes(Math.min(done, pkg.size || done), pkg.size || done);
      };
      timer = setInterval(() => void poll(), 250);
    }
    const r = await run('apt-get', ['download', '-q', `${pkg.name}=${pkg.version}`], {
      cwd: scratch,
      timeoutMs: 30 * 60_000,
    });
    if (r.code !== 0) {
      const why = r.stderr
        .split('\n')
        .filter((l) => /^E:/.test(l))
        .join(' ')
        .trim();
      throw new XvmError(
        'unavailable',
        `apt-get download ${pkg.name}=${pkg.version} failed${why ? `: ${why}` : ''}; ${UPDATE_HINT} and check the network`,
      );
    }
    const debs = (await fs.readdir(scratch)).filter((n) => n.endsWith('.deb'));
    if (debs.length !== 1) {
      throw new XvmError('internal', `apt-get download ${pkg.name} left ${debs.length} .deb files`);
    }
    const dest = path.join(into, debs[0]);
    await fs.rename(path.join(scratch, debs[0]), dest);
    if (onBytes) onBytes(pkg.size || 1, pkg.size || 1);
    return dest;
  } finally {
    if (timer) clearInterval(timer);
    await fs.rm(scratch, { recursive: true, force: true });
  }
}

/** Extracts a .deb's files (dpkg-deb -x) into dir. */
export async function extractDeb(deb: string, dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  await runOk('dpkg-deb', ['-x', deb, dir], { timeoutMs: 10 * 60_000 });
}
