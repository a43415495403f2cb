// The switch, its DHCP server and the pcap writer, without guests: frames
// in, frames out, counters.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, ethFrame, formatIp, inetChecksum, ipv4Packet, parseCidr, parseIp, parseMac, readMac, udpDatagram, IPPROTO_UDP } from '../../src/net/frame.js';
import { Switch, type PortSink } from '../../src/net/switch.js';
import { LeaseStore, parseDhcp, DISCOVER, REQUEST, OFFER, ACK, NAK } from '../../src/net/dhcp.js';
import { NetworkServices } from '../../src/net/services.js';
import { pcapHeader, pcapRecord, readPcap, tagged } from '../../src/net/pcap.js';
import { Announcer, MAX_PENDING, MIN_GAP_MS } from '../../src/net/announce.js';
import { rarpFrame, ETHERTYPE_RARP, formatMac } from '../../src/net/frame.js';

class Sink implements PortSink {
  frames: Buffer[] = [];
  full = false;
  deliver(f: Buffer): boolean {
    if (this.full) return false;
    this.frames.push(f);
    return true;
  }
}

const A = parseMac('00:16:3e:00:00:0a');
const B = parseMac('00:16:3e:00:00:0b');
const C = parseMac('00:16:3e:00:00:0c');
const BCAST = 0xffffffffffff;

function frame(dst: number, src: number, len = 60, type = 0x88b5): Buffer {
  const f = ethFrame(dst, src, type, Buffer.alloc(len - 14, 0x5a));
  return f;
}

function three(now = () => 0): { sw: Switch; a: Sink; b: Sink; c: Sink } {
  const sw = new Switch('t', 1000, now);
  const a = new Sink();
  const b = new Sink();
  const c = new Sink();
  sw.addPort({ id: 'a', mac: A }, a);
  sw.addPort({ id: 'b', mac: B }, b);
  sw.addPort({ id: 'c', mac: C }, c);
  return { sw, a, b, c };
}

test('floods unknown and broadcast destinations, then forwards to the learned port only; entries age out', () => {
  let t = 0;
  const { sw, a, b, c } = three(() => t);
  sw.input('a', frame(B, A)); // B unknown: flooded
  assert.equal(b.frames.length, 1);
  assert.equal(c.frames.length, 1);
  assert.equal(a.frames.length, 0, 'never back to the sender');
  sw.input('b', frame(A, B)); // A learned from the first frame
  assert.equal(a.frames.length, 1);
  assert.equal(c.frames.length, 1, 'known unicast is not flooded');
  sw.input('a', frame(B, A));
  assert.equal(b.frames.length, 2);
  assert.equal(c.frames.length, 1);
  sw.input('a', frame(BCAST, A));
  assert.equal(c.frames.length, 2);
  sw.input('a', frame(parseMac('01:00:5e:00:00:01'), A)); // multicast floods
  assert.equal(c.frames.length, 3);
  t = 5000; // past the ageing time: B is unknown again
  sw.input('a', frame(B, A));
  assert.equal(c.frames.length, 4);
  assert.equal(sw.expire(), 1, 'A aged out... and B');
  const info = sw.portInfo().find((p) => p.id === 'a')!;
  assert.equal(info.counters.rxFrames, 5);
  assert.equal(info.counters.txFrames, 1);
});

test('anti-spoofing: a port sends only from its MAC, and from its IP once locked', () => {
  const { sw, a, b, c } = three();
  sw.input('b', frame(BCAST, C)); // b claims c's MAC
  sw.input('b', frame(BCAST, parseMac('01:02:03:04:05:06'))); // a group source
  assert.equal(a.frames.length + c.frames.length, 0);
  assert.equal(sw.portInfo().find((p) => p.id === 'b')!.counters.spoofedMac, 2);
  assert.equal(sw.fdbEntries().length, 0, 'nothing learned from forged frames');
  sw.setPortIp('b', parseIp('10.0.0.2'));
  const ip = (src: string) => ethFrame(A, B, ETHERTYPE_IPV4, ipv4Packet(parseIp(src), parseIp('10.0.0.3'), 17, Buffer.alloc(8)));
  sw.input('b', ip('10.0.0.9'));
  assert.equal(a.frames.length, 0);
  sw.input('b', ip('10.0.0.2'));
  sw.input('b', ip('0.0.0.0'));
  assert.equal(a.frames.length, 2);
  // ARP claiming another address is refused too.
  const arp = Buffer.alloc(28);
  arp.writeUInt16BE(1, 0);
  arp.writeUInt16BE(0x0800, 2);
  arp[4] = 6;
  arp[5] = 4;
  arp.writeUInt16BE(2, 6);
  arp.writeUIntBE(B, 8, 6);
  arp.writeUInt32BE(parseIp('10.0.0.3'), 14);
  sw.input('b', ethFrame(BCAST, B, ETHERTYPE_ARP, arp));
  assert.equal(sw.portInfo().find((p) => p.id === 'b')!.counters.spoofedIp, 2);
});

