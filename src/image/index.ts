// The default paravirtual guest: Debian's cloud kernel plus an initramfs
// made here (busybox + virtio modules + guest/rootfs), cached in a
// directory with a manifest. See guest/README.md for what the guest does.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { XvmError, errorMessage } from '../common/errors.js';
import {
  debIdentity,
  downloadPackage,
  extractDeb,
  resolveKernelPackage,
  resolvePackage,
  type KernelPackage,
} from './apt.js';
import { INSTALL_HINT } from './exec.js';
import {
  archiveTree,
  busyboxVersion,
  compress,
  isStaticElf,
  populateStage,
  rootfsFiles,
  type Compression,
} from './initramfs.js';
import {
  GUEST_MODULES,
  loadModulesDep,
  moduleName,
  moduleTreesIn,
  parseModulesBuiltin,
  planModules,
  readModule,
} from './modules.js';
import { processExists } from '../common/pid.js';

/** The guest prints one console line starting with this when it is ready. */
export const READY_BANNER = 'XVM_GUEST_READY';

/** Debian's metapackage for the current cloud kernel. */
export const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';

/**
 * Kernel command line of the default guest (the daemon appends xvm.name=).
 * `quiet` matters most under TCG: every console line costs serial time.
 */
export const DEFAULT_CMDLINE = 'console=ttyS0 quiet';

/** How the initramfs is compressed (measured under TCG: see guest/README.md). */
export const INITRD_COMPRESSION: Compression = 'gzip';

/**
 * Bump when the build itself changes (staging layout, module list handling).
 * The manifest's builderVersion also carries a hash of guest/rootfs, the
 * module list, the command line and the compression, so editing the init
 * scripts rebuilds cached images by itself.
 */
export const BUILDER_VERSION = 2;

export interface GuestImage {
  kernel: string;
  initrd: string;
  cmdline: string;
  kernelVersion: string;
  packageName: string;
  packageVersion: string;
  sha256: { kernel: string; initrd: string };
  builtAt: string;
}

export interface ImageProgress {
  step: string;
  done?: number;
  total?: number;
}

export interface Manifest {
  packageName: string;
  packageVersion: string;
  kernelVersion: string;
  builderVersion: string;
  sha256: { kernel: string; initrd: string };
  builtAt: string;
  cmdline: string;
  metaPackage?: string;
  metaVersion?: string;
  busybox?: string;
  compression?: Compression;
  modules?: string[];
}

const KERNEL_FILE = 'vmlinuz';
const INITRD_FILE = 'initrd.img';
const MANIFEST_FILE = 'manifest.json';
const DEBS_DIR = 'debs';
const LOCK_FILE = '.lock';

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await fs.open(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

const HEX64 = /^[0-9a-f]{64}$/;

function parseManifest(text: string): Manifest | null {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof m !== 'object' || m === null) return null;
  const o = m as Record<string, unknown>;
  const str = (k: string) => typeof o[k] === 'string' && (o[k] as string).length > 0;
  if (!['packageName', 'packageVersion', 'kernelVersion', 'builderVersion', 'builtAt', 'cmdline'].every(str)) return null;
  const s = o.sha256 as Record<string, unknown> | undefined;
  if (typeof s !== 'object' || s === null) return null;
  if (typeof s.kernel !== 'string' || !HEX64.test(s.kernel)) return null;
  if (typeof s.initrd !== 'string' || !HEX64.test(s.initrd)) return null;
  return o as unknown as Manifest;
}

function toImage(dir: string, m: Manifest): GuestImage {
  return {
    kernel: path.join(dir, KERNEL_FILE),
    initrd: path.join(dir, INITRD_FILE),
    cmdline: m.cmdline,
    kernelVersion: m.kernelVersion,
    packageName: m.packageName,
    packageVersion: m.packageVersion,
    sha256: { kernel: m.sha256.kernel, initrd: m.sha256.initrd },
    builtAt: m.builtAt,
  };
}

async function readValid(dir: string): Promise<Manifest | null> {
  const text = await fs.readFile(path.join(dir, MANIFEST_FILE), 'utf8').catch(() => null);
  if (text === null) return null;
  const m = parseManifest(text);
  if (!m) return null;
  try {
    const [k, i] = await Promise.all([
      sha256File(path.join(dir, KERNEL_FILE)),
      sha256File(path.join(dir, INITRD_FILE)),
    ]);
    if (k !== m.sha256.kernel || i !== m.sha256.initrd) return null;
  } catch {
    return null;
  }
  return m;
}

