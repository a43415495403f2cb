// xvmd's VNC server against a real QEMU VNC socket (a paused PC with a VGA
// card: no guest to boot): DES test vectors of VNC authentication; RFB 3.3,
// 3.7 and 3.8 clients; wrong security type, garbage, oversized and seeded
// random handshakes from hostile clients close the connection and leave
// the server working; the handshake limit; single-use tokens.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { desEcb, vncAuthCheck, vncAuthResponse, vncKey } from '../../src/daemon/vnc-auth.js';
import { VncService, vncFiles } from '../../src/daemon/vnc.js';
import { Logger } from '../../src/daemon/log.js';
import { QEMU_BINARY } from '../../src/engine/qemu-args.js';
import { rng } from '../helpers/random.js';
import { waitUntil } from '../helpers/xvm.js';

const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvmv-'));
const PASSWORD = 'pw-12345';
let qemu: ChildProcess;
const service = new VncService(new Logger({}));
let port = 0;

before(async () => {
  qemu = spawn(QEMU_BINARY, ['-machine', 'pc,accel=tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-m', '32M', '-S',
    '-device', 'VGA', '-vnc', `unix:${vncFiles(runDir).socket}`], { stdio: 'ignore' });
  await waitUntil(() => fs.existsSync(vncFiles(runDir).socket), 30_000, "QEMU's VNC socket");
  port = (await service.start('vtest', crypto.randomUUID(), runDir, { listen: '127.0.0.1', password: PASSWORD })).port;
});
after(async () => {
  await service.closeAll();
  qemu.kill('SIGKILL');
  fs.rmSync(runDir, { recursive: true, force: true });
});

test('DES and VNC authentication test vectors', () => {
  // FIPS 81 / classic DES vectors.
  assert.equal(desEcb(Buffer.from('0123456789abcdef', 'hex'), Buffer.from('Now is t')).toString('hex'), '3fa40e8a984d4815');
  assert.equal(desEcb(Buffer.from('133457799bbcdff1', 'hex'), Buffer.from('0123456789abcdef', 'hex')).toString('hex'), '85e813540f0ab405');
  // The VNC key mirrors the bits of each password byte, zero padded to 8, cut at 8.
  assert.equal(vncKey('\x80\xc4\xa2\xe6\x91\xd5\xb3\xf7').toString('hex'), '0123456789abcdef');
  assert.equal(vncKey('a').toString('hex'), '8600000000000000');
  assert.deepEqual(vncKey('abcdefghXYZ'), vncKey('abcdefgh'));
  const challenge = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  const r = vncAuthResponse('\x80\xc4\xa2\xe6\x91\xd5\xb3\xf7', challenge);
  assert.equal(r.toString('hex'), desEcb(Buffer.from('0123456789abcdef', 'hex'), challenge).toString('hex'));
  assert.ok(vncAuthCheck('\x80\xc4\xa2\xe6\x91\xd5\xb3\xf7', challenge, r));
  assert.ok(!vncAuthCheck('other', challenge, r));
  assert.ok(!vncAuthCheck('x', challenge, r.subarray(0, 15)), 'a short answer is wrong, not a crash');
});

/** Reads from a socket until `n` bytes or the end. */
function collector(s: net.Socket): { buf: () => Buffer; closed: () => boolean } {
  let buf = Buffer.alloc(0);
  let closed = false;
  s.on('data', (d: Buffer) => (buf = Buffer.concat([buf, d])));
  s.on('close', () => (closed = true));
  s.on('error', () => undefined);
  return { buf: () => buf, closed: () => closed };
}

async function connect(): Promise<{ s: net.Socket; c: ReturnType<typeof collector> }> {
  const s = net.connect({ host: '127.0.0.1', port });
  const c = collector(s);
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  return { s, c };
}

/** An RFB client of version 3.MINOR; resolves with the server's framebuffer size and name. */
async function login(minor: 3 | 7 | 8, password: string): Promise<{ ok: true; width: number; height: number; name: string } | { ok: false; reason: string }> {
  const { s, c } = await connect();
  const need = (n: number) => waitUntil(() => c.buf().length >= n || c.closed(), 20_000, `${n} bytes`).then(() => {
    if (c.buf().length < n) throw new Error(`connection closed after ${c.buf().length} bytes`);
  });
  try {
    await need(12);
    assert.equal(c.buf().subarray(0, 12).toString('latin1'), 'RFB 003.008\n');
    s.write(`RFB 003.00${minor}\n`);
    let at = 12;
    if (minor === 3) {
      await need(at + 4);
      assert.equal(c.buf().readUInt32BE(at), 2, 'RFB 3.3: the server picks VNC authentication');
      at += 4;
    } else {
      await need(at + 1);
      const n = c.buf()[at]!;
      await need(at + 1 + n);
      assert.deepEqual([...c.buf().subarray(at + 1, at + 1 + n)], [2], 'only VNC authentication is offered');
      at += 1 + n;
      s.write(Buffer.from([2]));
    }
    await need(at + 16);
    s.write(vncAuthResponse(password, c.buf().subarray(at, at + 16)));
    at += 16;
    await need(at + 4);
    if (c.buf().readUInt32BE(at) !== 0) {
      at += 4;
      let reason = '';
      if (minor === 8) {
        await need(at + 4);
        const len = c.buf().readUInt32BE(at);
        await need(at + 4 + len);
        reason = c.buf().subarray(at + 4, at + 4 + len).toString('utf8');
      }
      await waitUntil(() => c.closed(), 10_000, 'the server to close');
      return { ok: false, reason };
    }
    at += 4;
    s.write(Buffer.from([1])); // ClientInit, shared
    await need(at + 24);
    const width = c.buf().readUInt16BE(at);
    const height = c.buf().readUInt16BE(at + 2);
    const nameLen = c.buf().readUInt32BE(at + 20);
    await need(at + 24 + nameLen);
    return { ok: true, width, height, name: c.buf().subarray(at + 24, at + 24 + nameLen).toString('utf8') };
  } finally {
    s.destroy();
  }
}

