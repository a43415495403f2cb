// Debugging and watching a real guest: magic SysRq, an ELF core dump, gdb
// through the gdbstub, xvm top, /metrics, xvm dmesg and the device log, and
// the systemd unit of `xvm daemon install`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { TestHost, ConsoleSession, READY_BANNER, REPO, waitUntil } from '../helpers/xvm.js';

const host = new TestHost('xvmo');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-ops-'));
let con: ConsoleSession;
const MEMORY = 128;

before(async () => {
  await host.startDaemon();
  await host.client.createDomain({ config: { name: 'dbg', memory: MEMORY } });
  con = new ConsoleSession(host.client, 'dbg', 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 120_000);
});
after(async () => {
  con?.close();
  await host.cleanup();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

test('sysrq t prints a task dump on the guest console; bad keys are refused clearly', { timeout: 120_000 }, async () => {
  const from = con.output.length;
  // The default guest boots with `quiet`: SysRq 7 raises the console log level
  // so the task list (KERN_INFO) reaches the serial console, not only dmesg.
  let r = host.cli(['sysrq', 'dbg', '7']);
  assert.equal(r.code, 0, r.stderr);
  await con.waitFor(/sysrq: Changing Loglevel/, 30_000, from);
  r = host.cli(['sysrq', 'dbg', 't']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /SysRq t sent to dbg/);
  await con.waitFor(/sysrq: Show State/, 30_000, from);
  await con.waitFor(/task:\S+\s+state:/, 60_000, from);
  assert.match(con.output.slice(from), /task:(init|sh|swapper)/, 'the dump lists the guest\'s tasks');
  // The guest still answers.
  assert.equal(await con.run('echo $((6*7))'), '42');

  const bad = host.cli(['sysrq', 'dbg', 'ab']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /not a magic SysRq key/);
  await assert.rejects(host.client.sysrq('dbg', 'a'), /not a magic SysRq key/);
  await assert.rejects(host.client.sysrq('nosuch', 't'), /no domain named 'nosuch'/);
});

test('dump-core writes an ELF core that readelf accepts, at least as big as guest memory; the guest runs on', { timeout: 180_000 }, async () => {
  const file = path.join(tmp, 'dbg.core');
  const r = host.cli(['dump-core', 'dbg', file], { timeoutMs: 150_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /wrote .*dbg\.core: .* MiB ELF core .*dbg is running/);
  const size = fs.statSync(file).size;
  assert.ok(size >= MEMORY * 1048576, `core of ${size} bytes holds all ${MEMORY} MiB of guest memory`);
  assert.ok(size < MEMORY * 1048576 + (16 << 20), `core of ${size} bytes is not much bigger than guest memory`);
  const elf = spawnSync('readelf', ['-h', file], { encoding: 'utf8' });
  assert.equal(elf.status, 0, elf.stderr);
  assert.match(elf.stdout, /Type:\s+CORE/);
  assert.match(elf.stdout, /Machine:\s+Advanced Micro Devices X86-64/);
  const notes = spawnSync('readelf', ['-n', file], { encoding: 'utf8' });
  assert.match(notes.stdout, /NT_PRSTATUS/, 'the core carries the vCPU registers');
  assert.equal((await host.client.getDomain('dbg')).state, 'running', 'QEMU resumed the guest after the dump');
  assert.equal(await con.run('echo after-dump-$((6*7))'), 'after-dump-42');
  // A second dump replaces the first (QEMU makes the core read-only).
  const again = await host.client.dumpCore('dbg', file);
  assert.equal(again.state, 'running');
  assert.ok(fs.statSync(file).size >= MEMORY * 1048576);
  fs.rmSync(file);

  // A paused guest is dumped and stays paused; SysRq to it is refused.
  await host.client.pause('dbg');
  const paused = await host.client.dumpCore('dbg', file);
  assert.equal(paused.state, 'paused');
  assert.equal((await host.client.getDomain('dbg')).state, 'paused', 'a paused guest stays paused after its dump');
  await assert.rejects(host.client.sysrq('dbg', 't'), /cannot send SysRq to domain 'dbg': it is paused/);
  await host.client.unpause('dbg');
  assert.equal(await con.run('echo resumed'), 'resumed');
  fs.rmSync(file);
  // A domain that is not running has no memory to dump.
  await host.client.createDomain({ config: { name: 'idle' }, start: false });
  await assert.rejects(host.client.dumpCore('idle', file), /cannot dump the core of domain 'idle': it is defined/);
  await assert.rejects(host.client.gdbStart('idle'), /cannot debug domain 'idle': it is defined/);
  await host.client.undefineDomain('idle');

  const missing = host.cli(['dump-core', 'dbg', path.join(tmp, 'no-such-dir', 'x.core')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no-such-dir does not exist/);
  await assert.rejects(host.client.dumpCore('dbg', 'relative.core'), /must be an absolute path/);
  await assert.rejects(host.client.dumpCore('dbg', tmp), /exists and is not a regular file/);
});

test('gdb reads $rip through the gdbstub that xvm debug opens; --stop closes it', { timeout: 120_000 }, async () => {
  assert.ok(has('gdb'), 'gdb is installed (apt-get install -y gdb)');
  const r = host.cli(['debug', 'dbg', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { socket: string; gdbCommand: string };
  assert.ok(fs.statSync(info.socket).isSocket(), 'the stub listens on a unix socket');
  assert.equal(info.gdbCommand, `gdb -ex 'target remote ${info.socket}'`);
  // Asking again while it is open is harmless.
  assert.equal((await host.client.gdbStart('dbg')).socket, info.socket);
  const g = spawnSync('gdb', ['-nx', '-batch', '-ex', `target remote ${info.socket}`, '-ex', 'info registers rip', '-ex', 'x/2xb $rip'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(g.status, 0, g.stderr);
  const m = /^rip\s+(0x[0-9a-f]+)/m.exec(g.stdout);
  assert.ok(m, `gdb printed rip: ${g.stdout}`);
  assert.ok(BigInt(m[1]!) >= 0xffffffff80000000n, `the guest runs in the kernel's address range (rip ${m[1]})`);
  assert.match(g.stdout, new RegExp(`${m[1]}.*:\\s+0x[0-9a-f]{2}\\s+0x[0-9a-f]{2}`), 'gdb reads guest memory at $rip');
  // gdb detached: the guest runs on.
  await waitUntil(async () => (await host.client.getDomain('dbg')).state === 'running', 10_000, 'the guest to run after gdb detached');
  assert.equal(await con.run('echo after-gdb'), 'after-gdb');
  const stop = host.cli(['debug', 'dbg', '--stop']);
  assert.equal(stop.code, 0, stop.stderr);
  assert.ok(!fs.existsSync(info.socket), 'the stub socket is gone');
});

test('xvm top --batch shows the running guest with its counters', { timeout: 60_000 }, () => {
  const r = host.cli(['top', '--batch', '--iterations', '2', '--delay', '1']);
  assert.equal(r.code, 0, r.stderr);
  const tables = r.stdout.split(/^xvm top - /m).filter(Boolean);
  assert.equal(tables.length, 2, r.stdout);
  for (const t of tables) {
    assert.match(t, /NAME\s+STATE\s+CPU\(sec\)\s+CPU\(%\)\s+MEM\(k\)\s+MAXMEM\(k\)\s+RSS\(k\)\s+VCPUS/);
    const row = /^dbg\s+r-----\s+(\d+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\d+)\s+1(?:\s+[\d.]+){4}\s+\d+$/m.exec(t);
    assert.ok(row, `a row for dbg: ${t}`);
    assert.equal(Number(row[3]), MEMORY * 1024);
    assert.ok(Number(row[5]) > 0, 'QEMU has resident memory');
  }
  const bad = host.cli(['top', '--iterations', '0']);
  assert.equal(bad.code, 2);
});

test('xvm top on a terminal redraws in place', { timeout: 60_000 }, () => {
  assert.ok(has('script'), 'script(1) from util-linux/bsdutils gives the CLI a terminal');
  const cmd = `${process.execPath} ${path.join(REPO, 'bin', 'xvm.js')} top --iterations 2 --delay 1 </dev/null`;
  const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { env: host.env, encoding: 'utf8', timeout: 50_000 });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.equal(r.stdout.split('\x1b[H\x1b[2J').length - 1, 2, 'each table starts by clearing the screen and homing the cursor');
  assert.match(r.stdout, /\r?\ndbg\s+r-----\s+\d+\s+[\d.]+\s+131072\s/);
  assert.ok(r.stdout.includes('\x1b[?25h'), 'the cursor is shown again at the end');
  // With the terminal as stdin too (raw mode for the q key), it still ends by itself.
  const r2 = spawnSync('script', ['-qec', cmd.replace(' </dev/null', ''), '/dev/null'], { env: host.env, encoding: 'utf8', timeout: 50_000, input: '' });
  assert.equal(r2.status, 0, r2.stderr + r2.stdout);
  assert.equal(r2.stdout.split('\x1b[H\x1b[2J').length - 1, 2);
});

/** A small parser of the Prometheus text format (0.0.4): families with HELP/TYPE and samples. */
function parsePrometheus(text: string): Map<string, { type: string; help: string; samples: { labels: Record<string, string>; value: number }[] }> {
  const fams = new Map<string, { type: string; help: string; samples: { labels: Record<string, string>; value: number }[] }>();
  const lines = text.split('\n');
  assert.equal(lines.pop(), '', 'the exposition ends with a newline');
  for (const line of lines) {
    let m: RegExpExecArray | null;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line))) {
      const f = fams.get(m[1]!) ?? { type: 'untyped', help: '', samples: [] };
      f.help = m[2]!;
      fams.set(m[1]!, f);
    } else if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line))) {
      const f = fams.get(m[1]!) ?? { type: 'untyped', help: '', samples: [] };
      assert.equal(f.samples.length, 0, `TYPE of ${m[1]} comes before its samples`);
      f.type = m[2]!;
      fams.set(m[1]!, f);
    } else if ((m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line))) {
      const f = fams.get(m[1]!);
      assert.ok(f, `sample ${m[1]} belongs to a declared family`);
      const labels: Record<string, string> = {};
      if (m[2]) {
        const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/gy;
        let lm: RegExpExecArray | null;
        let pos = 0;
        while ((lm = re.exec(m[2])) !== null) {
          labels[lm[1]!] = lm[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
          pos = re.lastIndex;
        }
        assert.equal(pos, m[2].length, `labels parse: ${line}`);
      }
      const value = Number(m[3]!.replace(/^\+Inf$/, 'Infinity').replace(/^-Inf$/, '-Infinity'));
      assert.ok(!Number.isNaN(value) || m[3] === 'NaN', `numeric value: ${line}`);
      f.samples.push({ labels, value });
    } else {
      assert.fail(`not a Prometheus text line: ${JSON.stringify(line)}`);
    }
  }
  return fams;
}

test('/metrics is Prometheus text with per-domain, API and process metrics', { timeout: 60_000 }, async () => {
  const text = await host.client.metrics();
  const fams = parsePrometheus(text);
  const one = (name: string, labels: Record<string, string>) => {
    const f = fams.get(name);
    assert.ok(f, `${name} is exposed`);
    const s = f.samples.find((x) => Object.entries(labels).every(([k, v]) => x.labels[k] === v));
    assert.ok(s, `${name}${JSON.stringify(labels)} has a sample`);
    return s.value;
  };
  assert.equal(fams.get('xvm_domain_cpu_seconds_total')?.type, 'counter');
  assert.ok(one('xvm_domain_cpu_seconds_total', { domain: 'dbg' }) > 0);
  assert.equal(one('xvm_domain_memory_bytes', { domain: 'dbg' }), MEMORY * 1048576);
  assert.equal(one('xvm_domain_state', { domain: 'dbg', state: 'running' }), 1);
  assert.equal(one('xvm_domain_state', { domain: 'dbg', state: 'paused' }), 0);
  assert.equal(one('xvm_domain_vcpus', { domain: 'dbg' }), 1);
  assert.ok(one('xvm_console_bytes_total', { domain: 'dbg' }) > 100, 'console bytes are counted');
  assert.ok(one('xvm_api_requests_total', { method: 'POST', route: '/v1/domains/:name/sysrq', status: '200' }) >= 2);
  assert.ok(one('xvm_api_requests_total', { method: 'POST', route: '/v1/domains/:name/sysrq', status: '400' }) >= 1);
  assert.ok(one('process_resident_memory_bytes', {}) > 1 << 20);
  assert.ok(one('process_cpu_seconds_total', {}) > 0);
  for (const [name, f] of fams) assert.ok(f.help.length > 0, `${name} has HELP`);
  // The routes are in the OpenAPI document.
  const doc = (await host.client.openapi()) as { paths: Record<string, Record<string, unknown>> };
  for (const [p, m] of [['/metrics', 'get'], ['/v1/stats', 'get'], ['/v1/logs/{log}', 'get'], ['/v1/domains/{name}/sysrq', 'post'], ['/v1/domains/{name}/dump-core', 'post'], ['/v1/domains/{name}/gdbstub', 'post'], ['/v1/domains/{name}/gdbstub', 'delete'], ['/v1/domains/{name}/autostart', 'post']] as const) {
    assert.ok(doc.paths[p]?.[m], `${m.toUpperCase()} ${p} is documented`);
  }
});

test('xvm dmesg shows xvmd\'s log and, with --devices, the device events', { timeout: 60_000 }, () => {
  const r = host.cli(['dmesg', '--lines', '500']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} info  xvmd ready socket=/m);
  assert.match(r.stdout, /info  domain started domain=dbg /);
  assert.match(r.stdout, /info  sysrq sent domain=dbg key=t/);
  const j = host.cli(['dmesg', '--json', '-n', '3']);
  const lines = j.stdout.trim().split('\n');
  assert.equal(lines.length, 3);
  for (const l of lines) assert.ok(JSON.parse(l).time, 'JSON lines pass through');

  const d = host.cli(['dmesg', '--devices', '--json']);
  assert.equal(d.code, 0, d.stderr);
  const events = d.stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; domain: string; pid?: number });
  assert.ok(events.some((e) => e.kind === 'qemu-start' && e.domain === 'dbg' && e.pid), 'QEMU start is logged with its pid');
  assert.ok(events.some((e) => e.kind === 'console-attach' && e.domain === 'dbg'), 'console attach is logged');
  const pretty = host.cli(['dmesg', '--devices']);
  assert.match(pretty.stdout, /device qemu-start domain=dbg domid=\d+ pid=\d+/);
  assert.equal(host.cli(['dmesg', '--lines', 'x']).code, 2);
});