/**
 * The cached image in dir, if its manifest is readable and both files match
 * their checksums. No apt calls; null otherwise.
 */
export async function readDefaultImage(dir: string): Promise<GuestImage | null> {
  const abs = path.resolve(dir);
  const m = await readValid(abs);
  // Built by another version of the builder or from other guest/rootfs files
  // (xvm was upgraded): stale, so the next domain start rebuilds it.
  if (m && m.builderVersion !== (await builderVersion())) return null;
  return m ? toImage(abs, m) : null;
}

/** The builder version string recorded in manifests: constant + hash of the inputs. */
export async function builderVersion(): Promise<string> {
  const h = createHash('sha256');
  for (const f of await rootfsFiles()) {
    h.update(`${f.rel}\0${f.data.length}\0`);
    h.update(f.data);
  }
  h.update(`\0${GUEST_MODULES.join(',')}\0${DEFAULT_CMDLINE}\0${INITRD_COMPRESSION}`);
  return `${BUILDER_VERSION}+${h.digest('hex').slice(0, 12)}`;
}

// ---- lock -----------------------------------------------------------------


const heldLocks = new Set<string>();

/**
 * Exclusive build lock for dir (a file created with O_EXCL holding
 * "pid host"). A lock whose process is gone, or older than staleMs, is
 * broken. Callers in the same process queue up too.
 */
