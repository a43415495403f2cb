// Test helpers: a guest kernel + initramfs, a QEMU guest driven over its
// serial console, and the block backend as a child process.
//
// The guest image comes from src/image (ensureDefaultImage) when that
// module is available; otherwise a throwaway initramfs is built once per
// kernel version (busybox-static + the virtio modules from Debian's cloud
// kernel package) and cached in the OS temp dir.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BLK_MAIN = path.join(ROOT, 'dist/src/devices/blk/main.js');

export interface GuestImage {
  kernel: string;
  initrd: string;
  cmdline: string;
}

const MODULES = ['virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'virtio_blk'];

function sh(cmd: string, cwd?: string): string {
  return execFileSync('/bin/sh', ['-c', cmd], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

async function projectImage(): Promise<GuestImage | null> {
  const mod = path.join(ROOT, 'dist/src/image/index.js');
  if (!fs.existsSync(mod) || process.env.XVM_BLK_TEST_OWN_GUEST === '1') return null;
  try {
    const m = (await import(mod)) as { ensureDefaultImage?: (o: { dir: string }) => Promise<GuestImage> };
    if (typeof m.ensureDefaultImage !== 'function') return null;
    const dir = process.env.XVM_IMAGE_DIR ?? path.join(os.tmpdir(), 'xvm-test-images');
    const img = await m.ensureDefaultImage({ dir });
    return { kernel: img.kernel, initrd: img.initrd, cmdline: img.cmdline };
  } catch (e) {
    process.stderr.write(`# default guest image unavailable (${(e as Error).message}); building a test initramfs\n`);
    return null;
  }
}

/** Build (or reuse) the fallback kernel + initramfs. */
function ownImage(): GuestImage {
  const dep = sh("apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}'").trim();
  if (!dep) throw new Error('apt has no linux-image-cloud-amd64 dependency');
  const dir = path.join(os.tmpdir(), `xvm-blk-test-guest-${dep}`);
  const kernel = path.join(dir, 'vmlinuz');
  const initrd = path.join(dir, 'initrd.gz');
  if (fs.existsSync(kernel) && fs.existsSync(initrd)) return { kernel, initrd, cmdline: 'console=ttyS0 quiet' };
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-blk-guest-build-'));
  try {
    sh(`apt-get download ${dep}`, work);
    sh('dpkg-deb -x *.deb x', work);
    const root = path.join(work, 'root');
    for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'lib/modules']) fs.mkdirSync(path.join(root, d), { recursive: true });
    fs.copyFileSync('/bin/busybox', path.join(root, 'bin/busybox'));
    const kdir = path.join(work, 'x/lib/modules');
    const kver = fs.readdirSync(kdir)[0];
    for (const m of MODULES) {
      const found = sh(`find ${kdir}/${kver} -name '${m}.ko*' | head -1`).trim();
      if (!found) throw new Error(`module ${m} not in ${dep}`);
      if (found.endsWith('.xz')) sh(`xz -dc '${found}' > '${root}/lib/modules/${m}.ko'`);
      else fs.copyFileSync(found, path.join(root, `lib/modules/${m}.ko`));
    }
    fs.writeFileSync(
      path.join(root, 'init'),
      [
        '#!/bin/busybox sh',
        '/bin/busybox --install -s /bin',
        'mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp',
        `for m in ${MODULES.join(' ')}; do insmod /lib/modules/$m.ko; done`,
        'echo XVM_GUEST_READY',
        'exec setsid cttyhack sh',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    fs.mkdirSync(dir, { recursive: true });
    fs.copyFileSync(sh(`ls ${work}/x/boot/vmlinuz-*`).trim(), kernel + '.tmp');
    sh(`find . | cpio -o -H newc --quiet | gzip -1 > '${initrd}.tmp'`, root);
    fs.renameSync(initrd + '.tmp', initrd);
    fs.renameSync(kernel + '.tmp', kernel);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return { kernel, initrd, cmdline: 'console=ttyS0 quiet' };
}

let cached: GuestImage | null = null;
export async function guestImage(): Promise<GuestImage> {
  cached ??= (await projectImage()) ?? ownImage();
  return cached;
}

function waitFor(getText: () => string, re: RegExp, timeoutMs: number, what: string, proc?: ChildProcess): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = () => {
      const m = getText().match(re);
      if (m) return resolve(m);
      if (proc && proc.exitCode !== null) return reject(new Error(`${what}: process exited (${proc.exitCode}) first:\n${getText().slice(-2000)}`));
      if (Date.now() - t0 > timeoutMs) return reject(new Error(`timed out waiting for ${what}:\n${getText().slice(-2000)}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

/** A child process whose output we keep and whose death we can await. */
class Child {
  out = '';
  readonly exited: Promise<number | null>;
  constructor(readonly proc: ChildProcess) {
    proc.stdout?.on('data', (d: Buffer) => (this.out += d.toString('latin1')));
    proc.stderr?.on('data', (d: Buffer) => (this.out += d.toString('latin1')));
    this.exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  }
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    await this.exited;
  }

  async waitOutput(re: RegExp, timeoutMs: number, what: string): Promise<RegExpMatchArray> {
    return waitFor(() => this.out, re, timeoutMs, what, this.proc);
  }
}

export class Backend extends Child {
  /** `nodeArgs` go before the script (e.g. --cpu-prof for a profile). */
  static async start(args: string[], env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<Backend> {
    const b = new Backend(spawn(process.execPath, [...nodeArgs, BLK_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }));
    await waitFor(() => b.out, /XVM_BLK_READY/, 30_000, 'backend ready', b.proc);
    return b;
  }
}

let markerSeq = 1000;

export class Guest extends Child {
  private consumed = 0;

  static qemuArgs(img: GuestImage, extraArgs: string[], opts: { memMiB?: number; smp?: number } = {}): string[] {
    const mem = opts.memMiB ?? 256;
    return [
      '-M', 'pc', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-no-reboot',
      '-m', String(mem), '-smp', String(opts.smp ?? 1),
      '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`, '-machine', 'memory-backend=mem',
      '-kernel', img.kernel, '-initrd', img.initrd, '-append', `${img.cmdline} panic=-1`,
      '-serial', 'stdio',
      ...extraArgs,
    ];
  }

  /** Start QEMU without waiting for a boot (e.g. a migration destination with -incoming). */
  static spawn(args: string[]): Guest {
    return new Guest(spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] }));
  }

  static async boot(img: GuestImage, extraArgs: string[], opts: { memMiB?: number; smp?: number } = {}): Promise<Guest> {
    const g = Guest.spawn(Guest.qemuArgs(img, extraArgs, opts));
    await waitFor(() => g.out, /XVM_GUEST_READY/, 120_000, 'guest boot', g.proc);
    g.consumed = g.out.indexOf('XVM_GUEST_READY') + 1;
    // Make sure the shell is up and quiet the kernel on the console.
    await g.run('echo 1 > /proc/sys/kernel/printk', 60_000);
    return g;
  }

  /** Run a shell command in the guest; resolves with its output and exit status. */
  async run(cmd: string, timeoutMs = 120_000): Promise<{ out: string; rc: number }> {
    const n = ++markerSeq;
    const start = this.out.length;
    this.proc.stdin!.write(`${cmd}; echo "@@E$((${n}))@@:$?"\n`);
    const re = new RegExp(`@@E${n}@@:(\\d+)`);
    const m = await waitFor(() => this.out.slice(start), re, timeoutMs, `guest command \`${cmd}\``, this.proc);
    const text = this.out.slice(start);
    const out = text.slice(0, m.index);
    this.consumed = start + (m.index ?? 0);
    return { out, rc: Number(m[1]) };
  }

  /** Start a command in the guest without waiting. */
  send(line: string): void {
    this.proc.stdin!.write(line + '\n');
  }

  async poweroff(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    this.proc.stdin!.write('poweroff -f\n');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 20_000);
    await this.exited;
    clearTimeout(t);
  }
}

/** A minimal QMP client (one command at a time). */
export class Qmp {
  private buf = '';
  private waiters: ((msg: Record<string, unknown>) => void)[] = [];
  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d) => {
      this.buf += d.toString();
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ('event' in msg) continue;
        this.waiters.shift()?.(msg);
      }
    });
  }
  static async connect(path: string): Promise<Qmp> {
    for (let i = 0; ; i++) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(path, () => resolve(s));
          s.once('error', reject);
        });
        const q = new Qmp(sock);
        await new Promise((r) => q.waiters.push(r)); // greeting
        await q.cmd('qmp_capabilities');
        return q;
      } catch (e) {
        if (i > 200) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
  cmd(execute: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      this.waiters.push((m) => ('error' in m ? reject(new Error(`${execute}: ${JSON.stringify(m.error)}`)) : resolve(m)));
      this.sock.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    });
  }
  close(): void {
    this.sock.destroy();
  }
}

export function md5(buf: Uint8Array): string {
  return execFileSync('md5sum', { input: buf }).toString().split(' ')[0];
}
