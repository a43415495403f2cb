#!/usr/bin/env node
// Reproduces, with raw QEMU and no xvm process at all, the guest memory
// corruption seen after live migration of a memory-dirtying TCG guest
// (docs/save-restore.md, "Open problem"): the default guest boots, writes
// 24 MiB to tmpfs in a loop, and is migrated QEMU → QEMU over loopback TCP
// N times; the destination's console is checked for an oops.
//
//   npm run build && node scripts/repro-tcg-migration.mjs [ROUNDS]
//   VARIANT=cpu|nomemfd|single|noballoon …   (-cpu qemu64 / plain RAM /
//   single-threaded TCG / no balloon; combinable)
//
// Exit code 1 when a destination oopsed or did not run.
import fs from 'node:fs'; import os from 'node:os'; import path from 'node:path'; import net from 'node:net'; import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const D = path.join(REPO, 'dist', 'src');
const { buildQemuArgs, QEMU_BINARY, runtimeFiles } = await import(`${D}/engine/qemu-args.js`);
const { QmpClient } = await import(`${D}/engine/qmp.js`);
const { makeFifo } = await import(`${D}/daemon/console.js`);
const { ensureDefaultImage, READY_BANNER } = await import(`${D}/image/index.js`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const image = await ensureDefaultImage({ dir: path.join(process.env.XVM_IMAGE_DIR ?? path.join(REPO, '.cache', 'images'), 'default') });
async function start(port) {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rawmig-'));
  const files = runtimeFiles(runDir); makeFifo(files.consoleIn); makeFifo(files.consoleOut);
  const outFd = fs.openSync(files.consoleOut, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const inFd = fs.openSync(files.consoleIn, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const out = new net.Socket({ fd: outFd, readable: true, writable: false });
  const argv = buildQemuArgs({ name: 'rawmig', uuid: crypto.randomUUID(), memoryMiB: 256, vcpus: 1, accel: 'tcg', kernel: image.kernel, initrd: image.initrd, cmdline: `${image.cmdline} xvm.name=rawmig`, runDir, onReboot: 'restart' });
  const V = process.env.VARIANT ?? '';
  if (V.includes('nomemfd')) { const i = argv.indexOf('-object'); argv.splice(i, 2); const m = argv.indexOf('pc,accel=tcg,memory-backend=xvm-ram'); argv[m] = 'pc,accel=tcg'; }
  if (V.includes('cpu')) argv[argv.indexOf('max')] = 'qemu64';
  if (V.includes('noballoon')) { const i = argv.indexOf('virtio-balloon-pci,id=balloon0'); argv.splice(i - 1, 2); }
  if (V.includes('single')) { const m = argv.indexOf('pc,accel=tcg,memory-backend=xvm-ram'); argv[m] = 'pc,memory-backend=xvm-ram'; argv.push('-accel', 'tcg,thread=single'); }
  if (port) argv.push('-incoming', `tcp:127.0.0.1:${port}`);
  const qemu = spawn(QEMU_BINARY, argv, { stdio: 'ignore' });
  const g = { qemu, out, inFd, seen: '' };
  out.on('data', (d) => (g.seen += d.toString('latin1')));
  for (let i = 0; ; i++) { try { g.qmp = await QmpClient.connect(files.qmp, 2000); break; } catch { await sleep(20); } }
  return g;
}
let src = await start();
await src.qmp.execute('cont').catch(() => {});
for (let i = 0; i < 200 && !src.seen.includes(READY_BANNER); i++) await sleep(100);
fs.writeSync(src.inFd, 'while true; do dd if=/dev/zero of=/tmp/dirty bs=1M count=24 2>/dev/null; rm /tmp/dirty; done &\r');
await sleep(1500);
let bad = 0;
for (let r = 0; r < Number(process.argv[2] ?? 4); r++) {
  const port = 19000 + r;
  const dst = await start(port);
  await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 1 << 30 });
  await src.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
  for (;;) { const q = await src.qmp.execute('query-migrate'); if (q.status === 'completed' || q.status === 'failed') break; await sleep(20); }
  await src.qmp.execute('quit').catch(() => {});
  await sleep(3000);
  const st = await dst.qmp.execute('query-status');
  const panic = /Kernel panic|BUG:|general protection/.test(dst.seen);
  console.log(`round ${r + 1}: destination ${st.status}${panic ? ' PANIC: ' + (dst.seen.match(/(BUG:|Kernel panic)[^\n]*/) ?? [''])[0] : ''}`);
  if (panic || st.status !== 'running') { bad++; await dst.qmp.execute('quit').catch(() => {}); break; }
  src = dst;
}
await src.qmp.execute('quit').catch(() => {});
console.log(`bad rounds: ${bad}`);
process.exit(bad ? 1 : 0);
