// Guests on our virtual switch, through xvmd: two guests on the default
// network get DHCP addresses and ping each other and the gateway; a guest
// sending from a forged MAC reaches no one; VLANs separate two pairs; a
// capture of a ping is read back by tshark; the switch's counters show
// what happened.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { connect as netConnect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import type { NetworkDetails } from '../../src/api/client.js';
import { TestHost, ConsoleSession, READY_BANNER, XVM_BIN, waitUntil } from '../helpers/xvm.js';
import { pidAlive } from '../../src/engine/process.js';

const host = new TestHost('xvmn');

function cli(args: string[]): string {
  const r = host.cli(args);
  assert.equal(r.code, 0, `xvm ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

async function boot(name: string, vif: string[]): Promise<ConsoleSession> {
  const info = await host.client.createDomain({ config: { name, memory: 128, vif }, start: true });
  assert.equal(info.state, 'running');
  const con = new ConsoleSession(host.client, name, 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 120_000);
  return con;
}

/** The guest's IPv4 address on eth0 once udhcpc has one. */
async function dhcpAddress(con: ConsoleSession): Promise<string> {
  let ip = '';
  await waitUntil(
    async () => {
      const out = await con.run("ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p'", 30_000);
      ip = out.trim();
      return /^\d+\.\d+\.\d+\.\d+$/.test(ip);
    },
    120_000,
    'a DHCP address on eth0',
  );
  return ip;
}

before(async () => {
  await host.startDaemon();
});

after(async () => {
  const pids = host.switchPids();
  await host.cleanup();
  for (const pid of pids) if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A mutated JSON text as a value to send (a string when it no longer parses). */
function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The CLI in the background (a capture); `done` resolves with its exit code. */
function spawnAsync(h: TestHost, args: string[]): { kill: (sig: NodeJS.Signals) => void; done: Promise<number> } {
  const c = spawn(process.execPath, [XVM_BIN, ...args], { env: h.env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  c.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<number>((resolve) => c.on('exit', (code) => resolve(code ?? -1)));
  void done.then((code) => {
    if (code !== 0) process.stderr.write(`# xvm ${args.join(' ')} exited ${code}: ${err}\n`);
  });
  return { kill: (sig) => c.kill(sig), done };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-net-'));

