// The CLI as a user runs it, and the clear errors every kind of bad input gets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { TestHost } from '../helpers/xvm.js';

const host = new TestHost();
after(async () => host.cleanup());

function raw(method: string, url: string, body?: string | Buffer, contentType = 'application/json'): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: host.client.socketPath, method, path: url, headers: body !== undefined ? { 'content-type': contentType } : {} }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = text;
        }
        resolve({ status: res.statusCode!, json });
      });
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

before(async () => {
  // The user's way: the CLI starts the daemon and returns once the API answers.
  const r = host.cli(['daemon', 'start']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /xvmd started/);
});

test('the CLI drives a guest: create, list, info, console from a pipe, log, shutdown, undefine', { timeout: 240_000 }, async () => {
  let r = host.cli(['create', '--name', 'cli1', '--memory', '192', '--wait-ready']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Started domain cli1 \(id=\d+\)/);

  r = host.cli(['list']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines[0]!, /^Name\s+ID\s+Mem\s+VCPUs\s+State\s+Time\(s\)$/);
  assert.match(lines[1]!, /^Domain-0\s+0\s+\d+\s+\d+\s+r-----/);
  assert.match(r.stdout, /^cli1\s+\d+\s+192\s+1\s+r-----\s+[\d.]+$/m);

  r = host.cli(['list', '--json']);
  const list = JSON.parse(r.stdout);
  assert.equal(list[0].name, 'cli1');
  assert.equal(list[0].state, 'running');

  r = host.cli(['info', 'cli1', '--json']);
  assert.equal(JSON.parse(r.stdout).memory, 192);
  r = host.cli(['info', 'cli1']);
  assert.match(r.stdout, /State:\s+running/);
  assert.match(r.stdout, /Accelerator:\s+(tcg|kvm) \(auto: /);

  r = host.cli(['info', '--json']);
  const hostInfo = JSON.parse(r.stdout);
  assert.ok(['tcg', 'kvm'].includes(hostInfo.accel.accel));
  assert.ok(hostInfo.accel.reason.length > 10, 'xvm info says why it chose the accelerator');

  // stdin not a terminal: its bytes go to the guest, then the CLI detaches.
  r = host.cli(['console', 'cli1', '--linger', '2000'], { input: 'echo $((6*7))\n' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^42\r?$/m);

  r = host.cli(['log', 'cli1']);
  assert.match(r.stdout, /XVM_GUEST_READY name=cli1/);

  r = host.cli(['shutdown', 'cli1', '--wait']);
  assert.equal(r.code, 0, r.stderr);
  r = host.cli(['list', 'cli1', '--json']);
  assert.equal(JSON.parse(r.stdout)[0].state, 'shutdown');
  r = host.cli(['undefine', 'cli1']);
  assert.equal(r.code, 0, r.stderr);
});

test('unknown names, usage errors and malformed config files fail cleanly with the right exit codes', () => {
  let r = host.cli(['info', 'no-such-domain']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no domain named 'no-such-domain'/);
  for (const verb of ['start', 'shutdown', 'destroy', 'pause', 'unpause', 'reboot', 'undefine', 'log']) {
    r = host.cli([verb, 'ghost']);
    assert.equal(r.code, 1, `${verb}: ${r.stderr}`);
    assert.match(r.stderr, /ghost/, verb);
  }
  r = host.cli(['console', 'ghost']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no domain named 'ghost'/);

  r = host.cli(['frobnicate']);
  assert.equal(r.code, 2);
  r = host.cli(['create']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /needs a name/);
  r = host.cli(['shutdown']);
  assert.equal(r.code, 2);

  const cfg = path.join(host.home, 'bad.cfg');
  fs.writeFileSync(cfg, 'name = "bad"\nmemroy = 256\n');
  r = host.cli(['create', cfg]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /bad\.cfg:2: memroy: .*memory/);
  fs.writeFileSync(cfg, 'name = "bad"\nvcpus = "two"\non_crash = "explode"\n');
  r = host.cli(['create', cfg]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /bad\.cfg:2: vcpus/);
  assert.match(r.stderr, /bad\.cfg:3: on_crash: .*destroy/);
  r = host.cli(['create', path.join(host.home, 'missing.cfg')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /missing\.cfg: no such file/);
  assert.equal(host.cli(['list', '--json']).stdout.includes('"bad"'), false, 'nothing was defined');
});

test('malformed API requests get clear 4xx errors, and a fuzzed API keeps serving', { timeout: 60_000 }, async () => {
  let r = await raw('POST', '/v1/domains', '{"config": {"name": ');
  assert.equal(r.status, 400);
  assert.equal(r.json.error.code, 'invalid');
  assert.match(r.json.error.message, /JSON/);

  r = await raw('POST', '/v1/domains', JSON.stringify({ config: { name: 'x' }, colour: 'blue', start: false }));
  assert.equal(r.status, 400);
  assert.match(r.json.error.message, /colour/);

  r = await raw('POST', '/v1/domains', JSON.stringify({ config: { name: 'x', memory: 'lots' }, start: false }));
  assert.equal(r.status, 400);
  assert.match(r.json.error.message, /memory/);

  r = await raw('POST', '/v1/domains', JSON.stringify({ configText: 'name = "t"\nvcpus = 0\n', file: 'web.cfg', start: false }));
  assert.equal(r.status, 400);
  assert.match(r.json.error.message, /web\.cfg:2: vcpus/);

  r = await raw('GET', '/v1/domains/nope');
  assert.equal(r.status, 404);
  assert.match(r.json.error.message, /'nope'/);
  r = await raw('GET', '/v1/domains/bad%20name!');
  assert.equal(r.status, 400);
  r = await raw('POST', '/v1/domains/nope/shutdown', JSON.stringify({ wait: 'yes' }));
  assert.equal(r.status, 400);
  r = await raw('GET', '/v1/nothing-here');
  assert.equal(r.status, 404);
  r = await raw('GET', '/v1/openapi.json');
  assert.equal(r.status, 200);
  assert.equal(r.json.openapi, '3.1.0');
  assert.ok(r.json.paths['/v1/domains/{name}/shutdown'].post);

  // Fuzz: mutated bodies and random bytes at every POST route.
  let seed = 12345;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  const templates = [
    JSON.stringify({ config: { name: 'fz', memory: 128, vcpus: 1, on_crash: 'destroy' }, start: false }),
    JSON.stringify({ configText: 'name = "fz2"\nmemory = 128\n', file: 'f.cfg', start: false }),
    JSON.stringify({ wait: true, timeout: 5 }),
  ];
  const routes = ['/v1/domains', '/v1/domains/fz/start', '/v1/domains/fz/shutdown', '/v1/domains/fz/reboot', '/v1/domains/fz/pause', '/v1/domains/%00/destroy'];
  for (let i = 0; i < 300; i++) {
    let body: string | Buffer;
    if (i % 5 === 0) {
      body = Buffer.from(Array.from({ length: rand(200) }, () => rand(256)));
    } else {
      const t = templates[rand(templates.length)]!.split('');
      for (let k = 0; k < 1 + rand(4); k++) {
        const op = rand(3);
        const at = rand(t.length);
        if (op === 0) t.splice(at, 1);
        else if (op === 1) t.splice(at, 0, String.fromCharCode(rand(128)));
        else t[at] = String.fromCharCode(32 + rand(95));
      }
      body = t.join('').replace(/"start":\s*true/, '"start":false');
    }
    const route = routes[rand(routes.length)]!;
    const res = await raw('POST', route, body);
    assert.ok(res.status < 500, `${route} answered ${res.status} to ${JSON.stringify(body.toString())}: ${JSON.stringify(res.json)}`);
    if (res.status >= 400) assert.equal(typeof res.json.error?.message, 'string');
  }
  // Still alive and sane; clean whatever the fuzzer managed to define.
  for (const d of await host.client.listDomains()) {
    assert.notEqual(d.state, 'running');
    await host.client.undefineDomain(d.name);
  }
  assert.equal((await raw('GET', '/v1/host')).status, 200);
});

test('xvm daemon status and stop', () => {
  let r = host.cli(['daemon', 'status', '--json']);
  assert.equal(r.code, 0);
  assert.equal(JSON.parse(r.stdout).running, true);
  r = host.cli(['daemon', 'stop']);
  assert.equal(r.code, 0, r.stderr);
  r = host.cli(['daemon', 'status']);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /not running/);
  r = host.cli(['list']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /xvmd is not running/);
});
