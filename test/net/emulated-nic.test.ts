// An emulated NIC (model=e1000) on xvm's switch, with a real guest: Debian's
// installer (its kernel has the e1000 driver; the default guest's cloud
// kernel does not) boots with `vif = ["model=e1000"]`, its netcfg asks for
// DHCP, and what a user checks is there: a capture of the vif shows the
// DHCP exchange from the vif's MAC, the network's lease table has a lease
// for that MAC, and the port is a "stream" port that QEMU is connected to.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestHost, ConsoleSession, waitUntil } from '../helpers/xvm.js';
import { pidAlive } from '../../src/engine/process.js';

const DI = '/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64';
const MAC = '00:16:3e:4e:1c:01';
const host = new TestHost('xvme');

before(async () => host.startDaemon());
after(async () => {
  const pids = host.switchPids();
  await host.cleanup();
  for (const pid of pids) if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
});

/** Complete pcap records of a (possibly cut) capture: [source MAC, UDP destination port | null]. */
function pcapFrames(b: Buffer): { src: string; udpDst: number | null }[] {
  const out: { src: string; udpDst: number | null }[] = [];
  for (let o = 24; o + 16 <= b.length; ) {
    const n = b.readUInt32LE(o + 8);
    if (o + 16 + n > b.length) break;
    const f = b.subarray(o + 16, o + 16 + n);
    o += 16 + n;
    if (f.length < 14) continue;
    const src = [...f.subarray(6, 12)].map((x) => x.toString(16).padStart(2, '0')).join(':');
    let udpDst: number | null = null;
    if (f.readUInt16BE(12) === 0x0800 && f.length >= 14 + 20 + 8 && f[14 + 9] === 17) {
      const ihl = (f[14]! & 0x0f) * 4;
      if (f.length >= 14 + ihl + 8) udpDst = f.readUInt16BE(14 + ihl + 2);
    }
    out.push({ src, udpDst });
  }
  return out;
}

test('an e1000 vif is a port of the switch: Debian\'s installer gets a DHCP lease through it', { timeout: 420_000 }, async () => {
  const c = host.client;
  await c.createDomain({
    config: {
      name: 'e1', type: 'hvm', memory: 768, vnc: false,
      kernel: `${DI}/linux`, ramdisk: `${DI}/initrd.gz`,
      // Critical priority, preseeded locale/keyboard and the low-memory note
      // marked seen: the installer goes straight to netcfg's DHCP.
      extra: 'console=ttyS0 priority=critical lowmem/low=1 language=en country=US locale=en_US.UTF-8 keymap=us netcfg/choose_interface=auto netcfg/get_hostname=e1 netcfg/get_domain=test',
      vif: [`model=e1000,mac=${MAC},network=default`],
    },
    start: true,
  });
  const con = new ConsoleSession(c, 'e1', 1 << 20);
  await con.ready();

  // A capture of the vif's port, started before the guest's kernel has its NIC up.
  const cap = await c.capture('e1/vif0', { duration: 360 });
  const chunks: Buffer[] = [];
  cap.on('data', (d: Buffer) => chunks.push(d));

  const net = await c.networkInfo('default');
  const port = (net as unknown as { ports: { id: string; kind?: string; connected: boolean | null; mac: string | null }[] }).ports.find((p) => p.id === 'e1/vif0');
  assert.ok(port, 'the vif is a port of the default network');
  assert.equal(port.kind, 'stream');
  assert.equal(port.connected, true, 'QEMU\'s stream netdev is connected to the switch');

  let ip = '';
  try {
    await waitUntil(
      async () => {
        const l = (await c.networkInfo('default')).leases.find((x) => x.mac === MAC);
        ip = l?.ip ?? '';
        return l !== undefined;
      },
      360_000,
      `a DHCP lease for ${MAC} (console tail: see below)`,
    );
  } catch (e) {
    throw new Error(`${(e as Error).message}\n--- console tail ---\n${con.output.slice(-3000)}`);
  }
  assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);
  cap.destroy();
  const frames = pcapFrames(Buffer.concat(chunks));
  assert.ok(frames.some((f) => f.src === MAC && f.udpDst === 67), 'the capture shows a DHCP request from the vif\'s MAC');
  assert.ok(frames.some((f) => f.src !== MAC && f.udpDst === 68), 'the capture shows the switch\'s DHCP answer');
  const after = (await c.networkInfo('default')) as unknown as { ports: { id: string; counters: { rxFrames: number; txFrames: number; spoofedMac: number } }[] };
  const counters = after.ports.find((p) => p.id === 'e1/vif0')!.counters;
  assert.ok(counters.rxFrames > 0 && counters.txFrames > 0, `frames both ways on the port: ${JSON.stringify(counters)}`);
  assert.equal(counters.spoofedMac, 0);

  // Hot plug: an rtl8139 through the CLI (QMP netdev_add stream + device_add); QEMU connects to its new port.
  const r = host.cli(['network-attach', 'e1', 'network=default', 'model=rtl8139', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const att = JSON.parse(r.stdout) as { vif: string; model: string };
  assert.equal(att.vif, 'vif1');
  assert.equal(att.model, 'rtl8139');
  await waitUntil(
    async () => {
      const info = (await c.networkInfo('default')) as unknown as { ports: { id: string; kind?: string; connected: boolean | null }[] };
      const p = info.ports.find((x) => x.id === 'e1/vif1');
      return p?.kind === 'stream' && p.connected === true;
    },
    30_000,
    'the hot-plugged rtl8139 connected to its switch port',
  );
  assert.match(host.cli(['network-list', 'e1']).stdout, /vif1\s+default\s+\S+\s+-\s+-\s+rtl8139\s+yes/);
  con.close();
  host.cli(['destroy', 'e1']);
});
