// The initramfs: a staging tree (busybox, modules, the guest/rootfs files)
// archived by Debian's `cpio -H newc`, then compressed.
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { XvmError } from '../common/errors.js';
import { INSTALL_HINT, runOk } from './exec.js';

export type Compression = 'gzip' | 'zstd' | 'none';

/** Directory holding the guest's own files (init, inittab, rc scripts). */
export function guestRootfsDir(): string {
  // dist/src/image/initramfs.js or src/image/initramfs.ts -> <repo>/guest/rootfs
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const cand = path.join(dir, 'guest', 'rootfs');
    if (existsSync(path.join(cand, 'init'))) return cand;
    dir = path.dirname(dir);
  }
  throw new XvmError('unavailable', 'guest/rootfs (the default guest\'s init files) is missing from the xvm installation');
}

/** True if buf is an ELF executable without a program interpreter (static). */
export function isStaticElf(buf: Buffer): boolean {
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) return false;
  const is64 = buf[4] === 2;
  const le = buf[5] === 1;
  if (!is64 || !le) return false;
  const phoff = Number(buf.readBigUInt64LE(0x20));
  const phentsize = buf.readUInt16LE(0x36);
  const phnum = buf.readUInt16LE(0x38);
  if (phentsize < 4 || phoff + phentsize * phnum > buf.length) return false;
  for (let i = 0; i < phnum; i++) {
    if (buf.readUInt32LE(phoff + i * phentsize) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

/** Busybox applet paths (e.g. 'sbin/acpid') of a static busybox binary. */
export async function busyboxApplets(busybox: string): Promise<string[]> {
  const r = await runOk(busybox, ['--list-full'], { timeoutMs: 30_000 });
  return r.stdout
    .toString('utf8')
    .split('\n')
    .map((l) => l.trim().replace(/^\/+/, ''))
    .filter((l) => l && !l.includes('..') && /^[A-Za-z0-9_./[-]+$/.test(l));
}

/** "BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)" from the binary's banner. */
export async function busyboxVersion(busybox: string): Promise<string> {
  const r = await runOk(busybox, ['--help'], { timeoutMs: 30_000 }).catch(() => null);
  const first = (r?.stdout.toString('utf8') || r?.stderr || '').split('\n')[0] ?? '';
  const m = /BusyBox v\S+(?: \([^)]*\))?/.exec(first);
  return m ? m[0] : 'unknown';
}

/** A newc archive entry (for the few nodes cpio cannot take from a directory as non-root). */
function newcEntry(name: string, mode: number, rdevMajor = 0, rdevMinor = 0, ino = 0): Buffer {
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  const nameBuf = Buffer.from(`${name}\0`);
  const header =
    '070701' +
    [ino, mode, 0, 0, 1, 0, 0, 0, 0, rdevMajor, rdevMinor, nameBuf.length, 0].map(hex).join('');
  const unpadded = header.length + nameBuf.length;
  const pad = (4 - (unpadded % 4)) % 4;
  return Buffer.concat([Buffer.from(header), nameBuf, Buffer.alloc(pad)]);
}

/**
 * A small newc archive with /dev/console (c 5 1): the kernel opens it for
 * /init's stdin/stdout before anything is mounted. Creating the node in the
 * staging tree would need root, so it is written here and appended.
 */
export function consoleArchive(): Buffer {
  return Buffer.concat([newcEntry('dev/console', 0o020600, 5, 1, 1), newcEntry('TRAILER!!!', 0)]);
}

async function walk(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  const entries = await fs.readdir(path.join(dir, rel), { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    out.push(r);
    if (e.isDirectory()) out.push(...(await walk(dir, r)));
  }
  return out;
}

/**
 * The uncompressed newc archive of `stage` (owned by root) plus /dev/console.
 * Every entry's mtime is set to `mtime` first (with cpio --reproducible: the
 * same inputs give the same bytes on every host).
 */
export async function archiveTree(stage: string, mtime = new Date(0)): Promise<Buffer> {
  const names = await walk(stage);
  for (const n of names) await fs.lutimes(path.join(stage, n), mtime, mtime);
  const input = names.join('\0') + '\0';
  const r = await runOk('cpio', ['-o', '-H', 'newc', '-R', '0:0', '--null', '--quiet', '--reproducible'], {
    cwd: stage,
    input,
    timeoutMs: 5 * 60_000,
  }).catch((e: unknown) => {
    if (e instanceof XvmError && e.code === 'unavailable') {
      throw new XvmError('unavailable', `cpio not found (Debian package cpio): ${INSTALL_HINT}`);
    }
    throw e;
  });
  return Buffer.concat([r.stdout, consoleArchive()]);
}

export async function compress(archive: Buffer, how: Compression): Promise<Buffer> {
  switch (how) {
    case 'none':
      return archive;
    case 'gzip':
      return zlib.gzipSync(archive, { level: 9 });
    case 'zstd': {
      const r = await runOk('zstd', ['-q', '-19', '-c', '-'], { input: archive, timeoutMs: 5 * 60_000 }).catch(
        (e: unknown) => {
          if (e instanceof XvmError && e.code === 'unavailable') {
            throw new XvmError('unavailable', `zstd not found (Debian package zstd): ${INSTALL_HINT}`);
          }
          throw e;
        },
      );
      return r.stdout;
    }
  }
}

export interface StageInput {
  stage: string;
  busybox: string;
  kver: string;
  /** [source file, path relative to lib/modules/<kver> in the guest (.ko)] in load order */
  modules: { data: Buffer; rel: string }[];
  /** Extra files: path in guest -> content */
  extra?: Record<string, string>;
}

/** Fills the staging directory with everything the guest needs. */
export async function populateStage(inp: StageInput): Promise<void> {
  const { stage } = inp;
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'tmp', 'run', 'mnt', 'root', 'var/log', 'etc/xvm']) {
    await fs.mkdir(path.join(stage, d), { recursive: true });
  }
  await fs.chmod(path.join(stage, 'tmp'), 0o1777);
  await fs.chmod(path.join(stage, 'root'), 0o700);
  await fs.symlink('../run', path.join(stage, 'var/run'));

  // busybox and its applets
  await fs.copyFile(inp.busybox, path.join(stage, 'bin/busybox'));
  await fs.chmod(path.join(stage, 'bin/busybox'), 0o755);
  for (const applet of await busyboxApplets(inp.busybox)) {
    if (applet === 'bin/busybox') continue;
    const dest = path.join(stage, applet);
    await fs.mkdir(path.dirname(dest), { recursive: true });
    const target = path.relative(path.dirname(dest), path.join(stage, 'bin/busybox'));
    await fs.symlink(target, dest).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }

  // modules, decompressed, and the load order for /init
  const modBase = path.join(stage, 'lib/modules', inp.kver);
  for (const m of inp.modules) {
    const dest = path.join(modBase, m.rel);
    await fs.mkdir(path.dirname(dest), { recursive: true });
    await fs.writeFile(dest, m.data, { mode: 0o644 });
  }
  await fs.writeFile(
    path.join(stage, 'etc/xvm/modules'),
    inp.modules.map((m) => `${inp.kver}/${m.rel}\n`).join(''),
  );

  // the guest's own files: init, inittab, rc scripts, acpid and udhcpc scripts
  const src = guestRootfsDir();
  for (const rel of await walk(src)) {
    const from = path.join(src, rel);
    const to = path.join(stage, rel);
    const st = await fs.lstat(from);
    if (st.isDirectory()) {
      await fs.mkdir(to, { recursive: true });
    } else if (st.isFile()) {
      const data = await fs.readFile(from);
      const exec = data.subarray(0, 2).toString() === '#!';
      await fs.rm(to, { force: true });
      await fs.writeFile(to, data, { mode: exec ? 0o755 : 0o644 });
      await fs.chmod(to, exec ? 0o755 : 0o644);
    }
  }
  for (const [rel, content] of Object.entries(inp.extra ?? {})) {
    const to = path.join(stage, rel);
    await fs.mkdir(path.dirname(to), { recursive: true });
    await fs.writeFile(to, content, { mode: 0o644 });
  }
}

/** Files in guest/rootfs, for hashing into the builder version. */
export async function rootfsFiles(): Promise<{ rel: string; data: Buffer }[]> {
  const src = guestRootfsDir();
  const out: { rel: string; data: Buffer }[] = [];
  for (const rel of await walk(src)) {
    const st = await fs.lstat(path.join(src, rel));
    if (st.isFile()) out.push({ rel, data: await fs.readFile(path.join(src, rel)) });
  }
  return out;
}