test('VLANs: access ports see only their VLAN; a trunk gets tagged frames and may send tagged ones', () => {
  const sw = new Switch('v');
  const s10 = new Sink();
  const s10b = new Sink();
  const s20 = new Sink();
  const trunk = new Sink();
  sw.addPort({ id: 'p10', mac: A, vlan: 10 }, s10);
  sw.addPort({ id: 'p10b', mac: B, vlan: 10 }, s10b);
  sw.addPort({ id: 'p20', mac: C, vlan: 20 }, s20);
  sw.addPort({ id: 'tr', vlan: 0, trunk: [10, 20] }, trunk);
  sw.input('p10', frame(BCAST, A));
  assert.equal(s10b.frames.length, 1);
  assert.equal(s20.frames.length, 0, 'VLAN 20 sees nothing of VLAN 10');
  assert.equal(trunk.frames.length, 1);
  assert.equal(trunk.frames[0]!.readUInt16BE(12), 0x8100);
  assert.equal(trunk.frames[0]!.readUInt16BE(14), 10);
  assert.equal(trunk.frames[0]!.length, 64);
  // The trunk sends a frame tagged 20: it arrives untagged on p20 only.
  const t = tagged(frame(BCAST, parseMac('00:16:3e:00:00:99')), 20);
  sw.input('tr', t);
  assert.equal(s20.frames.length, 1);
  assert.equal(s20.frames[0]!.readUInt16BE(12), 0x88b5);
  assert.equal(s10.frames.length, 0);
  // An access port may not send tagged frames; a trunk only its VLANs.
  sw.input('p10', tagged(frame(BCAST, A), 20));
  sw.input('tr', tagged(frame(BCAST, parseMac('00:16:3e:00:00:99')), 30));
  assert.equal(s20.frames.length, 1);
  assert.equal(sw.portInfo().find((p) => p.id === 'p10')!.counters.badVlan, 1);
  assert.equal(sw.portInfo().find((p) => p.id === 'tr')!.counters.badVlan, 1);
});

test('bad sizes and full peers are counted, not fatal; ports come and go', () => {
  const { sw, a, b } = three();
  sw.input('a', Buffer.alloc(10));
  sw.input('a', frame(BCAST, A, 1519));
  assert.equal(sw.portInfo().find((p) => p.id === 'a')!.counters.badSize, 2);
  b.full = true;
  sw.input('a', frame(BCAST, A));
  assert.equal(sw.portInfo().find((p) => p.id === 'b')!.counters.txDropped, 1);
  assert.equal(sw.removePort('b'), true);
  sw.input('b', frame(BCAST, B));
  assert.equal(sw.orphanFrames, 1);
  assert.throws(() => sw.addPort({ id: 'a', mac: A }, a), /already exists/);
  assert.throws(() => sw.addPort({ id: 'm', mac: BCAST }, a), /group address/);
});

function dhcpFrame(mac: number, type: number, extra: Buffer[] = [], ciaddr = 0): Buffer {
  const b = Buffer.alloc(240);
  b[0] = 1;
  b[1] = 1;
  b[2] = 6;
  b.writeUInt32BE(0x1234abcd, 4);
  b.writeUInt32BE(ciaddr, 12);
  b.writeUIntBE(mac, 28, 6);
  b.writeUInt32BE(0x63825363, 236);
  const payload = Buffer.concat([b, Buffer.from([53, 1, type]), ...extra, Buffer.from([255])]);
  const udp = udpDatagram(0, 0xffffffff, 68, 67, payload);
  return ethFrame(BCAST, mac, ETHERTYPE_IPV4, ipv4Packet(0, 0xffffffff, IPPROTO_UDP, udp));
}

function dhcpReply(f: Buffer): { type: number; yiaddr: string } {
  assert.equal(f.readUInt16BE(12), ETHERTYPE_IPV4);
  assert.equal(inetChecksum(f, 14, 34), 0, 'IP header checksum');
  const p = f.subarray(14 + 20 + 8);
  const m = p.readUInt32BE(16);
  let type = 0;
  for (let i = 240; i < p.length && p[i] !== 255; i += 2 + p[i + 1]!) if (p[i] === 53) type = p[i + 2]!;
  return { type, yiaddr: formatIp(m) };
}