function tshark(file: string, filter: string): string {
  const r = spawnSync('tshark', ['-r', file, '-Y', filter, '-T', 'fields', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'icmp.type'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `tshark -r ${file}: ${r.stderr}`);
  return r.stdout;
}

/** The store entries under `p` (path → value), or null when `p` does not exist. */
function storeEntries(p: string): Record<string, string> | null {
  const r = host.cli(['store', 'ls', p, '--json']);
  if (r.code !== 0) return null;
  return (JSON.parse(r.stdout) as { path: string; value: string }[]).reduce<Record<string, string>>((m, e) => ((m[e.path] = e.value), m), {});
}

/** Xen-style vif entries of one NIC: the frontend under the domain, the backend under dom0, naming each other. */
function assertVifEntries(domid: number, index: number, mac: string, network: string): void {
  const fe = `/local/domain/${domid}/device/vif/${index}`;
  const be = `/local/domain/0/backend/vif/${domid}/${index}`;
  const front = storeEntries(fe);
  const back = storeEntries(be);
  assert.ok(front && back, `${fe} and ${be} exist`);
  assert.equal(front[`${fe}/backend`], be);
  assert.equal(front[`${fe}/backend-id`], '0');
  assert.equal(front[`${fe}/mac`], mac);
  assert.equal(front[`${fe}/handle`], String(index));
  assert.equal(front[`${fe}/state`], '4');
  assert.equal(back[`${be}/frontend`], fe);
  assert.equal(back[`${be}/frontend-id`], String(domid));
  assert.equal(back[`${be}/mac`], mac);
  assert.equal(back[`${be}/bridge`], network);
  assert.equal(back[`${be}/type`], 'vhost-user-net');
  assert.equal(back[`${be}/online`], '1');
}

function portOf(info: NetworkDetails, id: string): NetworkDetails['ports'][number] {
  const p = info.ports.find((x) => x.id === id);
  assert.ok(p, `port ${id} in ${JSON.stringify(info.ports.map((x) => x.id))}`);
  return p;
}

test('two guests on the default network: DHCP, ping each other and the gateway; a capture read back by tshark; a forged MAC reaches no one; NIC hot unplug and plug', { timeout: 600_000 }, async () => {
  const a = await boot('na', ['network=default']);
  const b = await boot('nb', ['']);
  const ipA = await dhcpAddress(a);
  const ipB = await dhcpAddress(b);
  assert.notEqual(ipA, ipB);
  const nets = JSON.parse(cli(['net', 'list', '--json'])) as { name: string; subnet: string; gateway: string; running: boolean }[];
  const def = nets.find((n) => n.name === 'default');
  assert.ok(def && def.running, 'the default network was created on first use and its switch runs');
  const prefix = def.subnet.split('.').slice(0, 3).join('.') + '.';
  assert.ok(ipA.startsWith(prefix) && ipB.startsWith(prefix), `${ipA}, ${ipB} are in ${def.subnet}`);

  // Ping each other and the gateway, with a capture of the network running.
  const pcap = path.join(tmp, 'ping.pcap');
  const capture = spawnAsync(host, ['net', 'capture', 'default', '-w', pcap, '--duration', '60']);
  await waitUntil(async () => (await host.client.networkInfo('default')).ports.length > 0 && fs.existsSync(pcap) && fs.statSync(pcap).size >= 24, 30_000, 'the capture to start');
  const ping = await a.run(`ping -c 3 -W 5 ${ipB}`, 60_000);
  assert.match(ping, /3 packets transmitted, 3 (packets )?received/, ping);
  const gw = await b.run(`ping -c 2 -W 5 ${def.gateway}`, 60_000);
  assert.match(gw, /2 packets transmitted, 2 (packets )?received/, gw);
  // The NIC counters (the switch port's, from the guest's side) reach /v1/stats, xvm top and /metrics.
  const statsA = (await host.client.stats()).domains.find((d) => d.name === 'na');
  const vifA = statsA?.devices.find((c) => c.kind === 'vif' && c.device === 'vif0');
  assert.ok(vifA && vifA.txPackets! >= 3 && vifA.rxPackets! >= 3 && vifA.txBytes! > 0, `na's vif0 counters: ${JSON.stringify(vifA)}`);
  const prom = await host.client.metrics();
  assert.match(prom, /^xvm_nic_transmit_packets_total\{domain="na",device="vif0"\} [1-9]\d*$/m);
  capture.kill('SIGINT');
  await capture.done;
  const requests = tshark(pcap, `icmp.type == 8 && ip.src == ${ipA} && ip.dst == ${ipB}`).trim().split('\n').filter(Boolean);
  const replies = tshark(pcap, `icmp.type == 0 && ip.src == ${ipB} && ip.dst == ${ipA}`).trim().split('\n').filter(Boolean);
  assert.ok(requests.length >= 3 && replies.length >= 3, `tshark saw ${requests.length} echo requests and ${replies.length} replies`);

  // Per-port capture of one NIC (DOMAIN/vifN), bounded by a frame count.
  const one = path.join(tmp, 'nb.pcap');
  const cap2 = spawnAsync(host, ['net', 'capture', 'nb/vif0', '-w', one, '--count', '6']);
  await waitUntil(() => fs.existsSync(one) && fs.statSync(one).size >= 24, 30_000, 'the port capture to start');
  await a.run(`ping -c 4 -W 5 ${ipB}`, 60_000);
  assert.equal(await cap2.done, 0, 'the capture ends by itself after --count frames');
  // Count frame numbers: the ip fields of an ARP frame are empty, and a trimmed empty line would be lost.
  const frames = spawnSync('tshark', ['-r', one, '-T', 'fields', '-e', 'frame.number'], { encoding: 'utf8' });
  assert.equal(frames.status, 0, frames.stderr);
  assert.equal(frames.stdout.split('\n').filter((l) => /^\d+$/.test(l.trim())).length, 6, 'exactly --count frames');
  const icmp = tshark(one, `icmp && (ip.src == ${ipB} || ip.dst == ${ipB})`).trim().split('\n').filter(Boolean);
  assert.ok(icmp.length >= 2, `the port capture holds nb's ICMP (${icmp.length} frames)`);

  // Leases and counters through the CLI.
  let info = JSON.parse(cli(['net', 'info', 'default', '--json'])) as NetworkDetails;
  assert.deepEqual(info.leases.map((l) => l.ip).sort(), [ipA, ipB].sort());
  assert.equal(portOf(info, 'na/vif0').ip, ipA, 'the lease locked the port to its address');
  assert.match(cli(['net', 'info', 'default']), /na\/vif0\s+00:16:3e:/);

  // A forged source MAC reaches no one: the switch drops and counts it.
  const spoofedBefore = portOf(info, 'nb/vif0').counters.spoofedMac!;
  const forged = await b.run(`ip link set eth0 address 00:16:3e:0f:0f:0f && ping -c 3 -W 2 ${ipA}; ping -c 1 -W 2 ${def.gateway}`, 60_000);
  assert.match(forged, /3 packets transmitted, 0 (packets )?received/, forged);
  info = await host.client.networkInfo('default');
  assert.ok(portOf(info, 'nb/vif0').counters.spoofedMac! > spoofedBefore, 'the forged frames were counted');
  assert.equal(info.fdb.some((e) => e.mac === '00:16:3e:0f:0f:0f'), false, 'the forged MAC was not learned');
  // The switch is unaffected: with its own MAC back, nb reaches na again.
  const mac = portOf(info, 'nb/vif0').mac!;
  const back = await b.run(`ip link set eth0 address ${mac} && ping -c 2 -W 5 ${ipA}`, 60_000);
  assert.match(back, /2 packets transmitted, 2 (packets )?received/, back);
  // A forged source IP is refused too (the port is locked to its lease).
  const ipSpoof = await b.run(`ip addr add ${prefix}250/24 dev eth0 && ping -c 2 -W 2 -I ${prefix}250 ${ipA}; ip addr del ${prefix}250/24 dev eth0`, 60_000);
  assert.match(ipSpoof, /2 packets transmitted, 0 (packets )?received/, ipSpoof);
  assert.ok(portOf(await host.client.networkInfo('default'), 'nb/vif0').counters.spoofedIp! > 0);

  // xenstore: each NIC has its frontend/backend vif entries while it is plugged.
  const domA = (await host.client.getDomain('na')).domid!;
  const domB = (await host.client.getDomain('nb')).domid!;
  assert.ok(domA > 0 && domB > 0 && domA !== domB);
  assertVifEntries(domA, 0, portOf(info, 'na/vif0').mac!, 'default');
  assertVifEntries(domB, 0, mac, 'default');

  // Hot unplug and plug while the guest runs.
  assert.match(cli(['network-detach', 'na', 'vif0']), /vif0 detached from na/);
  assert.equal(storeEntries(`/local/domain/${domA}/device/vif/0`), null, 'the frontend entry goes with the NIC');
  assert.equal(storeEntries(`/local/domain/0/backend/vif/${domA}/0`), null, 'the backend entry goes with the NIC');
  await waitUntil(async () => !(await a.run('ls /sys/class/net')).includes('eth0'), 60_000, 'eth0 to leave the guest');
  assert.equal((await host.client.networkInfo('default')).ports.some((p) => p.id === 'na/vif0'), false);
  const att = JSON.parse(cli(['network-attach', 'na', 'network=default', '--json'])) as { vif: string; mac: string };
  assert.equal(att.vif, 'vif0');
  assertVifEntries(domA, 0, att.mac, 'default');
  await waitUntil(async () => (await a.run('ls /sys/class/net')).includes('eth0'), 60_000, 'eth0 to come back');
  // The guest's hotplug helper brings the new eth0 up and asks DHCP by itself.
  await dhcpAddress(a);
  const re = await a.run(`ping -c 2 -W 5 ${ipB}`, 90_000);
  assert.match(re, /2 packets transmitted, 2 (packets )?received/, re);
  assert.match(cli(['network-list', 'na']), /vif0\s+default\s+00:16:3e:/);

  a.close();
  b.close();
  await host.client.destroy('na');
  await host.client.destroy('nb');
  for (const d of [domA, domB]) {
    assert.equal(storeEntries(`/local/domain/${d}/device/vif`), null, `domain ${d}'s vif entries are gone after destroy`);
    assert.equal(storeEntries(`/local/domain/0/backend/vif/${d}`), null, `domain ${d}'s vif backend entries are gone after destroy`);
  }
  await waitUntil(async () => !(await host.client.listNetworks()).find((n) => n.name === 'default')!.running, 30_000, 'the switch to stop with its last port');
});

test('the host uplink: a TAP with the gateway address; host and guest talk IP both ways', { timeout: 300_000, skip: process.getuid?.() !== 0 ? 'the TAP uplink needs root' : false }, async () => {
  const g = await boot('nh', ['network=default']);
  const ip = await dhcpAddress(g);
  const info = await host.client.networkInfo('default');
  assert.ok(info.uplink, 'the network has an uplink');
  assert.match(info.uplink.name, /^xvm[0-9a-f]{8}$/);
  const addr = spawnSync('ip', ['-4', 'addr', 'show', 'dev', info.uplink.name], { encoding: 'utf8' }).stdout;
  assert.match(addr, new RegExp(`inet ${info.gateway.replace(/\./g, '\\.')}/24`), addr);
  // Guest → host: the guest fetches from a server on the host's gateway address.
  const seen: string[] = [];
  const srv = http.createServer((req, res) => {
    seen.push(req.socket.remoteAddress ?? '');
    res.end('hello-from-host\n');
  });
  await new Promise<void>((r) => srv.listen(0, info.gateway, () => r()));
  const port = (srv.address() as { port: number }).port;
  try {
    const got = await g.run(`ping -c 2 -W 5 ${info.gateway} >/dev/null && echo ping-ok; wget -q -O - http://${info.gateway}:${port}/`, 60_000);
    assert.match(got, /ping-ok/);
    assert.match(got, /hello-from-host/);
    assert.deepEqual(seen, [ip], 'the host saw the guest by its leased address');
  } finally {
    srv.close();
  }
  // Host → guest: connect to a listener in the guest.
  await g.run('echo hello-from-guest > /tmp/m; (nc -l -p 7001 < /tmp/m >/dev/null 2>&1 &)', 30_000);
  let text = '';
  await waitUntil(
    async () => {
      text = await new Promise<string>((resolve) => {
        const c = netConnect({ host: ip, port: 7001 });
        let t = '';
        c.setTimeout(5000, () => c.destroy());
        c.on('data', (d: Buffer) => (t += d.toString()));
        c.on('close', () => resolve(t));
        c.on('error', () => resolve(''));
      });
      return text.includes('hello-from-guest');
    },
    60_000,
    'a TCP connection from the host to the guest',
  );
  g.close();
  await host.client.destroy('nh');
  await waitUntil(() => spawnSync('ip', ['link', 'show', info.uplink!.name]).status !== 0, 30_000, 'the TAP to go with the switch');
});

test('NAT: a guest reaches a server in a namespace through the host, seen from the host\'s address; the rules go with the network', { timeout: 300_000, skip: process.getuid?.() !== 0 ? 'NAT needs root' : false }, async () => {
  // A namespace behind the host, with no route back to the guests' subnet:
  // its server can only answer a guest whose source address was rewritten.
  const id = String(process.pid % 100000);
  const ns = `xvmnat${id}`;
  const [vh, vn] = [`xvn${id}h`, `xvn${id}n`];
  const sh = (args: string[]) => {
    const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8' });
    assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
  };
  sh(['ip', 'netns', 'add', ns]);
  let server: ReturnType<typeof spawn> | null = null;
  let tap = '';
  try {
    sh(['ip', 'link', 'add', vh, 'type', 'veth', 'peer', 'name', vn]);
    sh(['ip', 'link', 'set', vn, 'netns', ns]);
    sh(['ip', 'addr', 'add', '10.251.77.1/24', 'dev', vh]);
    sh(['ip', 'link', 'set', vh, 'up']);
    sh(['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', '10.251.77.2/24', 'dev', vn]);
    sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', vn, 'up']);
    sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    server = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', "require('http').createServer((q,s)=>s.end('seen-from '+q.socket.remoteAddress+'\\n')).listen(7080,'10.251.77.2',()=>console.log('LISTENING'))"], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      server!.stdout!.on('data', (d: Buffer) => d.toString().includes('LISTENING') && resolve());
      server!.once('exit', (c) => reject(new Error(`the namespace server exited (${c})`)));
    });

    const created = JSON.parse(cli(['net', 'create', 'natnet', '--subnet', '10.0.231.0/24', '--nat', '--json'])) as { nat?: boolean; tap: string };
    assert.equal(created.nat, true);
    tap = created.tap;
    const g = await boot('nat1', ['network=natnet']);
    await dhcpAddress(g);
    const info = await host.client.networkInfo('natnet');
    assert.equal(info.uplink?.nat, true, `NAT in place: ${JSON.stringify(info.uplink)}`);
    const rules = spawnSync('nft', ['list', 'table', 'ip', tap], { encoding: 'utf8' });
    assert.equal(rules.status, 0, rules.stderr);
    assert.match(rules.stdout, /ip saddr 10\.0\.231\.0\/24 .*masquerade/);
    assert.match(cli(['net', 'info', 'natnet']), /nat:\s+on/);
    const got = await g.run('wget -q -O - http://10.251.77.2:7080/', 60_000);
    assert.match(got, /seen-from 10\.251\.77\.1\b/, `the server saw the host's address, not the guest's: ${got}`);
    g.close();
    await host.client.destroy('nat1');
    await waitUntil(async () => !(await host.client.listNetworks()).find((n) => n.name === 'natnet')!.running, 30_000, 'the switch to stop');
    assert.notEqual(spawnSync('nft', ['list', 'table', 'ip', tap]).status, 0, 'the NAT table went with the switch');
    cli(['net', 'delete', 'natnet']);
    // Without root (or with the uplink off) --nat is refused with a reason; here only the bad input case.
    const r = host.cli(['net', 'create', 'natbad', '--nat', '--subnet', 'nonsense']);
    assert.notEqual(r.code, 0);
  } finally {
    server?.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', ns]);
    spawnSync('ip', ['link', 'del', vh]);
    if (tap) spawnSync('nft', ['delete', 'table', 'ip', tap]);
  }
});

