// UEFI (OVMF) guests and `xvm install`:
// - an EFI-only GRUB image made here with grub-mkrescue boots under
//   firmware = "uefi"; GRUB's own output reaches the serial console
//   (OVMF mirrors its console there), and the domain got its own copy of
//   the UEFI variable store;
// - `xvm install --cdrom ISO --disk size=2` makes a 2 GiB volume and an HVM
//   domain that boots the ISO, prints the VNC address; missing answers on
//   a non-terminal are refused; a failed install leaves nothing behind;
// - `xvm install --kernel --initrd --extra console=ttyS0` boots Debian's
//   own installer to its first screen on the serial console.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { TestHost, ConsoleSession, waitUntil, XVM_BIN } from '../helpers/xvm.js';
import { decodePng, nonBackgroundShare } from '../helpers/png.js';

const ISO = '/usr/lib/grub-rescue/grub-rescue-cdrom.iso';
const DI = '/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64';
const host = new TestHost('xvmu');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-uefi-'));

before(async () => host.startDaemon());
after(async () => {
  await host.cleanup();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const cli = (args: string[]): string => host.ok(args);

test('an EFI GRUB image boots under OVMF; GRUB prints on the serial console', { timeout: 300_000 }, async () => {
  const root = path.join(tmp, 'efiroot');
  fs.mkdirSync(path.join(root, 'boot', 'grub'), { recursive: true });
  fs.writeFileSync(path.join(root, 'boot', 'grub', 'grub.cfg'), 'set timeout=-1\necho "XVM_EFI_GRUB_OK"\nmenuentry "xvm efi entry" { echo hello }\n');
  const iso = path.join(tmp, 'efi.iso');
  // Only the x86_64-efi platform: SeaBIOS could not boot this image.
  execFileSync('grub-mkrescue', ['-d', '/usr/lib/grub/x86_64-efi', '-o', iso, root], { stdio: 'pipe' });
  const c = host.client;
  const info = await c.createDomain({ config: { name: 'efi1', type: 'hvm', firmware: 'uefi', memory: 256, cdrom: iso, boot: 'd' }, start: true });
  const con = new ConsoleSession(c, 'efi1', 1 << 20);
  await con.ready();
  await con.waitFor('XVM_EFI_GRUB_OK', 240_000);
  await con.waitFor('xvm efi entry', 60_000);
  const nvram = path.join(host.home, 'lib', 'nvram', `${info.uuid}.fd`);
  assert.equal(fs.statSync(nvram).size, fs.statSync('/usr/share/OVMF/OVMF_VARS_4M.fd').size, 'the domain has its own UEFI variable store');
  con.close();
  cli(['destroy', 'efi1']);
  assert.ok(fs.existsSync(nvram), 'the variable store outlives a run (it is the machine\'s NVRAM)');
});

test('xvm install --cdrom ISO --disk size=2 creates the volume and a domain that boots the ISO', { timeout: 300_000 }, async () => {
  const out = cli(['install', '--name', 'inst1', '--memory', '128', '--disk', 'size=2', '--cdrom', ISO, '--no-autoconsole']);
  assert.match(out, /disk: default\/inst1-disk0 \(created\)/);
  assert.match(out, /domain inst1 started/);
  assert.match(out, /address:\s+127\.0\.0\.1:\d+/);
  assert.match(out, /password:\s+\S{8}/);
  const c = host.client;
  const vol = await c.request<{ size: number; format: string }>('GET', '/v1/pools/default/volumes/inst1-disk0');
  assert.equal(vol.size, 2 * 1024 ** 3);
  const d = await c.getDomain('inst1');
  assert.equal(d.config.type, 'hvm');
  assert.equal(d.config.cdrom, ISO);
  assert.equal(d.config.boot, 'dc');
  assert.deepEqual((d.config.disk as { vol?: string; vdev: string }[]).map((x) => [x.vol, x.vdev]), [['default/inst1-disk0', 'hda']]);
  await waitUntil(async () => nonBackgroundShare(decodePng(await c.screenshot('inst1'))) > 0.03, 180_000, 'the ISO\'s GRUB menu on the screen');
  cli(['destroy', 'inst1']);
});

test('xvm install refuses to guess on a non-terminal, and a failed install leaves nothing behind', { timeout: 120_000 }, async () => {
  const r = host.cli(['install', '--name', 'inst2']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /missing --memory, --disk, --cdrom or --kernel; stdin is not a terminal/);
  const c = host.client;
  await assert.rejects(c.install({ name: 'inst3', memory: 64, disk: { size: 1 }, cdrom: '/nonexistent.iso' }), /cannot open \/nonexistent\.iso/);
  await assert.rejects(c.request('GET', '/v1/pools/default/volumes/inst3-disk0'), /inst3-disk0/);
  await assert.rejects(c.getDomain('inst3'), /no domain named 'inst3'/);
  await assert.rejects(c.install({ name: 'inst4', type: 'pv', memory: 64, cdrom: ISO }), /pv domain boots its kernel directly/);
  const bad = host.cli(['install', '--name', 'inst5', '--memory', '64', '--disk', 'size=lots', '--cdrom', ISO]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--disk size=lots: give a positive number of GiB/);
});

test('on a terminal, xvm install asks for what is missing', { timeout: 180_000 }, async () => {
  // script(1) gives the CLI a pseudo-terminal; the answers are typed ahead.
  const r = spawnSync('script', ['-qfec', `${process.execPath} ${XVM_BIN} install --no-autoconsole`, '/dev/null'], {
    env: host.env, input: `asked\n128\nsize=1\n${ISO}\n`, encoding: 'utf8', timeout: 120_000,
  });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /Name of the new domain: /);
  assert.match(r.stdout, /Memory in MiB \[1024\]: /);
  assert.match(r.stdout, /domain asked started/);
  const c = host.client;
  const d = await c.getDomain('asked');
  assert.equal(d.config.memory, 128);
  assert.equal(d.config.cdrom, ISO);
  const vol = await c.request<{ size: number }>('GET', '/v1/pools/default/volumes/asked-disk0');
  assert.equal(vol.size, 1024 ** 3);
  cli(['destroy', 'asked']);
});

test('xvm install --kernel --initrd boots Debian\'s installer to its first screen', { timeout: 420_000 }, async () => {
  const out = cli(['install', '--name', 'di', '--memory', '1024', '--disk', 'size=2', '--kernel', `${DI}/linux`, '--initrd', `${DI}/initrd.gz`,
    '--extra', 'console=ttyS0', '--graphics', 'none', '--no-autoconsole']);
  assert.match(out, /domain di started/);
  assert.doesNotMatch(out, /password/, 'no VNC for --graphics none');
  const c = host.client;
  assert.equal((await c.getDomain('di')).config.vnc, false);
  await assert.rejects(c.vncInfo('di'), /has vnc = 0: it has no graphics console/);
  const con = new ConsoleSession(c, 'di', 1 << 20);
  await con.ready();
  // The installer's first dialog (newt on the serial line): the language, or its low-memory notice.
  await con.waitFor(/\[!!\] (Select a language|Low memory)/, 360_000);
  con.close();
  cli(['destroy', 'di']);
});