test('DHCP: discover → offer, request → ack, the port is locked to its lease, leases survive a restart', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-dhcp-'));
  try {
    const file = path.join(dir, 'leases.json');
    const run = async (store: LeaseStore): Promise<{ sw: Switch; a: Sink; offer: string; ack: string }> => {
      const sw = new Switch('d');
      const a = new Sink();
      sw.addPort({ id: 'a', mac: A }, a);
      new NetworkServices(sw, { subnet: parseCidr('10.9.0.0/24'), gateway: parseIp('10.9.0.1'), mac: parseMac('02:00:00:00:00:01'), leases: store, answerGateway: true, vlan: 0 });
      sw.input('a', dhcpFrame(A, DISCOVER));
      await new Promise((r) => setImmediate(r));
      const offer = dhcpReply(a.frames.at(-1)!);
      assert.equal(offer.type, OFFER);
      const req = Buffer.concat([Buffer.from([50, 4]), Buffer.from(offer.yiaddr.split('.').map(Number)), Buffer.from([54, 4, 10, 9, 0, 1])]);
      sw.input('a', dhcpFrame(A, REQUEST, [req]));
      await new Promise((r) => setImmediate(r));
      const ack = dhcpReply(a.frames.at(-1)!);
      assert.equal(ack.type, ACK);
      return { sw, a, offer: offer.yiaddr, ack: ack.yiaddr };
    };
    const first = await run(new LeaseStore(file));
    assert.equal(first.offer, '10.9.0.2');
    assert.equal(first.ack, '10.9.0.2');
    assert.equal(first.sw.portInfo().find((p) => p.id === 'a')!.ip, '10.9.0.2');
    // Another MAC requesting that address is refused (NAK).
    const sw = first.sw;
    const b = new Sink();
    sw.addPort({ id: 'b', mac: B }, b);
    sw.input('b', dhcpFrame(B, REQUEST, [Buffer.from([50, 4, 10, 9, 0, 2])]));
    await new Promise((r) => setImmediate(r));
    assert.equal(dhcpReply(b.frames.at(-1)!).type, NAK);
    // After a "restart" (a new store from the same file), A gets the same address.
    const again = await run(new LeaseStore(file));
    assert.equal(again.ack, '10.9.0.2');
    // ARP and ping for the gateway are answered.
    const arp = Buffer.alloc(28);
    arp.writeUInt16BE(1, 0);
    arp.writeUInt16BE(0x0800, 2);
    arp[4] = 6;
    arp[5] = 4;
    arp.writeUInt16BE(1, 6);
    arp.writeUIntBE(A, 8, 6);
    arp.writeUInt32BE(parseIp('10.9.0.2'), 14);
    arp.writeUInt32BE(parseIp('10.9.0.1'), 24);
    again.sw.input('a', ethFrame(BCAST, A, ETHERTYPE_ARP, arp));
    await new Promise((r) => setImmediate(r));
    const r = again.a.frames.at(-1)!;
    assert.equal(r.readUInt16BE(12), ETHERTYPE_ARP);
    assert.equal(readMac(r, 14 + 8), parseMac('02:00:00:00:00:01'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('DHCP parser refuses malformed packets without throwing', () => {
  assert.equal(parseDhcp(Buffer.alloc(10)), null);
  const b = Buffer.alloc(244);
  b[0] = 1;
  b[1] = 1;
  b[2] = 6;
  b.writeUInt32BE(0x63825363, 236);
  assert.equal(parseDhcp(b), null, 'no message type');
  const trunc = Buffer.concat([b, Buffer.from([53, 200, 1])]);
  assert.equal(parseDhcp(trunc), null, 'option runs past the end');
  for (let i = 0; i < 2000; i++) {
    const r = Buffer.alloc(240 + (i % 64));
    for (let j = 0; j < r.length; j++) r[j] = (i * 31 + j * 7) & 0xff;
    r[1] = 1;
    r[2] = 6;
    r.writeUInt32BE(0x63825363, 236);
    parseDhcp(r); // must not throw
  }
});

test('pcap: written records read back by tshark', () => {
  const f1 = ethFrame(B, A, ETHERTYPE_IPV4, ipv4Packet(parseIp('10.0.0.1'), parseIp('10.0.0.2'), 1, Buffer.from([8, 0, 0xf7, 0xff, 0, 0, 0, 0])));
  const out = Buffer.concat([pcapHeader(), pcapRecord(f1, 1_700_000_000_123), pcapRecord(tagged(f1, 7), 1_700_000_000_456)]);
  const back = readPcap(out);
  assert.equal(back.frames.length, 2);
  assert.deepEqual(back.frames[0]!.data, f1);
  assert.equal(back.frames[1]!.data.readUInt16BE(14), 7);
  const file = path.join(os.tmpdir(), `xvm-pcap-${process.pid}.pcap`);
  fs.writeFileSync(file, out);
  try {
    const r = spawnSync('tshark', ['-r', file, '-T', 'fields', '-e', 'vlan.id', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'icmp.type'], { encoding: 'utf8' });
    assert.equal(r.error, undefined, 'tshark runs (scripts/install-deps.sh --test installs it)');
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.replace(/\n$/, '').split('\n'), ['\t10.0.0.1\t10.0.0.2\t8', '7\t10.0.0.1\t10.0.0.2\t8']);
  } finally {
    fs.rmSync(file, { force: true });
  }
});

function tcp4(payload: number, seed: boolean): Buffer {
  const data = Buffer.from(Array.from({ length: payload }, (_, i) => (i * 13) & 0xff));
  const tcp = Buffer.alloc(20 + payload);
  tcp.writeUInt16BE(40000, 0);
  tcp.writeUInt16BE(5001, 2);
  tcp.writeUInt32BE(1000, 4);
  tcp[12] = 5 << 4;
  tcp[13] = 0x18; // PSH ACK
  data.copy(tcp, 20);
  const src = parseIp('10.0.0.1');
  const dst = parseIp('10.0.0.2');
  if (seed) {
    // What a guest with offloads leaves: the pseudo-header sum, not complemented.
    const sum = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + 6 + tcp.length;
    tcp.writeUInt16BE(~inetChecksum(Buffer.alloc(0), 0, 0, sum) & 0xffff, 16);
  }
  return ethFrame(B, A, ETHERTYPE_IPV4, ipv4Packet(src, dst, 6, tcp));
}

function tcpChecksumOk(f: Buffer): boolean {
  const src = f.readUInt32BE(26);
  const dst = f.readUInt32BE(30);
  const len = f.length - 34;
  return inetChecksum(f, 34, f.length, (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + 6 + len) === 0;
}

test('offloads: partial checksums are completed and TCP super-frames segmented for receivers without them', () => {
  const sw = new Switch('o');
  const plain = new Sink();
  const able = Object.assign(new Sink(), { caps: { csum: true, tso4: true } });
  const offs: unknown[] = [];
  const orig = able.deliver.bind(able);
  able.deliver = (f: Buffer, off?: unknown) => (offs.push(off), orig(f));
  sw.addPort({ id: 'a', mac: A }, new Sink());
  sw.addPort({ id: 'p', mac: B }, plain);
  sw.addPort({ id: 'q', mac: C }, able);
  const partial = tcp4(100, true);
  assert.equal(tcpChecksumOk(partial), false);
  sw.input('a', partial, { needsCsum: true, csumStart: 34, csumOffset: 16, gso: 0, gsoSize: 0 });
  assert.equal(plain.frames.length, 1);
  assert.equal(tcpChecksumOk(plain.frames[0]!), true, 'completed for the port without GUEST_CSUM');
  assert.equal(able.frames.length, 1);
  assert.deepEqual(able.frames[0], partial, 'passed through as is to the port that takes it');
  assert.equal((offs[0] as { needsCsum: boolean }).needsCsum, true);
  // A 3000-byte TCP payload with MSS 1000: three frames, each valid, sequence numbers advancing.
  const big = tcp4(3000, true);
  sw.input('a', big, { needsCsum: true, csumStart: 34, csumOffset: 16, gso: 1, gsoSize: 1000 });
  const segs = plain.frames.slice(1);
  assert.equal(segs.length, 3);
  segs.forEach((s, i) => {
    assert.equal(s.length, 14 + 20 + 20 + 1000);
    assert.equal(inetChecksum(s, 14, 34), 0, 'IP header checksum');
    assert.equal(tcpChecksumOk(s), true, 'TCP checksum');
    assert.equal(s.readUInt32BE(38), 1000 + i * 1000, 'sequence number');
    assert.equal(s[47]! & 0x08, i === 2 ? 0x08 : 0, 'PSH on the last segment only');
  });
  assert.deepEqual(Buffer.concat(segs.map((s) => s.subarray(54))), big.subarray(54), 'the payload, in order');
  assert.equal(able.frames.length, 2, 'one super-frame to the port with GUEST_TSO4');
  // Malformed metadata (checksum offset past the end): dropped and counted, nothing thrown.
  sw.input('a', tcp4(10, true), { needsCsum: true, csumStart: 34, csumOffset: 4000, gso: 0, gsoSize: 0 });
  assert.equal(sw.portInfo().find((p) => p.id === 'p')!.counters.txDropped, 1);
});

test("a migrated guest's announcement: a RARP frame from its MAC per request, learned by the switch, tagged on its trunk VLANs; bunched requests are spread out", async () => {
  // QEMU's announce_self_create: broadcast, 0x8035, opcode 3, sender = target = the MAC, no IPs, 60 bytes.
  const f = rarpFrame(A);
  assert.equal(f.length, 60);
  assert.equal(readMac(f, 0), BCAST);
  assert.equal(readMac(f, 6), A);
  assert.equal(f.readUInt16BE(12), ETHERTYPE_RARP);
  assert.deepEqual([f.readUInt16BE(14), f.readUInt16BE(16), f[18], f[19], f.readUInt16BE(20)], [1, 0x0800, 6, 4, 3]);
  assert.equal(readMac(f, 22), A);
  assert.equal(f.readUInt32BE(28), 0);
  assert.equal(readMac(f, 32), A);
  assert.equal(f.readUInt32BE(38), 0);
  assert.ok(f.subarray(42).every((x) => x === 0), 'zero padding');
  const t10 = rarpFrame(A, 10);
  assert.equal(t10.length, 64);
  assert.deepEqual([t10.readUInt16BE(12), t10.readUInt16BE(14), t10.readUInt16BE(16)], [0x8100, 10, ETHERTYPE_RARP]);

  // The guest's port is a trunk (native VLAN 0 + VLAN 10), locked to an IP; B on VLAN 0, C on VLAN 10.
  const sw = new Switch('r');
  const a = new Sink();
  const b = new Sink();
  const c = new Sink();
  sw.addPort({ id: 'guest', mac: A, vlan: 0, trunk: [10], ip: parseIp('10.0.0.5') }, a);
  sw.addPort({ id: 'b', mac: B, vlan: 0 }, b);
  sw.addPort({ id: 'c', mac: C, vlan: 10 }, c);
  const at: number[] = [];
  const t0 = Date.now();
  const ann = new Announcer({ mac: A, trunk: [10], send: (fr) => { if (fr.length === 60) at.push(Date.now() - t0); sw.input('guest', fr); } });
  ann.announce();
  // At once, before the guest sent anything: the switch knows where A is, on both VLANs.
  const fdb = sw.fdbEntries().filter((e) => e.mac === formatMac(A));
  assert.deepEqual(fdb.map((e) => [e.vlan, e.port]).sort(), [[0, 'guest'], [10, 'guest']]);
  assert.equal(b.frames.length, 1);
  assert.equal(b.frames[0]!.readUInt16BE(12), ETHERTYPE_RARP, 'B sees an untagged RARP');
  assert.equal(c.frames.length, 1, 'C (VLAN 10) sees the tagged one, untagged');
  assert.equal(readMac(c.frames[0]!, 6), A);
  const counters = sw.portInfo().find((p) => p.id === 'guest')!.counters;
  assert.equal(counters.spoofedMac + counters.spoofedIp + counters.badVlan, 0, "passes the port's own protection (MAC, IP lock, VLANs)");

  // QEMU's queued rounds arriving together: one frame each, MIN_GAP_MS apart; beyond MAX_PENDING dropped.
  for (let i = 0; i < MAX_PENDING + 2; i++) ann.announce();
  assert.equal(b.frames.length, 1, 'none at once: the gap since the last frame');
  assert.equal(ann.waiting, MAX_PENDING);
  assert.equal(ann.stats.dropped, 2);
  await waitFor(() => ann.waiting === 0, 2000);
  assert.equal(b.frames.length, 1 + MAX_PENDING);
  assert.equal(c.frames.length, 1 + MAX_PENDING);
  for (let i = 1; i < at.length; i++) assert.ok(at[i]! - at[i - 1]! >= MIN_GAP_MS - 5, `spaced out: ${at.join(',')} ms`);
  assert.deepEqual({ ...ann.stats, lastAt: 0 }, { requests: 1 + MAX_PENDING, dropped: 2, frames: 2 * (1 + MAX_PENDING), lastAt: 0 });
  // A request after a quiet gap goes at once; close() drops what waits.
  await new Promise((r) => setTimeout(r, MIN_GAP_MS + 10));
  ann.announce();
  assert.equal(b.frames.length, 2 + MAX_PENDING);
  ann.announce();
  ann.close();
  await new Promise((r) => setTimeout(r, MIN_GAP_MS + 50));
  assert.equal(b.frames.length, 2 + MAX_PENDING, 'nothing after close()');
});

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}