test('RFB 3.3, 3.7 and 3.8 clients log in with the password and reach QEMU', { timeout: 120_000 }, async () => {
  for (const minor of [3, 7, 8] as const) {
    const r = await login(minor, PASSWORD);
    assert.ok(r.ok, `RFB 3.${minor}: ${JSON.stringify(r)}`);
    assert.equal(r.width, 640, 'a paused VGA card: 640x480');
    assert.equal(r.height, 480);
    assert.match(r.name, /^QEMU/);
  }
  const bad = await login(8, 'nope');
  assert.deepEqual(bad, { ok: false, reason: 'authentication failed' });
  const bad3 = await login(3, 'nope');
  assert.deepEqual(bad3, { ok: false, reason: '' });
});

test('hostile clients: wrong security type, garbage, too much, random bytes — closed, server still works', { timeout: 240_000 }, async () => {
  // Security type None is refused with a reason.
  {
    const { s, c } = await connect();
    s.write('RFB 003.008\n');
    await waitUntil(() => c.buf().length >= 14, 10_000, 'the security types');
    s.write(Buffer.from([1]));
    await waitUntil(() => c.closed(), 10_000, 'the server to close');
    const rest = c.buf().subarray(14);
    assert.equal(rest.readUInt32BE(0), 1);
    assert.match(rest.subarray(8).toString('utf8'), /requires VNC authentication/);
  }
  // Not RFB at all.
  {
    const { s, c } = await connect();
    s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitUntil(() => c.closed(), 10_000, 'the server to close');
  }
  // Far more than a handshake.
  {
    const { s, c } = await connect();
    s.write(Buffer.alloc(100_000, 0x41));
    await waitUntil(() => c.closed(), 10_000, 'the server to close');
  }
  // Seeded random handshakes, some starting with a valid version line; each ends its side.
  const rand = rng(0x5eed);
  for (let i = 0; i < 150; i++) {
    const { s, c } = await connect();
    const len = Math.floor(rand() * 64);
    const junk = Buffer.from(Array.from({ length: len }, () => Math.floor(rand() * 256)));
    const payload = rand() < 0.5 ? Buffer.concat([Buffer.from('RFB 003.008\n'), junk]) : junk;
    s.end(payload);
    await waitUntil(() => c.closed(), 10_000, `connection ${i} to close`);
    // Nothing random gets past authentication: a success result (0 after the challenge) never comes.
    const b = c.buf();
    assert.ok(!(b.length >= 12 + 2 + 16 + 4 && b.readUInt32BE(12 + 2 + 16) === 0), `connection ${i}: random bytes were let in`);
  }
  const r = await login(8, PASSWORD);
  assert.ok(r.ok, 'a good client still logs in');
});

test('at most 16 clients authenticate at once', { timeout: 60_000 }, async () => {
  const idle = await Promise.all(Array.from({ length: 16 }, () => connect()));
  await waitUntil(() => idle.every((x) => x.c.buf().length >= 12), 10_000, 'the greetings');
  const { c } = await connect();
  await waitUntil(() => c.closed(), 10_000, 'the 17th to be refused');
  assert.equal(c.buf().subarray(0, 12).toString('latin1'), 'RFB 003.008\n');
  assert.equal(c.buf()[12], 0, 'zero security types: a refusal');
  assert.match(c.buf().subarray(17).toString('utf8'), /too many connections/);
  for (const x of idle) x.s.destroy();
  await waitUntil(async () => (await login(8, PASSWORD)).ok, 30_000, 'a login once the idle ones are gone');
});

test('noVNC tokens are single-use and bound to their domain', () => {
  const t1 = service.issueToken('vtest');
  assert.match(t1.token, /^[A-Za-z0-9_-]{32}$/);
  assert.ok(Date.parse(t1.expiresAt) - Date.now() <= 60_000);
  assert.equal(service.redeemToken('other', t1.token), false, 'not for another domain');
  assert.equal(service.redeemToken('vtest', t1.token), false, 'a token tried once is gone');
  const t2 = service.issueToken('vtest');
  assert.equal(service.redeemToken('vtest', t2.token), true);
  assert.equal(service.redeemToken('vtest', t2.token), false, 'single use');
  assert.equal(service.redeemToken('vtest', 'made-up'), false);
});
