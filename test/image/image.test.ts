// The default guest image: pure parsing/planning units, the real build
// from apt (cached in .cache/images/default or $XVM_IMAGE_DIR/default),
// cache/rebuild/lock behaviour, and real boots under raw QEMU.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import {
  READY_BANNER,
  ensureDefaultImage,
  readDefaultImage,
  type GuestImage,
  type ImageProgress,
} from '../../src/image/index.js';
import { parseCandidate, parseDepends, kernelDependency, parseStanza, resolveKernelPackage } from '../../src/image/apt.js';
import { run } from '../../src/image/exec.js';
import {
  GUEST_MODULES,
  modinfoDepends,
  moduleName,
  parseModulesBuiltin,
  parseModulesDep,
  planModules,
} from '../../src/image/modules.js';
import { consoleArchive, isStaticElf } from '../../src/image/initramfs.js';
import { XvmError } from '../../src/common/errors.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const imageDir = path.join(process.env.XVM_IMAGE_DIR ?? path.join(repo, '.cache', 'images'), 'default');

// ---------------------------------------------------------------------------
describe('image: apt output parsing', () => {
  test('candidate from apt-cache policy', () => {
    const out = [
      'linux-image-cloud-amd64:',
      '  Installed: (none)',
      '  Candidate: 6.1.192-2',
      '  Version table:',
      '     6.1.192-2 500',
      '        500 http://mirror.example/debian-security bookworm-security/main amd64 Packages',
      '     6.1.176-1 500',
    ].join('\n');
    assert.equal(parseCandidate(out), '6.1.192-2');
    assert.equal(parseCandidate('foo:\n  Installed: (none)\n  Candidate: (none)\n'), null);
    assert.equal(parseCandidate(''), null);
  });

  test('versioned kernel package from the metapackage Depends', () => {
    const d = kernelDependency('linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)');
    assert.deepEqual(d, { name: 'linux-image-6.1.0-56-cloud-amd64', op: '=', version: '6.1.192-2' });
    const alt = kernelDependency('kmod, linux-base (>= 4.3~), linux-image-6.12.9-cloud-amd64 | foo');
    assert.equal(alt?.name, 'linux-image-6.12.9-cloud-amd64');
    assert.equal(alt?.op, undefined);
    assert.equal(kernelDependency('kmod, linux-base'), null);
    assert.equal(kernelDependency('%%garbage(('), null);
    assert.deepEqual(parseDepends('a | b (>= 1), c:any'), [
      [
        { name: 'a', op: undefined, version: undefined },
        { name: 'b', op: '>=', version: '1' },
      ],
      [{ name: 'c', op: undefined, version: undefined }],
    ]);
  });

  test('first stanza of apt-cache show, continuation lines joined', () => {
    const f = parseStanza('Package: p\nVersion: 1\nDescription: x\n more\n\nPackage: q\n');
    assert.equal(f.get('Package'), 'p');
    assert.equal(f.get('Description'), 'x\nmore');
    assert.equal(parseStanza('').size, 0);
  });
});

describe('image: clear errors', () => {
  test('a package apt does not know: "run apt-get update"', async () => {
    await assert.rejects(resolveKernelPackage('xvm-no-such-kernel-metapackage'), (e: unknown) => {
      assert.ok(e instanceof XvmError);
      assert.equal(e.code, 'unavailable');
      assert.match(e.message, /xvm-no-such-kernel-metapackage.*run apt-get update/);
      return true;
    });
  });

  test('a missing host tool: "run scripts/install-deps.sh"', async () => {
    await assert.rejects(run('xvm-no-such-tool', []), (e: unknown) => {
      assert.ok(e instanceof XvmError);
      assert.equal(e.code, 'unavailable');
      assert.match(e.message, /xvm-no-such-tool not found: run scripts\/install-deps\.sh/);
      return true;
    });
  });
});