async function acquireLock(dir: string, onWait: () => void, timeoutMs = 20 * 60_000): Promise<() => Promise<void>> {
  const file = path.join(dir, LOCK_FILE);
  const token = `${process.pid} ${os.hostname()} ${Date.now()} ${Math.random().toString(36).slice(2)}\n`;
  const staleMs = 30 * 60_000;
  const deadline = Date.now() + timeoutMs;
  let waited = false;
  for (;;) {
    if (!heldLocks.has(file)) {
      try {
        await fs.writeFile(file, token, { flag: 'wx' });
        heldLocks.add(file);
        return async () => {
          heldLocks.delete(file);
          const cur = await fs.readFile(file, 'utf8').catch(() => null);
          if (cur === token) await fs.rm(file, { force: true });
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      // Someone holds it: break it if its owner is gone.
      const cur = await fs.readFile(file, 'utf8').catch(() => null);
      const st = await fs.stat(file).catch(() => null);
      if (cur !== null && st) {
        const [pidStr, host] = cur.split(' ');
        const pid = Number(pidStr);
        const sameHost = host === os.hostname();
        const dead = sameHost && Number.isInteger(pid) && pid > 0 && pid !== process.pid && !processExists(pid);
        const malformed = !Number.isInteger(pid) || pid <= 0;
        const stale = Date.now() - st.mtimeMs > staleMs;
        if (dead || stale || (malformed && Date.now() - st.mtimeMs > 5_000)) {
          await fs.rm(file, { force: true });
          continue;
        }
      }
    }
    if (Date.now() > deadline) {
      throw new XvmError('timeout', `another process has been building the guest image in ${dir} for too long (lock ${file})`);
    }
    if (!waited) {
      waited = true;
      onWait();
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

// ---- build ----------------------------------------------------------------

async function findHostBusybox(): Promise<string | null> {
  for (const p of ['/bin/busybox', '/usr/bin/busybox', '/sbin/busybox', '/usr/sbin/busybox']) {
    try {
      const fh = await fs.open(p, 'r');
      try {
        const buf = Buffer.alloc(64 * 1024);
        await fh.read(buf, 0, buf.length, 0);
        if (isStaticElf(buf)) return p;
      } finally {
        await fh.close();
      }
    } catch {
      /* not there */
    }
  }
  return null;
}

/**
 * A cached .deb of name=version in debsDir (its control file says so), also
 * checked against apt's SHA256 when that is known.
 */
async function cachedDeb(debsDir: string, name: string, version: string, sha256?: string): Promise<string | null> {
  const names = await fs.readdir(debsDir).catch(() => [] as string[]);
  for (const n of names) {
    if (!n.startsWith(`${name}_`) || !n.endsWith('.deb')) continue;
    const p = path.join(debsDir, n);
    const id = await debIdentity(p);
    if (!id || id.name !== name || id.version !== version) continue;
    if (sha256 && (await sha256File(p)) !== sha256) {
      await fs.rm(p, { force: true });
      continue;
    }
    return p;
  }
  return null;
}

async function obtainDeb(
  debsDir: string,
  pkg: { name: string; version: string; size: number; sha256?: string },
  progress: (p: ImageProgress) => void,
): Promise<string> {
  const hit = await cachedDeb(debsDir, pkg.name, pkg.version, pkg.sha256);
  if (hit) return hit;
  // Size (progress) and SHA256 (verification) from the package lists.
  if (!pkg.size || !pkg.sha256) pkg = await resolvePackage(pkg.name, pkg.version);
  progress({ step: `download ${pkg.name} ${pkg.version}`, done: 0, total: pkg.size });
  const deb = await downloadPackage(pkg, debsDir, (done, total) =>
    progress({ step: `download ${pkg.name} ${pkg.version}`, done, total }),
  );
  if (pkg.sha256 && (await sha256File(deb)) !== pkg.sha256) {
    await fs.rm(deb, { force: true });
    throw new XvmError('unavailable', `${path.basename(deb)} does not match apt's checksum; run apt-get update and retry`);
  }
  return deb;
}

/** Old .debs (other versions) are removed once a build succeeded. */
async function pruneDebs(debsDir: string, keep: string[]): Promise<void> {
  const keepSet = new Set(keep.map((k) => path.basename(k)));
  for (const n of await fs.readdir(debsDir).catch(() => [] as string[])) {
    if (n.endsWith('.deb') && !keepSet.has(n)) await fs.rm(path.join(debsDir, n), { force: true });
  }
}

/** Leftovers of builds that were killed (only called while holding the lock). */
async function removeLeftovers(dir: string, debsDir: string): Promise<void> {
  for (const [d, prefix] of [
    [dir, '.build-'],
    [debsDir, '.download-'],
  ] as const) {
    for (const n of await fs.readdir(d).catch(() => [] as string[])) {
      if (n.startsWith(prefix)) await fs.rm(path.join(d, n), { recursive: true, force: true });
    }
  }
}

async function build(dir: string, kpkg: KernelPackage, progress: (p: ImageProgress) => void): Promise<Manifest> {
  const debsDir = path.join(dir, DEBS_DIR);
  await fs.mkdir(debsDir, { recursive: true });
  await removeLeftovers(dir, debsDir);
  const work = await fs.mkdtemp(path.join(dir, '.build-'));
  try {
    const kernelDeb = await obtainDeb(debsDir, kpkg, progress);
    const keepDebs = [kernelDeb];

    let busybox = await findHostBusybox();
    if (!busybox) {
      progress({ step: 'busybox-static' });
      const bb = await resolvePackage('busybox-static').catch((e: unknown) => {
        throw new XvmError('unavailable', `no static busybox on this host and ${errorMessage(e)}; ${INSTALL_HINT}`);
      });
      const bbDeb = await obtainDeb(debsDir, bb, progress);
      keepDebs.push(bbDeb);
      const bbRoot = path.join(work, 'busybox');
      await extractDeb(bbDeb, bbRoot);
      busybox = [path.join(bbRoot, 'bin/busybox'), path.join(bbRoot, 'usr/bin/busybox')].find((p) => existsSync(p)) ?? null;
      if (!busybox) throw new XvmError('unavailable', `busybox-static package has no bin/busybox; ${INSTALL_HINT}`);
    }

    progress({ step: 'extract kernel' });
    const root = path.join(work, 'pkg');
    await extractDeb(kernelDeb, root);
    const trees = await moduleTreesIn(root);
    if (trees.length !== 1) {
      throw new XvmError('invalid', `${kpkg.name} holds ${trees.length} module trees (expected one)`);
    }
    const { kver, modDir } = trees[0];
    const vmlinuz = path.join(root, 'boot', `vmlinuz-${kver}`);
    if (!existsSync(vmlinuz)) throw new XvmError('invalid', `${kpkg.name} has no boot/vmlinuz-${kver}`);

    progress({ step: 'modules' });
    const { deps } = await loadModulesDep(root, modDir, kver, GUEST_MODULES);
    const builtinText = await fs.readFile(path.join(modDir, 'modules.builtin'), 'utf8').catch(() => '');
    const plan = planModules(deps, parseModulesBuiltin(builtinText), GUEST_MODULES);
    if (plan.missing.length) {
      throw new XvmError('invalid', `${kpkg.name} lacks modules the guest needs: ${plan.missing.join(', ')}`);
    }
    const modules: { data: Buffer; rel: string }[] = [];
    for (const rel of plan.order) {
      modules.push({ data: await readModule(path.join(modDir, rel)), rel: rel.replace(/\.ko\.(xz|zst|gz)$/, '.ko') });
    }

    progress({ step: 'initramfs' });
    const stage = path.join(work, 'stage');
    const bbVersion = await busyboxVersion(busybox);
    const bVersion = await builderVersion();
    await populateStage({
      stage,
      busybox,
      kver,
      modules,
      extra: {
        'etc/xvm/image': JSON.stringify({ package: kpkg.name, version: kpkg.version, builder: bVersion }) + '\n',
      },
    });
    const archive = await archiveTree(stage);
    const initrd = await compress(archive, INITRD_COMPRESSION);

    progress({ step: 'install' });
    const outKernel = path.join(work, KERNEL_FILE);
    const outInitrd = path.join(work, INITRD_FILE);
    await fs.copyFile(vmlinuz, outKernel);
    await fs.writeFile(outInitrd, initrd);
    const manifest: Manifest = {
      packageName: kpkg.name,
      packageVersion: kpkg.version,
      kernelVersion: kver,
      builderVersion: bVersion,
      sha256: { kernel: await sha256File(outKernel), initrd: await sha256File(outInitrd) },
      builtAt: new Date().toISOString(),
      cmdline: DEFAULT_CMDLINE,
      metaPackage: kpkg.meta,
      metaVersion: kpkg.metaVersion,
      busybox: bbVersion,
      compression: INITRD_COMPRESSION,
      modules: plan.order.map(moduleName),
    };
    const tmpManifest = path.join(work, MANIFEST_FILE);
    await fs.writeFile(tmpManifest, JSON.stringify(manifest, null, 2) + '\n');
    // Into place: the manifest goes first (readers then see "no image", not
    // a mismatch), each file is an atomic rename, the new manifest last.
    await fs.rm(path.join(dir, MANIFEST_FILE), { force: true });
    await fs.rename(outKernel, path.join(dir, KERNEL_FILE));
    await fs.rename(outInitrd, path.join(dir, INITRD_FILE));
    await fs.rename(tmpManifest, path.join(dir, MANIFEST_FILE));
    await pruneDebs(debsDir, keepDebs);
    return manifest;
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

/**
 * The default guest image in opts.dir, built (or rebuilt) when missing, when
 * apt's candidate kernel package differs from the cached one, when the
 * builder version changed, or when a checksum is wrong (force: always).
 * If apt has no candidate at all but a valid image is cached, the cached
 * image is returned (no way to tell whether it is current).
 */
export async function ensureDefaultImage(opts: {
  dir: string;
  force?: boolean;
  onProgress?: (p: ImageProgress) => void;
}): Promise<GuestImage> {
  const dir = path.resolve(opts.dir);
  const progress = (p: ImageProgress): void => {
    try {
      opts.onProgress?.(p);
    } catch {
      /* a progress callback must not break the build */
    }
  };
  await fs.mkdir(dir, { recursive: true }).catch((e: unknown) => {
    throw new XvmError('unavailable', `cannot create the image directory ${dir}: ${errorMessage(e)}`);
  });
  const bVersion = await builderVersion();

  progress({ step: 'resolve' });
  let kpkg: KernelPackage;
  try {
    kpkg = await resolveKernelPackage(KERNEL_META_PACKAGE);
  } catch (e) {
    if (!opts.force && e instanceof XvmError && e.code === 'unavailable') {
      const cached = await readValid(dir);
      if (cached && cached.builderVersion === bVersion) return toImage(dir, cached);
    }
    throw e;
  }
  const current = (m: Manifest | null): m is Manifest =>
    !!m && m.packageName === kpkg.name && m.packageVersion === kpkg.version && m.builderVersion === bVersion;

  if (!opts.force) {
    const m = await readValid(dir);
    if (current(m)) {
      progress({ step: 'cached' });
      return toImage(dir, m);
    }
  }
  const release = await acquireLock(dir, () => progress({ step: 'waiting for another build' }));
  try {
    // Another process may have built it while we waited.
    const m = await readValid(dir);
    if (current(m) && !opts.force) return toImage(dir, m);
    const built = await build(dir, kpkg, progress);
    progress({ step: 'done' });
    return toImage(dir, built);
  } finally {
    await release();
  }
}
