// What a switch port must carry across a restart of the switch process:
// its configuration. Ring positions are QEMU's (it replays them on
// reconnect, `-chardev …,reconnect=1`), and frames in flight on a network
// may be lost like on a wire. The switch host writes every port's state to
// one file and re-creates the ports from it when it starts again.
export const NET_PORT_STATE_VERSION = 1;

export interface NetPortState {
  /** "DOMAIN/vifN". */
  id: string;
  /** The vhost-user socket QEMU connects (and reconnects) to. */
  socket: string;
  mac: string;
  /** Access VLAN (0 = the network's native VLAN). */
  vlan: number;
  /** VLANs carried tagged besides the access one (a trunk port). */
  trunk?: number[];
  /** A configured (not leased) IPv4 address the port is locked to. */
  ip?: string;
  /** How QEMU connects: vhost-user (virtio-net, the default) or a length-prefixed frame stream (emulated NICs). */
  kind?: NetPortKind;
}

export type NetPortKind = 'vhost-user' | 'stream';

export function parsePortStates(json: unknown): NetPortState[] {
  const d = json as { version?: number; ports?: unknown };
  if (typeof d !== 'object' || d === null || d.version !== NET_PORT_STATE_VERSION || !Array.isArray(d.ports)) throw new Error('not a switch port state (version mismatch)');
  const out: NetPortState[] = [];
  for (const p of d.ports as Partial<NetPortState>[]) {
    if (typeof p.id !== 'string' || typeof p.socket !== 'string' || typeof p.mac !== 'string' || !Number.isInteger(p.vlan)) throw new Error('switch port state: bad port entry');
    if (p.kind !== undefined && p.kind !== 'vhost-user' && p.kind !== 'stream') throw new Error('switch port state: bad port kind');
    if (p.trunk !== undefined && (!Array.isArray(p.trunk) || p.trunk.length > 64 || !p.trunk.every((v) => Number.isInteger(v) && v >= 1 && v <= 4094))) throw new Error('switch port state: bad trunk VLAN list');
    out.push({ id: p.id, socket: p.socket, mac: p.mac, vlan: p.vlan as number, ...(p.trunk !== undefined && p.trunk.length > 0 ? { trunk: p.trunk } : {}), ...(typeof p.ip === 'string' ? { ip: p.ip } : {}), ...(p.kind === 'stream' ? { kind: 'stream' as const } : {}) });
  }
  return out;
}

export function savePortStates(ports: NetPortState[]): unknown {
  return { version: NET_PORT_STATE_VERSION, ports };
}
