// Network verbs: `xvm net create|list|info|delete|capture` and NIC hot plug
// (`network-attach`, `network-detach`, `network-list`). Each is one API call.
import fs from 'node:fs';
import type { Command } from 'commander';
import { action, client, CliError, keyValues, printJson, table } from './context.js';

function intOpt(name: string, v: string | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new CliError(`${name} must be an integer from ${min} to ${max}, not '${v}'`, 2);
  return n;
}

export function registerNetCommands(program: Command): void {
  const net = program.command('net').description('virtual networks: a switch per network, DHCP, packet capture');
  net
    .command('create')
    .description('create a network (default subnet: a free 10.0.X.0/24; the gateway is its first address)')
    .argument('<name>')
    .option('--subnet <cidr>', 'IPv4 subnet, e.g. 10.0.42.0/24')
    .option('--vlan <n>', 'native VLAN (DHCP and ports without vlan= are on it)')
    .option('--nat', 'masquerade the subnet out of the host (nftables; xvmd must run as root)')
    .option('--json', 'print JSON')
    .action(
      action(async (name: string, o: { subnet?: string; vlan?: string; nat?: boolean; json?: boolean }) => {
        const n = await client().createNetwork(name, { subnet: o.subnet, vlan: intOpt('--vlan', o.vlan, 1, 4094), ...(o.nat ? { nat: true } : {}) });
        if (o.json) return printJson(n);
        process.stdout.write(`network ${n.name} created: ${n.subnet}, gateway ${n.gateway}${n.vlan ? `, VLAN ${n.vlan}` : ''}${n.nat ? ', NAT out through the host' : ''}\n`);
      }),
    );
  net
    .command('list')
    .description('list networks')
    .option('--json', 'print JSON')
    .action(
      action(async (o: { json?: boolean }) => {
        const nets = await client().listNetworks();
        if (o.json) return printJson(nets);
        process.stdout.write(table(['NAME', 'SUBNET', 'GATEWAY', 'VLAN', 'SWITCH'], nets.map((n) => [n.name, n.subnet, n.gateway, n.vlan || '-', n.running ? 'running' : 'stopped'])));
      }),
    );
  net
    .command('info')
    .description('a network: ports and their counters, DHCP leases, forwarding table')
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(
      action(async (name: string, o: { json?: boolean }) => {
        const n = await client().networkInfo(name);
        if (o.json) return printJson(n);
        process.stdout.write(keyValues([['name', n.name], ['subnet', n.subnet], ['gateway', n.gateway], ['vlan', n.vlan || 'untagged'], ['switch', n.running ? `running (pid ${n.pid})` : 'stopped (starts with the first port)'], ['uplink', n.uplink ? `${n.uplink.name} (${n.uplink.mac}), host address ${n.gateway}` : n.running ? 'none (xvmd is not root)' : '-'], ['nat', n.nat ? (n.running ? (n.uplink?.nat ? 'on (masqueraded out of the host)' : 'configured, not in place (see the network log)') : 'on when the switch runs') : 'off']]));
        const ports = n.ports.filter((p) => p.id !== 'services' && p.id !== 'uplink');
        if (ports.length) {
          process.stdout.write('\nports:\n');
          process.stdout.write(
            table(
              ['PORT', 'MAC', 'VLAN', 'IP', 'LINK', 'RX', 'TX', 'DROPPED', 'SPOOFED'],
              ports.map((p) => [p.id, p.mac ?? '-', `${p.vlan || '-'}${p.trunk?.length ? ` +${p.trunk.join(':')}` : ''}`, p.ip ?? '-', p.connected ? 'up' : 'down', p.counters.rxFrames ?? 0, p.counters.txFrames ?? 0, (p.counters.txDropped ?? 0) + (p.counters.badSize ?? 0) + (p.counters.badVlan ?? 0), (p.counters.spoofedMac ?? 0) + (p.counters.spoofedIp ?? 0)]),
              [5, 6, 7, 8],
            ),
          );
        }
        if (n.leases.length) {
          process.stdout.write('\nleases:\n');
          process.stdout.write(table(['IP', 'MAC', 'HOSTNAME', 'EXPIRES'], n.leases.map((l) => [l.ip, l.mac, l.hostname ?? '-', l.expires ? new Date(l.expires).toISOString() : 'released'])));
        }
      }),
    );
  net
    .command('delete')
    .description('delete a network (refused while ports are attached)')
    .argument('<name>')
    .action(
      action(async (name: string) => {
        await client().deleteNetwork(name);
        process.stdout.write(`network ${name} deleted\n`);
      }),
    );
  net
    .command('capture')
    .description('capture frames to a pcap file (tshark / wireshark read it); TARGET is NET or DOMAIN/vifN')
    .argument('<target>')
    .requiredOption('-w, --write <file>', 'pcap file to write ("-" for stdout)')
    .option('--count <n>', 'stop after N frames')
    .option('--duration <s>', 'stop after S seconds')
    .action(
      action(async (target: string, o: { write: string; count?: string; duration?: string }) => {
        const count = intOpt('--count', o.count, 1, 10_000_000);
        let duration: number | undefined;
        if (o.duration !== undefined) {
          duration = Number(o.duration);
          if (!(duration > 0 && duration <= 86_400)) throw new CliError(`--duration must be a number of seconds from 0 to 86400, not '${o.duration}'`, 2);
        }
        const res = await client().capture(target, { count, duration });
        const toStdout = o.write === '-';
        const out = toStdout ? process.stdout : fs.createWriteStream(o.write);
        let bytes = 0;
        // Copy by hand: the file must be complete (flushed) whether the
        // capture ends by itself (--count, --duration) or by Ctrl-C.
        await new Promise<void>((resolve, reject) => {
          const stop = () => res.destroy();
          process.once('SIGINT', stop);
          out.on('error', reject);
          res.on('data', (c: Buffer) => {
            bytes += c.length;
            if (!out.write(c)) {
              res.pause();
              out.once('drain', () => res.resume());
            }
          });
          res.on('close', () => {
            process.off('SIGINT', stop);
            if (toStdout) resolve();
            else (out as fs.WriteStream).end(() => resolve());
          });
        });
        if (o.write !== '-') process.stderr.write(`capture of ${target} written to ${o.write} (${bytes} bytes)\n`);
      }),
    );

  program
    .command('network-attach')
    .description('hot-plug a NIC into a running domain (not kept in its configuration)')
    .argument('<domain>')
    .argument('[options...]', 'network=NAME mac=MAC vlan=N trunk=N:N… ip=A.B.C.D model=virtio|e1000|rtl8139 (like a vif string)')
    .option('--json', 'print JSON')
    .action(
      action(async (domain: string, opts: string[], o: { json?: boolean }) => {
        const nic: { network?: string; mac?: string; vlan?: number; trunk?: number[]; ip?: string; model?: 'virtio' | 'e1000' | 'rtl8139' } = {};
        for (const kv of opts.flatMap((x) => x.split(','))) {
          if (!kv) continue;
          const i = kv.indexOf('=');
          const k = i < 0 ? kv : kv.slice(0, i);
          const v = i < 0 ? '' : kv.slice(i + 1);
          if (k === 'network' || k === 'bridge') nic.network = v;
          else if (k === 'mac') nic.mac = v;
          else if (k === 'ip') nic.ip = v;
          else if (k === 'vlan') nic.vlan = intOpt('vlan', v, 1, 4094);
          else if (k === 'trunk') nic.trunk = v.split(':').map((x) => intOpt('trunk', x, 1, 4094)!);
          else if (k === 'model') nic.model = v as 'virtio';
          else throw new CliError(`unknown NIC option '${k}' (allowed: network=, mac=, vlan=, trunk=, ip=, model=)`, 2);
        }
        const r = await client().networkAttach(domain, nic);
        if (o.json) return printJson(r);
        process.stdout.write(`${r.vif} (${r.mac}) attached to ${domain} on network ${r.network}\n`);
      }),
    );
  program
    .command('network-detach')
    .description('hot-unplug a NIC from a running domain')
    .argument('<domain>')
    .argument('<vif>', 'vifN or N')
    .action(
      action(async (domain: string, vif: string) => {
        const r = await client().networkDetach(domain, vif);
        process.stdout.write(`${r.detached} detached from ${domain}\n`);
      }),
    );
  program
    .command('network-list')
    .description("a running domain's NICs")
    .argument('<domain>')
    .option('--json', 'print JSON')
    .action(
      action(async (domain: string, o: { json?: boolean }) => {
        const vifs = await client().listVifs(domain);
        if (o.json) return printJson(vifs);
        process.stdout.write(table(['VIF', 'NETWORK', 'MAC', 'VLAN', 'IP', 'MODEL', 'HOTPLUG'], vifs.map((v) => [v.vif, v.network, v.mac, v.vlan || '-', v.ip ?? '-', v.model, v.hotplug ? 'yes' : 'no'])));
      }),
    );
}
