// The pure parts of the operations tools: log tailing and formatting, CPU %,
// the SysRq key check, the systemd unit text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tailLines } from '../../src/daemon/ops-routes.js';
import { checkSysrqKey, checkDumpTarget } from '../../src/daemon/debug.js';
import { formatLogLine, systemdUnit } from '../../src/cli/ops.js';
import { cpuPercent, deviceRate, renderTop } from '../../src/cli/top.js';
import type { HostStats } from '../../src/api/schema.js';

test('tailLines returns the last complete lines, skipping a line still being written', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-tail-'));
  try {
    const f = path.join(dir, 'log');
    assert.deepEqual(tailLines(f, 5), { lines: [], end: 0 }, 'a missing file has no lines');
    fs.writeFileSync(f, '');
    assert.deepEqual(tailLines(f, 5).lines, []);
    const many = Array.from({ length: 20000 }, (_, i) => JSON.stringify({ i, pad: 'x'.repeat(i % 50) }));
    fs.writeFileSync(f, many.join('\n') + '\n{"partial":');
    const t = tailLines(f, 3);
    assert.deepEqual(t.lines, many.slice(-3));
    assert.equal(t.end, fs.statSync(f).size - '{"partial":'.length, 'following resumes at the partial line');
    assert.deepEqual(tailLines(f, 0).lines, []);
    assert.equal(tailLines(f, 100000).lines.length, 20000);
    fs.writeFileSync(f, 'one\ntwo\n');
    assert.deepEqual(tailLines(f, 10).lines, ['one', 'two']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('formatLogLine prints JSON lines readably and passes anything else through', () => {
  assert.equal(
    formatLogLine('{"time":"2026-01-02T03:04:05.678Z","level":"info","msg":"domain started","domain":"web1","domid":3,"note":"two words"}'),
    '2026-01-02 03:04:05.678 info  domain started domain=web1 domid=3 note="two words"',
  );
  assert.equal(formatLogLine('{"time":"2026-01-02T03:04:05.678Z","kind":"qemu-start","pid":7}'), '2026-01-02 03:04:05.678 device qemu-start pid=7');
  for (const junk of ['not json', '[1,2]', 'null', '42', '{"a":', '\u0000\u0001']) assert.equal(formatLogLine(junk), junk);
});

test('SysRq keys and dump targets are checked', () => {
  assert.equal(checkSysrqKey('T'), 't');
  assert.equal(checkSysrqKey('7'), '7');
  for (const bad of ['a', '', 'tt', ' ', '!', 5, null, undefined, '__proto__', 'constructor']) {
    assert.throws(() => checkSysrqKey(bad), /not a magic SysRq key/);
  }
  assert.throws(() => checkDumpTarget('rel.core'), /absolute path/);
  assert.throws(() => checkDumpTarget('/no/such/dir/x.core'), /does not exist/);
  assert.throws(() => checkDumpTarget(os.tmpdir()), /not a regular file/);
  assert.throws(() => checkDumpTarget('/tmp/a\nb'), /control characters/);
  assert.equal(checkDumpTarget(path.join(os.tmpdir(), 'x.core')), path.join(os.tmpdir(), 'x.core'));
});

test('CPU % comes from two samples of the same QEMU process', () => {
  const sample = (t: number, cpu: number, pid: number | null = 10, written = 0): HostStats => ({
    time: new Date(t).toISOString(),
    timeMs: t,
    hostCpus: 2,
    domains: [{
      name: 'a', domid: pid ? 1 : null, state: pid ? 'running' : 'shutdown', pid, cpuSeconds: cpu, rssKiB: 1, memoryKiB: 1024, maxmemKiB: 1024, vcpus: 1, consoleBytes: 0,
      devices: [
        { kind: 'disk', device: 'xvda', readBytes: 0, writeBytes: written, readOps: 0, writeOps: 0 },
        { kind: 'disk', device: 'xvdb', readBytes: 0, writeBytes: written, readOps: 0, writeOps: 0 },
      ],
    }],
  });
  assert.equal(cpuPercent(undefined, sample(1000, 5), 'a'), 0);
  assert.equal(cpuPercent(sample(1000, 5), sample(3000, 6), 'a'), 50);
  assert.equal(cpuPercent(sample(1000, 5, 10), sample(3000, 1, 11), 'a'), 0, 'a new QEMU process starts over');
  assert.equal(cpuPercent(sample(1000, 5), sample(1000, 6), 'a'), 0, 'no time passed');
  assert.match(renderTop(sample(1000, 5), sample(3000, 6)), /^a\s+r-----\s+6\s+50\.0\s+1024\s+1024\s+1\s+1\s+0\.0\s+0\.0\s+0\.0\s+0\.0\s+1$/m);
  // 2 disks x 1 MiB written in 2 s: 1024 KiB/s; a backend restart (counters start over) is never negative.
  assert.equal(deviceRate(sample(1000, 5, 10, 0), sample(3000, 6, 10, 1 << 20), 'a', 'disk', 'writeBytes'), 1024);
  assert.equal(deviceRate(sample(1000, 5, 10, 1 << 20), sample(3000, 6, 10, 0), 'a', 'disk', 'writeBytes'), 0);
  assert.match(renderTop(sample(1000, 5, 10, 0), sample(3000, 6, 10, 1 << 20)), /^a\s+r-----.*\s+0\.0\s+1024\.0\s+0\.0\s+0\.0\s+1$/m);
});

test('the systemd unit keeps guests alive across a stop and restarts xvmd on failure', () => {
  const u = systemdUnit({ node: '/usr/bin/node', xvmd: '/opt/xvm/bin/xvmd.js', xvm: '/opt/xvm/bin/xvm.js', onStop: 'keep', shutdownTimeout: 60 });
  assert.match(u, /^ExecStart=\/usr\/bin\/node \/opt\/xvm\/bin\/xvmd.js$/m);
  assert.match(u, /^KillMode=process$/m);
  assert.match(u, /^Restart=on-failure$/m);
  assert.doesNotMatch(u, /ExecStop=/);
  assert.doesNotMatch(u, /XVM_HOME/);
  const s = systemdUnit({ node: '/usr/bin/node', xvmd: '/a b/xvmd.js', xvm: '/a b/xvm.js', home: '/srv/x', onStop: 'shutdown', shutdownTimeout: 30 });
  assert.match(s, /^ExecStart=\/usr\/bin\/node "\/a b\/xvmd.js"$/m, 'paths with spaces are quoted');
  assert.match(s, /^ExecStop=\/usr\/bin\/node "\/a b\/xvm.js" daemon stop --domains=shutdown --timeout 30$/m);
  assert.match(s, /^TimeoutStopSec=60$/m);
  assert.match(s, /^Environment=XVM_HOME=\/srv\/x$/m);
});
