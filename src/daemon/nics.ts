// The vif provider: serves a domain's `vif = [...]` entries as ports of our
// virtual switch (one switch process per network, see networks.ts). Each
// vif N gets a vhost-user-net socket in the domain's runtime folder
// (net-vifN.sock) that the network's switch listens on, and QEMU a
// virtio-net-pci device on it:
//
//   -chardev socket,id=chr-vifN,path=…/net-vifN.sock,reconnect=1
//   -netdev vhost-user,id=net-vifN,chardev=chr-vifN
//   -device virtio-net-pci,netdev=net-vifN,mac=…,id=vifN
//
// An emulated NIC (model=e1000|rtl8139, for HVM guests without virtio
// drivers) is a stream port of the same switch (src/net/stream-port.ts):
//
//   -netdev stream,id=net-vifN,server=off,addr.type=unix,addr.path=…/net-vifN.sock
//   -device e1000,netdev=net-vifN,mac=…,id=vifN
//
// A vif without mac= gets one in Xen's 00:16:3e prefix derived from the
// domain's UUID and the vif's index: the same every start, as long as the
// domain keeps its UUID. What each vif is attached to is written to
// vif-N.json in the runtime folder so release() and adopt() find it after
// an xvmd restart.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { XvmError } from '../common/errors.js';
import type { VifSpec } from '../config/index.js';
import type { NetPortState } from '../devices/net/persist.js';
import type { PortCounters } from '../net/switch.js';
import type { DeviceContext, DeviceCounters, DeviceProvider } from './domains.js';
import { checkVifIp, DEFAULT_NETWORK, NetworkManager } from './networks.js';
import { deviceEvent } from './device-log.js';
import { resolveAccel, type AccelChoice } from '../engine/accel.js';
import type { DomainStore } from './domain-store.js';

/** What one attached vif is; written next to the domain's other runtime files. */
export interface VifAttachment {
  index: number;
  network: string;
  port: NetPortState;
  model: VifSpec['model'];
  hotplug?: boolean;
}

/** A DHCP lease moving with a migrating guest. */
export interface MigratedLease {
  ip: string;
  expires: number;
  hostname?: string;
}

export interface MigratedVif {
  index: number;
  network: string;
  subnet: string;
  mac: string;
  hotplug: boolean;
  lease?: MigratedLease;
}

let current: NicProvider | undefined;
/** The provider xvmd registered (for the network-attach routes). */
export function nicProvider(): NicProvider | undefined {
  return current;
}

