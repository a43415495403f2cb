// NAT out through the host for a network with `nat` (xvm net create --nat):
// the network's subnet is masqueraded when it leaves the host by any
// interface other than the network's own TAP (so out of the host's default
// route, or any other route), with Debian's nftables. One table per
// network, named after its TAP (unique per state root and network), so
// removing it removes exactly what was added. IPv4 forwarding is turned on
// (and left on: other things on the host may rely on it).
//
//   table ip <tap> {
//     chain postrouting { type nat hook postrouting priority srcnat; … masquerade }
//     chain forward     { type filter hook forward priority filter; accept to and from the TAP }
//   }
//
// Runs as root inside the switch process (which owns the TAP): applied when
// the uplink comes up, removed when the switch stops; xvmd removes it too
// when a network is deleted (a switch killed with SIGKILL cannot).
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { formatIp, type Subnet } from './frame.js';

const NAME_RE = /^[A-Za-z0-9_-]{1,15}$/;

function nft(script: string): void {
  execFileSync('nft', ['-f', '-'], { input: script, stdio: ['pipe', 'ignore', 'pipe'], timeout: 10_000 });
}

/** The nftables ruleset of a network (exported for tests and docs). */
export function natRuleset(tap: string, subnet: Subnet): string {
  if (!NAME_RE.test(tap)) throw new Error(`bad interface name ${JSON.stringify(tap)}`);
  const cidr = `${formatIp(subnet.net)}/${subnet.prefix}`;
  return [
    `table ip ${tap} {`,
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    ip saddr ${cidr} ip daddr != ${cidr} oifname != "${tap}" masquerade`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    `    iifname "${tap}" ip saddr ${cidr} accept`,
    `    oifname "${tap}" ct state established,related accept`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** Masquerade `subnet` out of the host (idempotent: a previous table of this name is replaced). */
export function natUp(tap: string, subnet: Subnet): void {
  const rules = natRuleset(tap, subnet);
  nft(`add table ip ${tap}\ndelete table ip ${tap}\n${rules}`);
  fs.writeFileSync('/proc/sys/net/ipv4/ip_forward', '1\n');
}

/** Remove the network's NAT table (nothing to do when it is not there). */
export function natDown(tap: string): void {
  if (!NAME_RE.test(tap)) return;
  try {
    nft(`add table ip ${tap}\ndelete table ip ${tap}\n`);
  } catch {
    /* no nft, or nothing to remove */
  }
}

/** Whether the network's NAT table is in place. */
export function natActive(tap: string): boolean {
  if (!NAME_RE.test(tap)) return false;
  try {
    execFileSync('nft', ['list', 'table', 'ip', tap], { stdio: ['ignore', 'ignore', 'ignore'], timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}
