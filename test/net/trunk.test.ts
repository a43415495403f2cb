// A trunk port from the domain configuration (vif = ['network=…,trunk=10']):
// the guest on it gets its untagged eth0 on the network's native VLAN (DHCP
// works there) and reaches a guest on access VLAN 10 through a tagged VLAN
// interface (eth0.10); the same address on the untagged interface reaches
// nobody on VLAN 10. The switch reports the port's trunk list, and
// malformed trunk= values are refused with a clear error.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { NetworkDetails } from '../../src/api/client.js';
import { TestHost, ConsoleSession, READY_BANNER, waitUntil } from '../helpers/xvm.js';
import { pidAlive } from '../../src/engine/process.js';

const host = new TestHost('xvmtr');
const SUBNET = '10.0.231.0/24';

async function boot(name: string, vif: string[]): Promise<ConsoleSession> {
  await host.client.createDomain({ config: { name, memory: 128, vif }, start: true });
  const con = new ConsoleSession(host.client, name, 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 120_000);
  return con;
}

before(async () => {
  await host.startDaemon();
  host.ok(['net', 'create', 'trk', '--subnet', SUBNET]);
});

after(async () => {
  const pids = host.switchPids();
  await host.cleanup();
  for (const pid of pids) if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
});

test('malformed trunk= values are refused with the key named', () => {
  for (const bad of ['trunk=', 'trunk=10,,', 'trunk=0', 'trunk=4095', 'trunk=a:b', 'trunk=10;20']) {
    const r = host.cli(['create', '--name', 'badtrunk', `vif=network=trk,${bad}`]);
    assert.notEqual(r.code, 0, `${bad} was accepted`);
    assert.match(r.stderr, /trunk/, `${bad}: ${r.stderr}`);
  }
});

test('a trunk port carries VLAN 10 tagged and the native VLAN untagged', { timeout: 400_000 }, async () => {
  const access = await boot('tr-access', ['network=trk,vlan=10']);
  const trunk = await boot('tr-trunk', ['network=trk,trunk=20:10:20']);
  try {
    // The configuration keeps one entry per VLAN, in order.
    const cfg = (await host.client.getDomain('tr-trunk')).config as { vif: { trunk?: number[]; raw: string }[] };
    assert.deepEqual(cfg.vif[0]!.trunk, [10, 20]);
    const det = JSON.parse(host.ok(['net', 'info', 'trk', '--json'])) as NetworkDetails;
    const port = det.ports.find((p) => p.id === 'tr-trunk/vif0');
    assert.deepEqual(port?.trunk, [10, 20], JSON.stringify(det.ports));
    assert.match(host.ok(['net', 'info', 'trk']), /tr-trunk\/vif0\s+\S+\s+-\s\+10:20/);

    // Untagged eth0 is on the native VLAN: DHCP answers there.
    await waitUntil(async () => /inet 10\.0\.231\./.test(await trunk.run('ip -4 addr show eth0', 30_000)), 120_000, 'a DHCP lease on the trunk guest');

    await access.run('killall udhcpc 2>/dev/null; ip addr flush dev eth0; ip addr add 10.0.231.201/24 dev eth0; ip link set eth0 up; echo A-OK', 30_000);
    const v = await trunk.run('vconfig add eth0 10 && ip addr add 10.0.231.202/24 dev eth0.10 && ip link set eth0.10 up && echo T-OK', 30_000);
    assert.match(v, /T-OK/, `the trunk guest made eth0.10: ${v}`);
    const ok = await trunk.run('ping -c 3 -W 2 -I eth0.10 10.0.231.201 >/dev/null 2>&1 && echo PING-OK || echo PING-FAIL', 60_000);
    assert.match(ok, /PING-OK/, 'tagged VLAN 10 reaches the access port on VLAN 10');

    // The same address untagged (native VLAN) reaches nobody on VLAN 10.
    await trunk.run('ip link set eth0.10 down; ip addr flush dev eth0; killall udhcpc 2>/dev/null; ip addr add 10.0.231.202/24 dev eth0; echo MOVED', 30_000);
    const no = await trunk.run('ping -c 2 -W 1 10.0.231.201 >/dev/null 2>&1 && echo PING-OK || echo PING-FAIL', 60_000);
    assert.match(no, /PING-FAIL/, 'untagged frames stay on the native VLAN');
  } finally {
    access.close();
    trunk.close();
  }
});