describe('image: module planning', () => {
  const dep = [
    'kernel/drivers/virtio/virtio_ring.ko:',
    'kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko',
    'kernel/drivers/virtio/virtio_pci_modern_dev.ko.zst:',
    'kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko.zst kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko',
    'kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko',
    'kernel/net/core/failover.ko:',
    'kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko',
    'kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko',
    '',
  ].join('\n');

  test('dependencies first, each once; built-ins skipped; missing reported', () => {
    const plan = planModules(parseModulesDep(dep), parseModulesBuiltin('kernel/drivers/input/evdev.ko\n'), [
      'virtio_net',
      'virtio_pci',
      'virtio_rng',
      'evdev',
      'nonexistent_mod',
    ]);
    const names = plan.order.map(moduleName);
    assert.deepEqual(names, [
      'failover',
      'net_failover',
      'virtio_ring',
      'virtio',
      'virtio_net',
      'virtio_pci_modern_dev',
      'virtio_pci',
      'virtio_rng',
    ]);
    assert.deepEqual(plan.builtin, ['evdev']);
    assert.deepEqual(plan.missing, ['nonexistent_mod']);
  });

  test('malformed modules.dep and cycles are clear errors', () => {
    assert.throws(() => parseModulesDep('no colon here\n'), (e: unknown) => e instanceof XvmError && /malformed/.test(e.message));
    const cyc = parseModulesDep('a.ko: b.ko\nb.ko: a.ko\n');
    assert.throws(() => planModules(cyc, new Set(), ['a']), /cycle/);
    const dangling = parseModulesDep('a.ko: zz.ko\n');
    assert.throws(() => planModules(dangling, new Set(), ['a']), /no entry/);
  });

  test('depends= from a module image', () => {
    const ko = Buffer.concat([
      Buffer.from('\x7fELF....'),
      Buffer.from('license=GPL\0depends=virtio,virtio_ring\0intree=Y\0name=virtio_blk\0'),
    ]);
    assert.deepEqual(modinfoDepends(ko), ['virtio', 'virtio_ring']);
    assert.deepEqual(modinfoDepends(Buffer.from('\0depends=\0name=x\0')), []);
    assert.deepEqual(modinfoDepends(Buffer.from('nothing')), []);
  });
});

describe('image: initramfs pieces', () => {
  test('the /dev/console archive is a valid newc archive', () => {
    const r = spawnSync('cpio', ['-itv', '--quiet'], { input: consoleArchive() });
    assert.equal(r.status, 0, r.stderr?.toString());
    const listing = r.stdout.toString();
    assert.match(listing, /^crw-------\s.*\s5,\s+1\s.*dev\/console$/m);
  });

  test('static ELF detection', () => {
    assert.equal(isStaticElf(readFileSync('/bin/busybox')), true);
    assert.equal(isStaticElf(readFileSync(process.execPath).subarray(0, 1 << 16)), false);
    assert.equal(isStaticElf(Buffer.from('#!/bin/sh\n')), false);
    assert.equal(isStaticElf(Buffer.alloc(0)), false);
  });
});

// ---------------------------------------------------------------------------
function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