test('a killed switch comes back and the guests talk again; an xvmd restart leaves the network alone', { timeout: 400_000 }, async () => {
  const a = await boot('ka', ['network=default']);
  const b = await boot('kb', ['network=default']);
  const ipA = await dhcpAddress(a);
  const ipB = await dhcpAddress(b);
  const pid0 = host.switchPids()[0]!;
  assert.ok(pid0 && pidAlive(pid0));
  process.kill(pid0, 'SIGKILL');
  await waitUntil(() => host.switchPids().some((p) => p !== pid0 && pidAlive(p)), 30_000, 'xvmd to restart the switch');
  // QEMU reconnects (reconnect=1); the ports come back from ports.json.
  await waitUntil(async () => /2 packets transmitted, [12] (packets )?received/.test(await a.run(`ping -c 2 -W 2 ${ipB}`, 30_000)), 120_000, 'ka to reach kb through the restarted switch');
  let info = await host.client.networkInfo('default');
  assert.ok(info.ports.find((p) => p.id === 'ka/vif0')?.connected, 'ka reconnected');
  assert.equal(info.ports.find((p) => p.id === 'ka/vif0')?.ip, ipA, 'the restarted switch locked the port to its lease again');
  // xvmd dies and comes back: the switch and the traffic are untouched.
  const pid1 = host.switchPids()[0]!;
  // A ping runs in the guest across the xvmd crash (the console itself goes through xvmd).
  await b.run(`(ping -c 10 -W 5 ${ipA} > /tmp/p.log 2>&1 &)`, 30_000);
  await host.stopDaemon(true);
  await new Promise((r) => setTimeout(r, 3000));
  await host.startDaemon();
  b.close();
  const b2 = new ConsoleSession(host.client, 'kb');
  await b2.ready();
  await waitUntil(async () => (await b2.run('cat /tmp/p.log', 30_000)).includes('packets transmitted'), 120_000, 'the ping across the xvmd restart to finish');
  assert.match(await b2.run('cat /tmp/p.log', 30_000), /10 packets transmitted, 10 (packets )?received/, 'traffic flowed while xvmd was down');
  b2.close();
  info = await host.client.networkInfo('default');
  assert.equal(info.pid, pid1, 'the same switch, re-adopted');
  assert.deepEqual(info.ports.filter((p) => p.id.endsWith('/vif0')).map((p) => p.id).sort(), ['ka/vif0', 'kb/vif0']);
  a.close();
  await host.client.destroy('ka');
  await host.client.destroy('kb');
  await waitUntil(async () => !(await host.client.listNetworks()).find((n) => n.name === 'default')!.running, 30_000, 'the switch to stop with its last port');
});