/** 00:16:3e + three bytes from the domain's UUID and the vif index. */
export function generatedMac(uuid: string, index: number): string {
  const h = crypto.createHash('sha256').update(`${uuid}/vif${index}`).digest();
  const b = [0x00, 0x16, 0x3e, h[0]! & 0x7f, h[1]!, h[2]!];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

function attachFile(runDir: string, index: number): string {
  return path.join(runDir, `vif-${index}.json`);
}

export function readAttachments(runDir: string): VifAttachment[] {
  let names: string[];
  try {
    names = fs.readdirSync(runDir).filter((n) => /^vif-\d+\.json$/.test(n));
  } catch {
    return [];
  }
  const out: VifAttachment[] = [];
  for (const n of names) {
    try {
      out.push(JSON.parse(fs.readFileSync(path.join(runDir, n), 'utf8')) as VifAttachment);
    } catch {
      /* unreadable: skipped */
    }
  }
  return out.sort((a, b) => a.index - b.index);
}

export class NicProvider implements DeviceProvider {
  readonly kind = 'vif' as const;
  /** Where vif entries go (the domains' store; set by the first domain context). */
  private store: DomainStore | null = null;

  constructor(readonly networks: NetworkManager) {
    current = this;
  }

  close(): void {
    if (current === this) current = undefined;
  }

  /** Incoming migrations: uuid → vif index → the DHCP lease the guest holds on the source's network of the same name. */
  private readonly incomingLeases = new Map<string, Map<number, MigratedLease>>();

  /** The next start of this domain's vifs hands these leases to the switch with the ports (null: forget them). */
  expectLeases(uuid: string, leases: Map<number, MigratedLease> | null): void {
    if (leases && leases.size) this.incomingLeases.set(uuid, leases);
    else this.incomingLeases.delete(uuid);
  }

  /** What a migration target must know of a running domain's vifs: network, its subnet, MAC and the guest's lease. */
  async migrationInfo(runDir: string): Promise<MigratedVif[]> {
    const out: MigratedVif[] = [];
    for (const a of readAttachments(runDir)) {
      const def = this.networks.resolve(a.network);
      let lease: MigratedLease | undefined;
      try {
        const l = (await this.networks.info(a.network)).leases.find((x) => x.mac.toLowerCase() === a.port.mac.toLowerCase());
        if (l && l.expires > Date.now()) lease = { ip: l.ip, expires: l.expires, ...(l.hostname ? { hostname: l.hostname } : {}) };
      } catch {
        /* no lease known */
      }
      out.push({ index: a.index, network: a.network, subnet: def.subnet, mac: a.port.mac, hotplug: Boolean(a.hotplug), ...(lease ? { lease } : {}) });
    }
    return out;
  }

  /** A migration target's check before anything moves: every vif's network exists here with the same subnet. */
  checkIncoming(vifs: MigratedVif[]): void {
    for (const v of vifs) {
      let def;
      try {
        def = this.networks.resolve(v.network);
      } catch (e) {
        throw new XvmError('not_found', `vif${v.index} is on network '${v.network}', which this host does not have (create it with 'xvm net create ${v.network} --subnet ${v.subnet}' first)`);
      }
      if (def.subnet !== v.subnet) {
        throw new XvmError('conflict', `vif${v.index}: network '${v.network}' has subnet ${def.subnet} on this host and ${v.subnet} on the source: the guest's address would not work here`);
      }
    }
  }

  /** Resolve a vif entry into an attachment (network exists, MAC, VLAN, ip checked). */
  resolve(ctx: Pick<DeviceContext, 'name' | 'uuid' | 'runDir'>, vif: Pick<VifSpec, 'mac' | 'network' | 'bridge' | 'model' | 'vlan' | 'trunk' | 'ip'>, index: number): VifAttachment {
    const def = this.networks.resolve(vif.network ?? vif.bridge ?? DEFAULT_NETWORK);
    if (vif.ip !== undefined) checkVifIp(def, vif.ip);
    const mac = vif.mac ?? generatedMac(ctx.uuid, index);
    const socket = path.join(ctx.runDir, `net-vif${index}.sock`);
    if (Buffer.byteLength(socket) > 107) throw new XvmError('invalid', `the socket path ${socket} is too long for a unix socket (108 bytes max): use a shorter XVM_HOME`);
    return {
      index,
      network: def.name,
      model: vif.model,
      port: {
        id: `${ctx.name}/vif${index}`,
        socket,
        mac,
        vlan: vif.vlan ?? def.vlan,
        ...(vif.trunk !== undefined && vif.trunk.length > 0 ? { trunk: vif.trunk } : {}),
        ...(vif.ip !== undefined ? { ip: vif.ip } : {}),
        ...(vif.model !== 'virtio' ? { kind: 'stream' as const } : {}),
      },
    };
  }

  /** Attach: the switch listens on the port's socket when this returns. */
  async attach(runDir: string, a: VifAttachment, lease?: MigratedLease): Promise<void> {
    fs.mkdirSync(runDir, { recursive: true, mode: 0o700 });
    await this.networks.addPort(a.network, a.port, lease);
    fs.writeFileSync(attachFile(runDir, a.index), JSON.stringify(a, null, 2) + '\n');
    deviceEvent('vif-attach', { port: a.port.id, network: a.network, mac: a.port.mac, vlan: a.port.vlan });
  }

  async detach(runDir: string, a: VifAttachment): Promise<void> {
    await this.networks.removePort(a.network, a.port.id);
    fs.rmSync(attachFile(runDir, a.index), { force: true });
    deviceEvent('vif-detach', { port: a.port.id, network: a.network });
  }

  // ---------------------------------------------------------------- DeviceProvider

  async prepare(ctx: DeviceContext): Promise<string[]> {
    const args: string[] = [];
    const macs = new Set<string>();
    const resolved = ctx.config.vif.map((v, i) => this.resolve(ctx, v, i));
    for (const a of resolved) {
      if (macs.has(a.port.mac)) throw new XvmError('invalid', `domain '${ctx.name}': two vifs have MAC ${a.port.mac}`);
      macs.add(a.port.mac);
    }
    const leases = this.incomingLeases.get(ctx.uuid);
    for (const a of resolved) {
      await this.attach(ctx.runDir, a, leases?.get(a.index));
      args.push(...qemuNicArgs(a, nicMsix(ctx.config.accel)));
    }
    return args;
  }

  /** QEMU runs and the domain's store entry exists: the Xen-style vif entries of its NICs. */
  started(ctx: DeviceContext): void {
    this.store = ctx.store;
    if (ctx.domid === null) return;
    for (const a of readAttachments(ctx.runDir)) this.publish(ctx.domid, a);
  }

  /**
   * /local/domain/<domid>/device/vif/<N> and
   * /local/domain/0/backend/vif/<domid>/<N> for one NIC, as Xen's toolstack
   * writes them (handle, mac, bridge = the network, state 4 = connected),
   * plus what our switch serves (the port's socket, VLAN, locked IP, model).
   * They go away with the domain (DomainStore.domainDown) or on detach.
   */
  publish(domid: number, a: VifAttachment): void {
    const n = String(a.index);
    this.store?.deviceUp(
      domid,
      'vif',
      a.index,
      { handle: n, mac: a.port.mac, state: '4' },
      {
        handle: n,
        mac: a.port.mac,
        bridge: a.network,
        type: a.model === 'virtio' ? 'vhost-user-net' : 'ioemu',
        model: a.model,
        vlan: String(a.port.vlan),
        ...(a.port.ip !== undefined ? { ip: a.port.ip } : {}),
        socket: a.port.socket,
        online: '1',
        state: '4',
        hotplug: a.hotplug ? '1' : '0',
      },
    );
  }

  /** The vif entries of a hot-unplugged NIC go. */
  unpublish(domid: number, index: number): void {
    this.store?.deviceDown(domid, 'vif', index);
  }

  async adopt(ctx: DeviceContext): Promise<void> {
    this.store = ctx.store;
    for (const a of readAttachments(ctx.runDir)) {
      if (ctx.domid !== null) this.publish(ctx.domid, a);
      // The switch keeps its ports across an xvmd restart (and re-creates
      // them after its own); only a switch that is gone needs them again.
      if (!(await this.networks.hasPort(a.network, a.port.id).catch(() => false))) {
        await this.networks.addPort(a.network, a.port).catch(() => undefined);
      }
    }
  }

  async release(ctx: DeviceContext): Promise<void> {
    for (const a of readAttachments(ctx.runDir)) await this.detach(ctx.runDir, a).catch(() => undefined);
  }

  /**
   * The switch's port counters of the domain's vifs, from the guest's side:
   * what the port received from the guest is the guest's tx.
   */
  async counters(ctx: DeviceContext): Promise<DeviceCounters[]> {
    const atts = readAttachments(ctx.runDir);
    const out: DeviceCounters[] = [];
    for (const net of new Set(atts.map((a) => a.network))) {
      if (!this.networks.isRunning(net)) continue;
      const ports = ((await this.networks.info(net).catch(() => null))?.ports ?? []) as { id?: string; counters?: Partial<PortCounters> }[];
      for (const a of atts.filter((x) => x.network === net)) {
        const c = ports.find((p) => p.id === a.port.id)?.counters;
        if (!c) continue;
        out.push({
          kind: 'vif',
          device: `vif${a.index}`,
          rxBytes: c.txBytes,
          txBytes: c.rxBytes,
          rxPackets: c.txFrames,
          txPackets: c.rxFrames,
          errors: (c.spoofedMac ?? 0) + (c.spoofedIp ?? 0) + (c.badSize ?? 0) + (c.badVlan ?? 0) + (c.txDropped ?? 0),
        });
      }
    }
    return out;
  }
}

/**
 * Whether the NIC may use MSI-X. Under TCG it may not: QEMU 7.2 segfaults
 * when a vhost-user virtio-net's driver sets DRIVER_OK with MSI-X on (seen
 * with gdb: vhost_net_start → msix_set_vector_notifiers; vhost-user-net
 * turns the guest-notifier mask off and the unmask path then takes the
 * KVM-irqfd branch, which has no irqfd under TCG). Legacy INTx interrupts
 * (vectors=0) avoid that path; under KVM, MSI-X goes through irqfds.
 */
export function nicMsix(accel: AccelChoice): boolean {
  return resolveAccel(accel).accel === 'kvm';
}

/** QEMU arguments for one vif. */
export function qemuNicArgs(a: VifAttachment, msix: boolean): string[] {
  const n = a.index;
  if (a.model !== 'virtio') {
    // QEMU 7.2's stream netdev has no reconnect option: it connects once, at start.
    return [
      '-netdev', `stream,id=net-vif${n},server=off,addr.type=unix,addr.path=${a.port.socket}`,
      '-device', `${a.model},netdev=net-vif${n},mac=${a.port.mac},id=vif${n}`,
    ];
  }
  return [
    '-chardev', `socket,id=chr-vif${n},path=${a.port.socket},reconnect=1`,
    '-netdev', `vhost-user,id=net-vif${n},chardev=chr-vif${n}`,
    '-device', `virtio-net-pci,netdev=net-vif${n},mac=${a.port.mac},id=vif${n}${msix ? '' : ',vectors=0'}`,
  ];
}

