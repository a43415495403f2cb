#!/usr/bin/env node
// The switch program: one process per network, hosting the switch, its
// DHCP server and every vhost-user-net port of the network.
//
//   node dist/src/net/main.js --name NET --subnet CIDR --gateway IP
//        [--vlan N] [--tap IFNAME [--nat]] --state DIR --run DIR
//
// Prints `XVM_NET_READY name=NET control=PATH` once the control socket
// listens; re-creates the ports listed in RUN/ports.json (after a crash,
// QEMU reconnects to them). SIGTERM / SIGINT close cleanly.
import { Command } from 'commander';
import { parseCidr, parseIp, inSubnet } from './frame.js';
import { NetworkHost } from './host.js';

async function main(): Promise<void> {
  const cmd = new Command()
    .name('xvm-switch')
    .description('virtual switch of one xvm network (vhost-user-net ports, DHCP)')
    .requiredOption('--name <name>', 'network name')
    .requiredOption('--subnet <cidr>', 'the network subnet, e.g. 10.0.99.0/24')
    .requiredOption('--gateway <ip>', 'the gateway address (DHCP server identifier and router)')
    .option('--vlan <n>', 'native VLAN of the network (DHCP lives on it; 0 = untagged)', '0')
    .option('--tap <name>', 'create this TAP interface as the host uplink, with the gateway address (root)')
    .option('--nat', 'masquerade the subnet out of the host (nftables; needs --tap)')
    .requiredOption('--state <dir>', 'persistent state directory (leases)')
    .requiredOption('--run <dir>', 'runtime directory (control socket, ports)')
    .parse(process.argv);
  const o = cmd.opts<{ name: string; subnet: string; gateway: string; vlan: string; tap?: string; nat?: boolean; state: string; run: string }>();
  const vlan = Number(o.vlan);
  if (!Number.isInteger(vlan) || vlan < 0 || vlan > 4094) throw new Error(`--vlan must be an integer from 0 to 4094`);
  const subnet = parseCidr(o.subnet);
  const gateway = parseIp(o.gateway);
  if (!inSubnet(gateway, subnet)) throw new Error(`gateway ${o.gateway} is outside ${o.subnet}`);
  const log = (m: string) => process.stderr.write(`xvm-switch[${process.pid}] ${o.name}: ${m}\n`);
  const host = new NetworkHost({ name: o.name, subnet, gateway, vlan, tap: o.tap, nat: o.nat === true, stateDir: o.state, runDir: o.run, log });
  host.listen();
  await host.restorePorts();
  process.stdout.write(`XVM_NET_READY name=${o.name} control=${host.controlPath}\n`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await host.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}

main().catch((e: unknown) => {
  process.stderr.write(`xvm-switch: ${(e as Error).message}\n`);
  process.exit(1);
});