test('VLANs separate guests on one network; net create / list / info / delete', { timeout: 600_000 }, async () => {
  assert.match(cli(['net', 'create', 'vl', '--subnet', '10.0.151.0/24']), /network vl created: 10\.0\.151\.0\/24, gateway 10\.0\.151\.1/);
  assert.match(cli(['net', 'list']), /vl\s+10\.0\.151\.0\/24\s+10\.0\.151\.1/);
  const bad = host.cli(['net', 'create', 'vl2', '--subnet', '10.0.151.128/25']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /overlaps network 'vl'/);
  const x = await boot('v10a', ['network=vl,vlan=10']);
  const y = await boot('v10b', ['network=vl,vlan=10']);
  const z = await boot('v20', ['network=vl,vlan=20']);
  await x.run('ip addr add 10.0.151.11/24 dev eth0', 30_000);
  await y.run('ip addr add 10.0.151.12/24 dev eth0', 30_000);
  await z.run('ip addr add 10.0.151.13/24 dev eth0', 30_000);
  const same = await x.run('ping -c 3 -W 5 10.0.151.12', 60_000);
  assert.match(same, /3 packets transmitted, 3 (packets )?received/, same);
  const across = await z.run('ping -c 3 -W 2 10.0.151.11; ping -c 2 -W 2 10.0.151.12', 60_000);
  assert.match(across, /3 packets transmitted, 0 (packets )?received/, across);
  const info = await host.client.networkInfo('vl');
  assert.equal(portOf(info, 'v20/vif0').vlan, 20);
  // Nothing from VLAN 10 (not even its broadcasts) reached the VLAN 20 port.
  const fromX = info.fdb.filter((e) => e.vlan === 20 && e.port !== 'v20/vif0');
  assert.deepEqual(fromX, []);
  const del = host.cli(['net', 'delete', 'vl']);
  assert.notEqual(del.code, 0);
  assert.match(del.stderr, /in use by/);
  for (const [c, n] of [[x, 'v10a'], [y, 'v10b'], [z, 'v20']] as const) {
    c.close();
    await host.client.destroy(n);
  }
  await waitUntil(async () => host.cli(['net', 'delete', 'vl']).code === 0, 30_000, 'net delete to succeed once the ports are gone');
  assert.doesNotMatch(cli(['net', 'list']), /\bvl\b/);
});

