// The network's own services, attached to the switch as one port with a
// locally administered MAC: the DHCP server and, when the network has no
// TAP uplink holding the gateway address, an ARP + ICMP echo responder for
// the gateway address (so guests can always ping their gateway).
import {
  BROADCAST, ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ethFrame, inetChecksum, IPPROTO_ICMP, IPPROTO_UDP, ipv4Packet, readMac,
  parseIp, udpDatagram, writeMac, type Subnet,
} from './frame.js';
import { DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpServer, parseDhcp, type Lease, type LeaseStore } from './dhcp.js';
import type { PortSink, Switch } from './switch.js';

export const SERVICES_PORT = 'services';

export interface ServicesOptions {
  subnet: Subnet;
  gateway: number;
  mac: number;
  leases: LeaseStore;
  /** Answer ARP and ping for the gateway address (no TAP uplink has it). */
  answerGateway: boolean;
  /** VLAN the services live on (the network's native VLAN). */
  vlan: number;
  reserved?: () => Iterable<number>;
  onLease?: (lease: Lease) => void;
}

export class NetworkServices implements PortSink {
  readonly dhcp: DhcpServer;
  answerGateway: boolean;
  stats = { dhcpRequests: 0, dhcpReplies: 0, arpReplies: 0, pingReplies: 0, ignored: 0 };

  constructor(
    private readonly sw: Switch,
    private readonly o: ServicesOptions,
  ) {
    this.answerGateway = o.answerGateway;
    this.dhcp = new DhcpServer({ subnet: o.subnet, gateway: o.gateway, leases: o.leases, reserved: o.reserved });
    sw.addPort({ id: SERVICES_PORT, mac: o.mac, vlan: o.vlan }, this);
  }

  /** Replies go back into the switch after the current frame is done. */
  private reply(frame: Buffer): void {
    queueMicrotask(() => this.sw.input(SERVICES_PORT, frame));
  }

  deliver(f: Buffer): boolean {
    try {
      this.handle(f);
    } catch {
      this.stats.ignored++;
    }
    return true;
  }

  private handle(f: Buffer): void {
    if (f.length < ETH_HLEN) return;
    const type = f.readUInt16BE(12);
    if (type === ETHERTYPE_ARP) return this.arp(f);
    if (type !== ETHERTYPE_IPV4 || f.length < ETH_HLEN + 20) return;
    const ip = ETH_HLEN;
    const ihl = (f[ip]! & 0x0f) * 4;
    if (f[ip]! >> 4 !== 4 || ihl < 20 || f.length < ip + ihl) return;
    const total = Math.min(f.readUInt16BE(ip + 2), f.length - ip);
    const proto = f[ip + 9]!;
    const src = f.readUInt32BE(ip + 12);
    const dst = f.readUInt32BE(ip + 16);
    const l4 = ip + ihl;
    if (proto === IPPROTO_UDP && total >= ihl + 8) {
      if (f.readUInt16BE(l4 + 2) !== DHCP_SERVER_PORT) return;
      this.stats.dhcpRequests++;
      const m = parseDhcp(f.subarray(l4 + 8, ip + total));
      if (m === null) return void this.stats.ignored++;
      const r = this.dhcp.handle(m);
      if (r === null) return;
      if (r.lease) {
        const port = this.sw.portByMac(m.chaddr);
        if (port) this.sw.setPortIp(port.id, parseIp(r.lease.ip));
        this.o.onLease?.(r.lease);
      }
      const dstIp = r.unicast ?? 0xffffffff;
      const dstMac = r.unicast !== null ? m.chaddr : BROADCAST;
      const udp = udpDatagram(this.o.gateway, dstIp, DHCP_SERVER_PORT, DHCP_CLIENT_PORT, r.payload);
      this.stats.dhcpReplies++;
      this.reply(ethFrame(dstMac, this.o.mac, ETHERTYPE_IPV4, ipv4Packet(this.o.gateway, dstIp, IPPROTO_UDP, udp)));
      return;
    }
    if (proto === IPPROTO_ICMP && this.answerGateway && dst === this.o.gateway && total >= ihl + 8 && f[l4] === 8) {
      // Echo request → echo reply with the same id, sequence and data.
      const icmp = Buffer.from(f.subarray(l4, ip + total));
      icmp[0] = 0;
      icmp.writeUInt16BE(0, 2);
      icmp.writeUInt16BE(inetChecksum(icmp, 0, icmp.length), 2);
      this.stats.pingReplies++;
      this.reply(ethFrame(readMac(f, 6), this.o.mac, ETHERTYPE_IPV4, ipv4Packet(this.o.gateway, src, IPPROTO_ICMP, icmp)));
    }
  }

  private arp(f: Buffer): void {
    if (!this.answerGateway || f.length < ETH_HLEN + 28) return;
    const a = ETH_HLEN;
    if (f.readUInt16BE(a) !== 1 || f.readUInt16BE(a + 2) !== ETHERTYPE_IPV4 || f[a + 4] !== 6 || f[a + 5] !== 4) return;
    if (f.readUInt16BE(a + 6) !== 1) return; // requests only
    const tpa = f.readUInt32BE(a + 24);
    if (tpa !== this.o.gateway) return;
    const sha = readMac(f, a + 8);
    const spa = f.readUInt32BE(a + 14);
    const r = Buffer.alloc(28);
    r.writeUInt16BE(1, 0);
    r.writeUInt16BE(ETHERTYPE_IPV4, 2);
    r[4] = 6;
    r[5] = 4;
    r.writeUInt16BE(2, 6);
    writeMac(r, 8, this.o.mac);
    r.writeUInt32BE(this.o.gateway, 14);
    writeMac(r, 18, sha);
    r.writeUInt32BE(spa, 24);
    this.stats.arpReplies++;
    this.reply(ethFrame(sha, this.o.mac, ETHERTYPE_ARP, r));
  }
}