function aptCandidate(pkg: string): string | null {
  const r = spawnSync('apt-cache', ['policy', pkg], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
  return parseCandidate(r.stdout ?? '');
}

function initrdListing(file: string, compression: string): { names: string[]; read: (name: string) => string } {
  const raw = readFileSync(file);
  let archive: Buffer;
  if (compression === 'gzip') archive = zlib.gunzipSync(raw);
  else if (compression === 'zstd') archive = spawnSync('zstd', ['-qdc'], { input: raw, maxBuffer: 1 << 28 }).stdout;
  else archive = raw;
  // The initramfs is several newc archives back to back (the kernel reads
  // them all; cpio -i stops at the first trailer): walk the headers here.
  const names: string[] = [];
  const files = new Map<string, Buffer>();
  const align = (n: number) => (n + 3) & ~3;
  let off = 0;
  let trailers = 0;
  while (off < archive.length) {
    if (archive[off] === 0) {
      off++;
      continue;
    }
    assert.equal(archive.subarray(off, off + 6).toString(), '070701', `newc header at ${off}`);
    const field = (i: number) => parseInt(archive.subarray(off + 6 + i * 8, off + 14 + i * 8).toString(), 16);
    const mode = field(1);
    const filesize = field(6);
    const namesize = field(11);
    const name = archive.subarray(off + 110, off + 110 + namesize - 1).toString();
    const dataStart = align(off + 110 + namesize);
    off = align(dataStart + filesize);
    if (name === 'TRAILER!!!') {
      trailers++;
      continue;
    }
    names.push(name);
    if ((mode & 0o170000) === 0o100000) files.set(name, archive.subarray(dataStart, dataStart + filesize));
    if (name === 'dev/console') assert.equal(mode & 0o170000, 0o020000, 'dev/console is a char device');
  }
  assert.equal(trailers, 2, 'tree archive + /dev/console archive');
  // and Debian's cpio reads the first one
  const r = spawnSync('cpio', ['-it', '--quiet'], { input: archive, maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, r.stderr?.toString());
  assert.ok(r.stdout.toString().split('\n').includes('bin/busybox'));
  return {
    names,
    read: (name: string) => {
      const f = files.get(name);
      assert.ok(f, `initramfs has file ${name}`);
      return f.toString();
    },
  };
}

describe('image: build from apt, cache, rebuild', () => {
  let img: GuestImage;
  const tmpDirs: string[] = [];
  before(async () => {
    img = await ensureDefaultImage({ dir: imageDir });
  }, { timeout: 15 * 60_000 });
  after(async () => {
    for (const d of tmpDirs) await fs.rm(d, { recursive: true, force: true });
  });

  test('ensureDefaultImage builds (or reuses) the image and its manifest is right', async () => {
    assert.match(img.packageName, /^linux-image-\d[\w.-]*-cloud-amd64$/);
    assert.equal(img.packageName, `linux-image-${img.kernelVersion}`);
    assert.equal(img.packageVersion, aptCandidate(img.packageName), 'version is apt\'s candidate');
    assert.equal(img.kernel, path.join(imageDir, 'vmlinuz'));
    assert.equal(img.initrd, path.join(imageDir, 'initrd.img'));
    assert.equal(sha256(img.kernel), img.sha256.kernel);
    assert.equal(sha256(img.initrd), img.sha256.initrd);
    assert.match(img.cmdline, /console=ttyS0/);
    assert.ok(!Number.isNaN(Date.parse(img.builtAt)));
    const m = JSON.parse(readFileSync(path.join(imageDir, 'manifest.json'), 'utf8'));
    for (const k of ['packageName', 'packageVersion', 'kernelVersion', 'builderVersion', 'builtAt']) {
      assert.equal(typeof m[k], 'string', k);
    }
    assert.deepEqual(m.sha256, img.sha256);
    // The kernel .deb is kept so a builder change does not download again.
    const debs = await fs.readdir(path.join(imageDir, 'debs'));
    assert.ok(debs.some((n) => n.startsWith(`${img.packageName}_`) && n.endsWith('.deb')), debs.join(','));
  });

  test('the initramfs holds init, busybox, console node and the modules in order', () => {
    const m = JSON.parse(readFileSync(path.join(imageDir, 'manifest.json'), 'utf8'));
    const { names, read } = initrdListing(img.initrd, m.compression);
    for (const n of ['init', 'bin/busybox', 'bin/sh', 'sbin/init', 'bin/cttyhack', 'sbin/acpid', 'sbin/udhcpc',
      'dev/console', 'etc/inittab', 'etc/init.d/rcS', 'etc/acpi/PWRF/00000080', 'usr/share/udhcpc/default.script']) {
      assert.ok(names.includes(n), `initramfs has ${n}`);
    }
    const order = read('etc/xvm/modules').split('\n').filter(Boolean);
    const mods = order.map(moduleName);
    for (const w of GUEST_MODULES) assert.ok(mods.includes(w), `loads ${w}`);
    const before = (a: string, b: string) => assert.ok(mods.indexOf(a) < mods.indexOf(b), `${a} before ${b}`);
    before('virtio_ring', 'virtio');
    before('virtio', 'virtio_pci');
    before('virtio_pci_modern_dev', 'virtio_pci');
    before('failover', 'net_failover');
    before('net_failover', 'virtio_net');
    for (const rel of order) {
      assert.match(rel, new RegExp(`^${img.kernelVersion.replace(/\./g, '\\.')}/kernel/.*\\.ko$`));
      assert.ok(names.includes(`lib/modules/${rel}`), `initramfs has lib/modules/${rel}`);
    }
    assert.match(read('init'), /exec \/sbin\/init/);
  });

  test('a second call reuses the cache; readDefaultImage agrees', async () => {
    const steps: string[] = [];
    const again = await ensureDefaultImage({ dir: imageDir, onProgress: (p) => steps.push(p.step) });
    assert.deepEqual(again, img);
    assert.ok(steps.includes('cached'), steps.join(','));
    assert.ok(!steps.some((s) => s.startsWith('download')), steps.join(','));
    assert.deepEqual(await readDefaultImage(imageDir), img);
  });

  test('bad manifests and missing dirs read as no image', async () => {
    const d = await fs.mkdtemp(path.join(os.tmpdir(), 'xvm-img-bad-'));
    tmpDirs.push(d);
    assert.equal(await readDefaultImage(path.join(d, 'nope')), null);
    await fs.writeFile(path.join(d, 'manifest.json'), '{not json');
    assert.equal(await readDefaultImage(d), null);
    await fs.writeFile(path.join(d, 'manifest.json'), JSON.stringify({ packageName: 1, sha256: 'x' }));
    assert.equal(await readDefaultImage(d), null);
    await fs.writeFile(path.join(d, 'manifest.json'), '[]');
    assert.equal(await readDefaultImage(d), null);
  });

  test('rebuilds on a wrong checksum, a new builder version, a new package version, from the cached .deb', { timeout: 10 * 60_000 }, async () => {
    const d = await fs.mkdtemp(path.join(os.tmpdir(), 'xvm-img-'));
    tmpDirs.push(d);
    await fs.cp(imageDir, d, { recursive: true, filter: (src) => !path.basename(src).startsWith('.') || src === imageDir });

    // leftovers of a killed build are cleaned up by the next one
    await fs.mkdir(path.join(d, '.build-killed', 'pkg'), { recursive: true });
    await fs.mkdir(path.join(d, 'debs', '.download-killed'), { recursive: true });

    // corrupt the initrd
    const fh = await fs.open(path.join(d, 'initrd.img'), 'r+');
    await fh.write(Buffer.from('XX'), 0, 2, 100);
    await fh.close();
    assert.equal(await readDefaultImage(d), null);
    const steps: ImageProgress[] = [];
    const rebuilt = await ensureDefaultImage({ dir: d, onProgress: (p) => steps.push(p) });
    assert.notEqual(rebuilt.builtAt, img.builtAt);
    assert.equal(rebuilt.packageVersion, img.packageVersion);
    assert.equal(rebuilt.sha256.kernel, img.sha256.kernel);
    assert.equal(rebuilt.sha256.initrd, img.sha256.initrd, 'the initramfs build is reproducible');
    assert.equal(sha256(rebuilt.initrd), rebuilt.sha256.initrd);
    assert.ok(!steps.some((s) => s.step.startsWith('download')), 'no download: the .deb was cached');
    assert.ok(steps.some((s) => s.step === 'initramfs'));
    assert.ok(!(await fs.readdir(d)).includes('.build-killed'));
    assert.ok(!(await fs.readdir(path.join(d, 'debs'))).includes('.download-killed'));

    // a manifest from another builder version
    const mf = path.join(d, 'manifest.json');
    const m = JSON.parse(await fs.readFile(mf, 'utf8'));
    m.builderVersion = '0+old';
    await fs.writeFile(mf, JSON.stringify(m));
    assert.equal(await readDefaultImage(d), null, 'an image from another builder version counts as stale (the next start rebuilds it)');
    const again = await ensureDefaultImage({ dir: d });
    assert.notEqual(again.builtAt, rebuilt.builtAt);
    assert.notEqual(JSON.parse(await fs.readFile(mf, 'utf8')).builderVersion, '0+old');

    // a manifest naming another package version (apt's candidate moved on)
    const m2 = JSON.parse(await fs.readFile(mf, 'utf8'));
    m2.packageVersion = '0.0-old';
    await fs.writeFile(mf, JSON.stringify(m2));
    const newer = await ensureDefaultImage({ dir: d });
    assert.equal(newer.packageVersion, img.packageVersion);
    assert.notEqual(newer.builtAt, again.builtAt);

    // two concurrent callers on a dir without an image: one builds, the other waits and reuses it
    await fs.rm(mf);
    const [a, b] = await Promise.all([ensureDefaultImage({ dir: d }), ensureDefaultImage({ dir: d })]);
    assert.equal(a.builtAt, b.builtAt);
    assert.deepEqual(await readDefaultImage(d), a);
    const left = await fs.readdir(d);
    assert.ok(!left.some((n) => n.startsWith('.build-') || n === '.lock'), left.join(','));
  });
});

// ---------------------------------------------------------------------------
// Real boots.

class Guest {
  readonly proc: ChildProcess;
  out = '';
  private cursor = 0;
  private waiters: (() => void)[] = [];
  exit: Promise<number | null>;

  constructor(args: string[]) {
    this.proc = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const onData = (b: Buffer) => {
      this.out += b.toString('latin1');
      for (const w of this.waiters.splice(0)) w();
    };
    this.proc.stdout!.on('data', onData);
    this.proc.stderr!.on('data', onData);
    this.exit = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)));
    this.proc.stdin!.on('error', () => {});
  }

  /** Waits for `what` in output after the cursor; moves the cursor past it. */
  async waitFor(what: string | RegExp, timeoutMs = 120_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rest = this.out.slice(this.cursor);
      let idx = -1;
      let len = 0;
      let text = '';
      if (typeof what === 'string') {
        idx = rest.indexOf(what);
        len = what.length;
        text = what;
      } else {
        const m = what.exec(rest);
        if (m) {
          idx = m.index;
          len = m[0].length;
          text = m[0];
        }
      }
      if (idx >= 0) {
        this.cursor += idx + len;
        return text;
      }
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
        throw new Error(`QEMU exited while waiting for ${what}; output:\n${this.out.slice(-3000)}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out (${timeoutMs} ms) waiting for ${what}; output:\n${this.out.slice(-3000)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  send(line: string): void {
    this.proc.stdin!.write(`${line}\n`);
  }

  /** Runs a shell command, returns its output (between markers). */
  async sh(cmd: string, timeoutMs = 60_000): Promise<string> {
    const tag = `M${Math.random().toString(36).slice(2, 8)}`;
    // printf keeps the markers out of the echoed command line
    this.send(`printf '%s-B\\n' ${tag}; ${cmd}; printf '%s-E\\n' ${tag}`);
    // The newline after the B marker is left unconsumed: it is also the one
    // before the E marker when the command prints nothing.
    await this.waitFor(new RegExp(`\\n${tag}-B\\r?(?=\\n)`), timeoutMs);
    const start = this.cursor + 1;
    await this.waitFor(new RegExp(`\\n${tag}-E\\r?\\n`), timeoutMs);
    const output = this.out.slice(start, this.out.lastIndexOf(`${tag}-E`)).replace(/\r/g, '');
    // and the next prompt, so the next command is not typed ahead
    await this.waitFor(/# /, timeoutMs);
    return output;
  }

  async waitExit(timeoutMs = 120_000): Promise<number | null> {
    let t: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => {
      t = setTimeout(() => rej(new Error(`QEMU did not exit; output:\n${this.out.slice(-3000)}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exit, timeout]);
    } finally {
      clearTimeout(t);
    }
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

