// An unmodified PC guest: Debian's grub-rescue-pc ISO boots as a type =
// "hvm" domain under SeaBIOS. Its screen is reached the ways a user reaches
// it: `xvm screenshot` (a PNG that is not blank), a real VNC client (Perl's
// Net::VNC) through xvmd's password-protected VNC server — which refuses a
// wrong password and listens on loopback only — typing into GRUB through
// that client, with GRUB's answer on the serial console; the noVNC
// websocket with a single-use token; CD-ROM eject/insert while it runs; the
// same VNC address and password after an xvmd restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { TestHost, ConsoleSession, REPO, waitUntil } from '../helpers/xvm.js';
import { decodePng, differingShare, nonBackgroundShare, type Pixels } from '../helpers/png.js';
import type { VncInfo } from '../../src/api/hvm-schema.js';
import { rng } from '../helpers/random.js';

const ISO = '/usr/lib/grub-rescue/grub-rescue-cdrom.iso';
const VNC_CLIENT = path.join(REPO, 'test', 'hvm', 'vnc-client.pl');
const host = new TestHost('xvmh');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-hvm-'));

before(async () => host.startDaemon());
after(async () => {
  await host.cleanup();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const cli = (args: string[]): string => host.ok(args);

function screenshot(name: string): Pixels {
  const file = path.join(tmp, `shot-${Date.now()}.png`);
  cli(['screenshot', name, file]);
  return decodePng(fs.readFileSync(file));
}

function vncClient(v: VncInfo, password: string, keys?: string): { code: number; stdout: string; stderr: string; png: string; ms: number } {
  const png = path.join(tmp, `vnc-${Date.now()}.png`);
  const started = Date.now();
  const r = spawnSync('perl', [VNC_CLIENT, v.listen, String(v.port), password, png, ...(keys !== undefined ? [keys] : [])], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, png, ms: Date.now() - started };
}

function externalAddress(): string | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}

function connectRefused(addr: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: addr, port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

test('grub-rescue ISO boots as an HVM guest; screen through screenshot, VNC (password) and noVNC websocket (token); cdrom eject/insert', { timeout: 600_000 }, async (t) => {
  const c = host.client;
  const disk = path.join(tmp, 'hda.raw');
  const pvDisk = path.join(tmp, 'vdb.raw');
  const sataDisk = path.join(tmp, 'sda.qcow2');
  spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', sataDisk, '16M']);
  fs.writeFileSync(disk, Buffer.alloc(16 << 20));
  fs.writeFileSync(pvDisk, Buffer.alloc(16 << 20));
  const cfgFile = path.join(tmp, 'hvm1.cfg');
  fs.writeFileSync(cfgFile, [
    'name = "hvm1"',
    'type = "hvm"',
    'memory = 128',
    `cdrom = "${ISO}"`,
    'boot = "dc"',
    // emulated IDE and AHCI disks, and a paravirtual one (our vhost-user backend): "PV drivers for HVM"
    `disk = [ "${disk},raw,hda,w", "${pvDisk},raw,vdb,w", "${sataDisk},qcow2,sda,w" ]`,
    '',
  ].join('\n'));
  const out = cli(['create', cfgFile]);
  assert.match(out, /Started domain hvm1/);
  const con = new ConsoleSession(c, 'hvm1', 1 << 20);
  await con.ready();

  // GRUB's menu: more than 3 % of the pixels lit (SeaBIOS's two lines of text light under 1 %).
  let menu: Pixels | undefined;
  await waitUntil(() => {
    menu = screenshot('hvm1');
    return nonBackgroundShare(menu) > 0.03;
  }, 180_000, 'the GRUB menu on the screen');
  assert.equal(menu!.width, 720, 'GRUB runs in VGA text mode (720x400)');
  assert.equal(menu!.height, 400);

  const v = JSON.parse(cli(['vnc', 'hvm1', '--json'])) as VncInfo;
  assert.equal(v.listen, '127.0.0.1', 'VNC listens on loopback unless vnclisten says otherwise');
  assert.ok(v.port >= 5900 && v.port < 6000, `port ${v.port}`);
  assert.equal(v.display, v.port - 5900);
  assert.equal(v.password.length, 8, 'a random 8-character password when vncpasswd is not given');
  assert.match(cli(['vnc', 'hvm1']), new RegExp(`password:\\s+${v.password}`));

  await t.test('not reachable on the host\'s other addresses', async () => {
    const ext = externalAddress();
    if (!ext) return t.diagnostic('no non-loopback IPv4 address on this host: nothing to check');
    assert.ok(await connectRefused(ext, v.port), `VNC port ${v.port} must not answer on ${ext}`);
  });

  await t.test('a wrong password is refused', () => {
    const r = vncClient(v, 'wrong-pw');
    assert.equal(r.code, 3, `the client must fail to log in: ${r.stdout} ${r.stderr}`);
    assert.match(r.stderr, /login failed/);
    assert.ok(!fs.existsSync(r.png), 'no framebuffer without the password');
    assert.ok(r.ms >= 900, `a failed attempt costs about a second (took ${r.ms} ms)`);
  });

  await t.test('a VNC client with the password sees the same screen as the screenshot', () => {
    // After its capture the client presses 'x' (unbound in GRUB's menu): that stops the
    // menu's countdown, so GRUB does not boot an entry while the test looks at it.
    const r = vncClient(v, v.password, 'x');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^QEMU \(hvm1\) 720x400$/m, 'desktop name and framebuffer size from the server');
    const seen = decodePng(fs.readFileSync(r.png));
    const now = screenshot('hvm1');
    assert.equal(seen.width, 720);
    assert.equal(seen.height, 400);
    assert.ok(nonBackgroundShare(seen) > 0.03, 'the VNC framebuffer is not blank');
    // Only GRUB's countdown line may change between the two pictures.
    assert.ok(differingShare(seen, now) < 0.05, `VNC framebuffer and screendump differ in ${(differingShare(seen, now) * 100).toFixed(1)} % of pixels`);
  });

  await t.test('keys typed through VNC reach GRUB; its answer comes out of the serial console', async () => {
    // 'c': GRUB's command line (the menu disappears from the screen).
    let cmdline = false;
    for (let attempt = 0; attempt < 3 && !cmdline; attempt++) {
      assert.equal(vncClient(v, v.password, attempt === 0 ? 'c' : '\\nc').code, 0);
      await waitUntil(() => {
        cmdline = differingShare(menu!, screenshot('hvm1')) > 0.04;
        return cmdline;
      }, 30_000, 'GRUB to leave its menu').catch(() => undefined);
    }
    assert.ok(cmdline, 'GRUB left its menu for the command line');
    // GRUB echoes what is typed; "grub$v" typed prints "grubvncok" only when GRUB runs it.
    const from = con.output.length;
    const r = vncClient(v, v.password, 'serial\\nterminal_output serial console\\nset v=vncok\\necho grub$v\\nls\\n');
    assert.equal(r.code, 0, r.stderr);
    await con.waitFor('grubvncok', 60_000, from);
    // GRUB's `ls` lists the disks the firmware found: the CD, the IDE and AHCI disks, and the virtio one on our vhost-user backend.
    await con.waitFor(/\(hd2\)/, 30_000, from);
    assert.match(con.output.slice(from), /\(cd\)/);
  });

  await t.test('cdrom eject and insert while running', async () => {
    assert.match(cli(['cdrom-eject', 'hvm1']), /^hdc: \(empty\)$/m);
    assert.deepEqual((await c.cdroms('hvm1')).map((x) => [x.vdev, x.medium]), [['hdc', null]]);
    assert.match(cli(['cdrom-insert', 'hvm1', ISO]), new RegExp(`^hdc: ${ISO}$`, 'm'));
    assert.equal((await c.cdroms('hvm1'))[0]!.medium, ISO);
    const bad = host.cli(['cdrom-insert', 'hvm1', '/nonexistent.iso']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /does not exist/);
    await assert.rejects(c.cdromInsert('hvm1', '/nonexistent.iso'), /cannot open \/nonexistent\.iso: ENOENT/);
    await assert.rejects(c.cdromInsert('hvm1', ISO, 'hdd'), /has no CD-ROM drive hdd/);
  });

  await t.test('noVNC websocket: a single-use token, then QEMU\'s RFB stream', async () => {
    const tok = await c.vncToken('hvm1');
    assert.equal(tok.path, `/v1/domains/hvm1/vnc/ws?token=${tok.token}`);
    const refused = (token: string) => new Promise<number>((resolve, reject) => {
      const ws = c.openVnc('hvm1', token);
      ws.once('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
      ws.once('open', () => {
        ws.close();
        reject(new Error('websocket opened without a valid token'));
      });
      ws.once('error', () => undefined);
    });
    assert.equal(await refused('not-a-token'), 403);
    const ws = c.openVnc('hvm1', tok.token);
    let got = Buffer.alloc(0);
    ws.on('message', (d: Buffer) => (got = Buffer.concat([got, d])));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    await waitUntil(() => got.length >= 12, 15_000, 'the RFB version');
    assert.equal(got.subarray(0, 12).toString('latin1'), 'RFB 003.008\n');
    ws.send(Buffer.from('RFB 003.008\n'));
    await waitUntil(() => got.length >= 12 + 1 + got[12]!, 15_000, 'the security types');
    assert.ok([...got.subarray(13, 13 + got[12]!)].includes(1), 'behind the token, QEMU offers None');
    const afterTypes = 13 + got[12]!;
    ws.send(Buffer.from([1]));
    await waitUntil(() => got.length >= afterTypes + 4, 15_000, 'the security result');
    assert.equal(got.readUInt32BE(afterTypes), 0);
    ws.send(Buffer.from([1])); // ClientInit, shared
    await waitUntil(() => got.length >= afterTypes + 4 + 24, 15_000, 'ServerInit');
    const init = got.subarray(afterTypes + 4);
    assert.equal(init.readUInt16BE(0), 720);
    assert.equal(init.readUInt16BE(2), 400);
    await waitUntil(() => init.length >= 24 + init.readUInt32BE(20) || got.length >= afterTypes + 4 + 24 + init.readUInt32BE(20), 15_000, 'the desktop name');
    assert.equal(got.subarray(afterTypes + 4 + 24, afterTypes + 4 + 24 + init.readUInt32BE(20)).toString('utf8'), 'QEMU (hvm1)');
    ws.close();
    assert.equal(await refused(tok.token), 403, 'a token works once');
  });

  await t.test('after an xvmd restart: same VNC address and password, and it still works', async () => {
    await host.stopDaemon();
    await host.startDaemon();
    const again = JSON.parse(cli(['vnc', 'hvm1', '--json'])) as VncInfo;
    assert.equal(again.port, v.port);
    assert.equal(again.password, v.password);
    const r = vncClient(again, again.password);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /720x400/);
    const seen = decodePng(fs.readFileSync(r.png));
    assert.ok(nonBackgroundShare(seen) > 0.001, 'not blank');
    assert.ok(differingShare(seen, screenshot('hvm1')) < 0.05, 'the same screen as the screendump');
  });

  con.close();
  cli(['destroy', 'hvm1']);
  assert.ok(await connectRefused('127.0.0.1', v.port), 'the VNC port closes with the domain');
  await assert.rejects(c.screenshot('hvm1'), /cannot take a screenshot of domain 'hvm1': it is shutdown/);
  await assert.rejects(c.vncInfo('nope'), /no domain named 'nope'/);
  // Started again by the same xvmd: the password the user has still works.
  cli(['start', 'hvm1']);
  const third = JSON.parse(cli(['vnc', 'hvm1', '--json'])) as VncInfo;
  assert.equal(third.password, v.password);
  cli(['destroy', 'hvm1']);
});

test('HVM configuration errors are clear', { timeout: 120_000 }, async () => {
  const c = host.client;
  await assert.rejects(
    c.createDomain({ config: { name: 'bad1', type: 'hvm', memory: 64, disk: [`${ISO},raw,sdh,r`] }, start: true }),
    /sdh does not fit an emulated controller/,
  );
  await assert.rejects(
    c.createDomain({ config: { name: 'bad2', type: 'hvm', memory: 64, cdrom: '/nonexistent.iso' }, start: true }),
    /cdrom: cannot open \/nonexistent\.iso: ENOENT/,
  );
  assert.deepEqual((await c.listDomains()).filter((d) => d.name.startsWith('bad')), [], 'a domain that cannot start is not left defined');
  await assert.rejects(c.request('POST', '/v1/domains/x/cdrom/insert', { file: 'relative.iso' }), /must be an absolute path/);
  await assert.rejects(c.request('POST', '/v1/install', { name: 'x', bogus: 1 }), /unknown field/);

  // Seeded random bodies on the HVM routes: always a 4xx with a message, never a 500, and xvmd keeps serving.
  const rand = rng(0x4856);
  const value = (depth: number): unknown => {
    const k = Math.floor(rand() * 8);
    if (depth > 2 || k === 0) return Math.floor(rand() * 2 ** 33) - 2 ** 32;
    if (k === 1) return 'x'.repeat(Math.floor(rand() * 5000));
    if (k === 2) return rand() < 0.5;
    if (k === 3) return null;
    if (k === 4) return Array.from({ length: Math.floor(rand() * 4) }, () => value(depth + 1));
    if (k === 5) return '/../' + String.fromCharCode(Math.floor(rand() * 32)) + 'iso';
    const keys = ['name', 'memory', 'disk', 'size', 'vol', 'cdrom', 'kernel', 'file', 'vdev', 'type', 'graphics', 'token', '__proto__'];
    return Object.fromEntries(Array.from({ length: Math.floor(rand() * 5) }, () => [keys[Math.floor(rand() * keys.length)]!, value(depth + 1)]));
  };
  const routes = ['/v1/install', '/v1/domains/hvmz/cdrom/insert', '/v1/domains/hvmz/cdrom/eject', '/v1/domains/hvmz/vnc/token'];
  for (let i = 0; i < 300; i++) {
    const route = routes[i % routes.length]!;
    const r = await c.rawRequest('POST', route, value(0));
    assert.ok(r.status >= 400 && r.status < 500, `POST ${route} #${i}: HTTP ${r.status} ${r.body.slice(0, 200)}`);
    assert.ok((JSON.parse(r.body) as { error: { message: string } }).error.message.length > 0);
  }
  assert.deepEqual((await c.listDomains()).map((d) => d.name).filter((n) => n !== 'hvm1'), [], 'no random body made a domain');
  await c.host();
});