test('xvm dmesg --follow streams new lines', { timeout: 60_000 }, async () => {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, [path.join(REPO, 'bin', 'xvm.js'), 'dmesg', '--follow', '-n', '0'], { env: host.env });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  try {
    await new Promise((r) => setTimeout(r, 1500));
    await host.client.sysrq('dbg', 'm');
    await waitUntil(() => /sysrq sent domain=dbg key=m/.test(out), 20_000, 'the followed log to show the new line');
  } finally {
    child.kill('SIGINT');
  }
});

test('xvm daemon install --dest writes a systemd unit that systemd-analyze accepts', { timeout: 60_000 }, () => {
  const dest = path.join(tmp, 'units');
  fs.mkdirSync(dest);
  const r = host.cli(['daemon', 'install', '--dest', dest, '--on-stop', 'shutdown', '--timeout', '45']);
  assert.equal(r.code, 0, r.stderr);
  const unit = fs.readFileSync(path.join(dest, 'xvmd.service'), 'utf8');
  assert.ok(unit.includes(`\nExecStart=${process.execPath} ${path.join(REPO, 'bin', 'xvmd.js')}\n`), unit);
  assert.ok(unit.includes(`\nExecStop=${process.execPath} ${path.join(REPO, 'bin', 'xvm.js')} daemon stop --domains=shutdown --timeout 45\n`), unit);
  assert.match(unit, /^KillMode=process$/m);
  assert.match(unit, /^Restart=on-failure$/m);
  assert.match(unit, /^WantedBy=multi-user.target$/m);
  assert.ok(unit.includes(`Environment=XVM_HOME=${host.home}`));
  const sa = spawnSync('systemd-analyze', ['verify', path.join(dest, 'xvmd.service')], { encoding: 'utf8' });
  if (sa.error && (sa.error as NodeJS.ErrnoException).code === 'ENOENT') {
    assert.ok(true, 'systemd-analyze is not installed here: the unit was checked by its text only');
  } else {
    assert.equal(sa.status, 0, `systemd-analyze verify: ${sa.stderr}`);
    assert.equal(sa.stderr.trim(), '', 'no warnings');
  }
  const bad = host.cli(['daemon', 'install', '--dest', path.join(tmp, 'nope')]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /is not a folder/);
});