function qemuArgs(img: GuestImage, append: string, extra: string[]): string[] {
  return [
    '-M', 'pc', '-accel', 'tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-m', '256',
    '-object', 'memory-backend-memfd,id=mem,size=256M,share=on', '-machine', 'memory-backend=mem',
    '-kernel', img.kernel, '-initrd', img.initrd, '-append', `${img.cmdline} ${append}`.trim(),
    '-serial', 'stdio', '-device', 'pvpanic', ...extra,
  ];
}

/** A tiny QMP client: greeting, qmp_capabilities, then one command at a time. */
async function qmp(socketPath: string): Promise<{ cmd: (execute: string, args?: object) => Promise<unknown>; close: () => void }> {
  const sock = net.connect(socketPath);
  let buf = '';
  const pending: ((msg: Record<string, unknown>) => void)[] = [];
  const lines: Record<string, unknown>[] = [];
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      const msg = JSON.parse(line) as Record<string, unknown>;
      if ('event' in msg) continue;
      const w = pending.shift();
      if (w) w(msg);
      else lines.push(msg);
    }
  });
  sock.on('error', () => {});
  const next = () =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const l = lines.shift();
      if (l) return resolve(l);
      const t = setTimeout(() => reject(new Error('QMP: no reply')), 30_000);
      pending.push((m) => {
        clearTimeout(t);
        resolve(m);
      });
    });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const greeting = await next();
  assert.ok('QMP' in greeting, 'QMP greeting');
  const cmd = async (execute: string, args?: object) => {
    sock.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    const r = await next();
    if ('error' in r) throw new Error(`QMP ${execute}: ${JSON.stringify(r.error)}`);
    return r.return;
  };
  await cmd('qmp_capabilities');
  return { cmd, close: () => sock.destroy() };
}