test('bad network input gets clear errors', async () => {
  const cases: [string[], RegExp][] = [
    [['net', 'create', 'bad name'], /bad network name/],
    [['net', 'create', 'x1', '--subnet', '10.0.0.1/24'], /host bits are set/],
    [['net', 'create', 'x2', '--subnet', '300.0.0.0/24'], /bad IPv4 address|bad subnet/],
    [['net', 'info', 'nope'], /no network 'nope'/],
    [['net', 'capture', 'nope', '-w', path.join(tmp, 'x.pcap')], /no network 'nope'/],
  ];
  for (const [args, re] of cases) {
    const r = host.cli(args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, re, args.join(' '));
  }
  // Malformed bodies and queries on every network route: 4xx with a message, never a crash.
  let seed = 777;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  const templates = [JSON.stringify({ name: 'fz', subnet: '10.0.160.0/24', vlan: 5 }), JSON.stringify({ network: 'default', mac: '00:16:3e:00:00:01', vlan: 3, ip: '10.0.99.9' })];
  for (let i = 0; i < 200; i++) {
    const t = templates[i % 2]!.split('');
    for (let k = 0; k < 1 + rand(4); k++) t[rand(t.length)] = String.fromCharCode(32 + rand(95));
    const route = i % 2 === 0 ? '/v1/networks' : '/v1/domains/nosuch/vifs';
    const r = await host.client.rawRequest('POST', route, JSON.parse(JSON.stringify(safeJson(t.join('')))));
    assert.ok(r.status < 500 || r.status === 503, `POST ${route} ${t.join('')} → ${r.status} ${r.body}`);
  }
  for (const q of ['count=-1', 'count=abc', 'duration=1e9', 'port=%00', 'bogus=1']) {
    const r = await host.client.rawRequest('GET', `/v1/networks/default/capture?${q}`);
    assert.ok(r.status >= 400 && r.status < 500, `capture?${q} → ${r.status}`);
  }
  for (const n of await host.client.listNetworks()) if (n.name !== 'default') await host.client.deleteNetwork(n.name);
  await assert.rejects(host.client.createDomain({ config: { name: 'e1', memory: 128, vif: ['network=nowhere'] }, start: true }), /no network 'nowhere'/);
  await assert.rejects(host.client.createDomain({ config: { name: 'e2', memory: 128, vif: ['model=e1000,network=nowhere'] }, start: true }), /no network 'nowhere'/);
});