test('malformed requests to the operations routes get clear 4xx errors', { timeout: 60_000 }, async () => {
  const c = host.client;
  const cases: [string, string, unknown, number, RegExp][] = [
    ['POST', '/v1/domains/dbg/sysrq', { key: 5 }, 400, /key/],
    ['POST', '/v1/domains/dbg/sysrq', { key: 't', extra: 1 }, 400, /unknown field/],
    ['POST', '/v1/domains/dbg/sysrq', { key: '\u0000' }, 400, /not a magic SysRq key/],
    ['POST', '/v1/domains/dbg/dump-core', {}, 400, /file/],
    ['POST', '/v1/domains/dbg/dump-core', { file: '/proc/nope/x.core' }, 400, /folder \/proc\/nope does not exist/],
    ['POST', '/v1/domains/dbg/dump-core', { file: 'x.core' }, 400, /absolute path/],
    ['POST', '/v1/domains/no%2Fsuch/dump-core', { file: '/tmp/x' }, 400, /domain name/],
    ['POST', '/v1/domains/ghost/dump-core', { file: '/tmp/x.core' }, 404, /no domain named 'ghost'/],
    ['POST', '/v1/domains/dbg/autostart', { on: 'yes' }, 400, /on/],
    ['POST', '/v1/domains/dbg/gdbstub', { port: 1 }, 400, /unknown field/],
    ['GET', '/v1/logs/passwd', undefined, 400, /log/],
    ['GET', '/v1/logs/xvmd?lines=-1', undefined, 400, /lines/],
    ['GET', '/v1/logs/xvmd?follow=maybe', undefined, 400, /follow/],
    ['POST', '/v1/daemon/stop', { domains: 'hibernate' }, 400, /domains/],
  ];
  for (const [method, p, body, status, re] of cases) {
    const r = await c.rawRequest(method, p, body);
    assert.equal(r.status, status, `${method} ${p} ${JSON.stringify(body)} -> ${r.status} ${r.body}`);
    assert.match(r.body, re, `${method} ${p}: ${r.body}`);
  }
  // Still serving, the guest untouched.
  assert.equal((await c.getDomain('dbg')).state, 'running');
});