describe('image: booting the default guest under QEMU (TCG)', () => {
  let img: GuestImage;
  let tmp: string;
  const guests: Guest[] = [];

  before(async () => {
    img = await ensureDefaultImage({ dir: imageDir });
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'xvm-img-boot-'));
  });
  after(async () => {
    for (const g of guests) g.kill();
    await Promise.all(guests.map((g) => g.exit));
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  });

  test('boots to the banner with network and disk; shell works; poweroff exits QEMU', { timeout: 10 * 60_000 }, async () => {
    const disk = path.join(tmp, 'disk.img');
    const seed = path.join(tmp, 'seed');
    await fs.mkdir(seed);
    await fs.writeFile(path.join(seed, 'hello.txt'), 'hello from the host\n');
    const mk = spawnSync('mkfs.ext4', ['-q', '-F', '-d', seed, disk, '16M'], { encoding: 'utf8' });
    assert.equal(mk.status, 0, mk.stderr);

    const g = new Guest(
      qemuArgs(img, 'xvm.name=web1', [
        '-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0',
        '-drive', `file=${disk},format=raw,if=none,id=d0`, '-device', 'virtio-blk-pci,drive=d0',
      ]),
    );
    guests.push(g);
    const t0 = Date.now();
    await g.waitFor(`${READY_BANNER} name=web1 kernel=${img.kernelVersion}`);
    const bootMs = Date.now() - t0;
    const line = await g.waitFor(/[^\n]*\n/);
    assert.match(line, /net=eth0 disks=vda/);
    await g.waitFor('web1:/# ');
    console.log(`# boot to banner: ${bootMs} ms`);

    g.send('echo $((6*7))');
    await g.waitFor(/\n42\r?\n/);
    await g.waitFor('web1:/# ');

    assert.equal((await g.sh('cat /mnt/vda/hello.txt')).trim(), 'hello from the host');
    assert.match(await g.sh('ls /dev/input'), /event\d/);
    // button.ko gave the ACPI power button an input device; pvpanic-mmio bound QEMU's pvpanic
    assert.match(await g.sh('cat /sys/class/input/event*/device/name'), /Power Button/);
    assert.match(await g.sh('ls /sys/bus/platform/drivers/pvpanic-mmio/'), /QEMU0001:00/);
    assert.equal((await g.sh('hostname')).trim(), 'web1');
    assert.equal((await g.sh('cat /proc/sys/kernel/sysrq')).trim(), '1');
    assert.match(await g.sh('mount'), /devtmpfs on \/dev .*\n[^]*tmpfs on \/tmp /);
    // job control: background job listed by the shell
    assert.match(await g.sh('sleep 600 & jobs; kill %1'), /\[1\]\+\s+Running\s+sleep 600/);
    // DHCP in the background (QEMU's user network hands out 10.0.2.15)
    const netInfo = await g.sh(
      'i=0; while [ ! -s /run/xvm/net ] && [ $i -lt 90 ]; do sleep 1; i=$((i+1)); done; ' +
        'cat /run/xvm/net; ip -4 route | grep default; echo ---; cat /var/log/udhcpc.log',
      150_000,
    );
    assert.match(netInfo, /eth0 10\.0\.2\.15\/24 via 10\.0\.2\.2/, netInfo);
    assert.match(netInfo, /default via 10\.0\.2\.2 dev eth0/, netInfo);

    await g.sh('echo written-by-guest > /mnt/vda/out.txt');
    g.send('poweroff');
    assert.equal(await g.waitExit(), 0);

    // The shutdown action synced and unmounted the disk: clean, data there.
    const state = spawnSync('dumpe2fs', ['-h', disk], { encoding: 'utf8' });
    assert.match(state.stdout, /Filesystem state:\s+clean/);
    const cat = spawnSync('debugfs', ['-R', 'cat /out.txt', disk], { encoding: 'utf8' });
    assert.equal(cat.stdout.trim(), 'written-by-guest');
  });

  test('QMP: ctrl-alt-delete reboots (banner again); system_powerdown powers off', { timeout: 10 * 60_000 }, async () => {
    const sockPath = path.join(tmp, 'qmp.sock');
    // An unusable xvm.name is refused and the default name used.
    const g = new Guest(qemuArgs(img, 'xvm.name=no/slash', ['-qmp', `unix:${sockPath},server=on,wait=off`]));
    guests.push(g);
    await g.waitFor("xvm: ignoring invalid xvm.name='no/slash', using xvm-guest");
    await g.waitFor(`${READY_BANNER} name=xvm-guest `);
    await g.waitFor('xvm-guest:/# ');
    const q = await qmp(sockPath);
    try {
      await q.cmd('send-key', { keys: [{ type: 'qcode', data: 'ctrl' }, { type: 'qcode', data: 'alt' }, { type: 'qcode', data: 'delete' }] });
      await g.waitFor('The system is going down NOW!');
      await g.waitFor(`${READY_BANNER} name=xvm-guest `);
      await g.waitFor('xvm-guest:/# ');
      // the ACPI power button: acpid sees it and runs poweroff
      await q.cmd('system_powerdown');
      assert.equal(await g.waitExit(), 0);
    } finally {
      q.close();
    }
    assert.match(g.out, /Power down/);
  });
});
