// One network's switch as a picture: the host uplink (TAP) above, the switch
// in the middle, every guest port (DOMAIN/vifN) as a box wired to it below,
// with its MAC, DHCP-leased IP, VLAN and the switch's counters for it.
import { formatBytes } from '../api.js';
import type { NetworkDetails, NetworkPortInfo } from '../net-types.js';

const W = 960; // viewBox width; the SVG scales to the card
const BOX_W = 210;
const BOX_H = 112;
const PER_ROW = 4;
const GAP_X = (W - PER_ROW * BOX_W) / (PER_ROW + 1);
const SWITCH = { x: 300, y: 118, w: 360, h: 64 };
const ROW0 = 250; // top of the first row of port boxes
const ROW_H = BOX_H + 56;

/** The guests' ports: the switch's own services (DHCP, gateway) and uplink ports are drawn apart. */
export function guestPorts(n: NetworkDetails): NetworkPortInfo[] {
  return n.ports.filter((p) => p.id !== 'services' && p.id !== 'uplink');
}

function frames(n: number | undefined): string {
  return `${n ?? 0} fr`;
}

export function SwitchDiagram({ net }: { net: NetworkDetails }) {
  const ports = guestPorts(net);
  const rows = Math.max(1, Math.ceil(ports.length / PER_ROW));
  const h = ROW0 + rows * ROW_H - 40;
  const leaseOf = (mac: string | null) => net.leases.find((l) => mac !== null && l.mac.toLowerCase() === mac.toLowerCase());
  const uplinkPort = net.ports.find((p) => p.id === 'uplink');
  const cx = SWITCH.x + SWITCH.w / 2;
  const vlan = net.vlan ? `native VLAN ${net.vlan}` : 'untagged';
  return (
    <svg class="switch-diagram" viewBox={`0 0 ${W} ${h}`} role="img" aria-label={`switch of network ${net.name}`} data-testid="switch-diagram">
      {/* The host side: the TAP uplink holding the gateway address, or the switch answering for it. */}
      <g data-testid="uplink">
        {net.uplink ? (
          <>
            <line class="wire up" x1={cx} y1={74} x2={cx} y2={SWITCH.y} />
            <rect class="host-box" x={cx - 150} y={8} width={300} height={66} rx={8} />
            <text class="box-title" x={cx} y={30} text-anchor="middle">host · TAP {net.uplink.name}</text>
            <text class="box-line" x={cx} y={48} text-anchor="middle">{net.gateway} · {net.uplink.mac}</text>
            <text class="box-line muted" x={cx} y={64} text-anchor="middle">
              {uplinkPort ? `to host ${frames(uplinkPort.counters.txFrames)} · from host ${frames(uplinkPort.counters.rxFrames)}` : `read ${frames(net.uplink.readFrames)}`}
            </text>
          </>
        ) : (
          <>
            <rect class="host-box none" x={cx - 150} y={20} width={300} height={48} rx={8} />
            <text class="box-title muted" x={cx} y={40} text-anchor="middle">no host uplink</text>
            <text class="box-line muted" x={cx} y={57} text-anchor="middle">the switch answers for {net.gateway} itself</text>
          </>
        )}
      </g>
      {ports.map((p, i) => {
        const { x, y } = boxAt(i, ports.length);
        // From a socket on the switch's lower edge down to the box, bending once.
        const sx = cx + ((i % PER_ROW) - (Math.min(PER_ROW, ports.length) - 1) / 2) * 40;
        const sy = SWITCH.y + SWITCH.h;
        const ex = x + BOX_W / 2;
        const mid = (sy + ROW0) / 2;
        return <path key={`w-${p.id}`} class={`wire ${p.connected ? 'up' : 'down'}`} d={`M ${sx} ${sy} C ${sx} ${mid}, ${ex} ${mid}, ${ex} ${y}`} />;
      })}
      <g data-testid="switch">
        <rect class="switch-box" x={SWITCH.x} y={SWITCH.y} width={SWITCH.w} height={SWITCH.h} rx={10} />
        <text class="switch-title" x={cx} y={SWITCH.y + 27} text-anchor="middle">switch {net.name}</text>
        <text class="switch-line" x={cx} y={SWITCH.y + 47} text-anchor="middle">{net.subnet} · gateway {net.gateway} · {vlan}</text>
      </g>
      {ports.length === 0 && (
        <text class="box-line muted" x={cx} y={ROW0 + 30} text-anchor="middle">No ports: boot a domain with vif = ['network={net.name}'] or hot-plug one.</text>
      )}
      {ports.map((p, i) => {
        const { x, y } = boxAt(i, ports.length);
        const lease = leaseOf(p.mac);
        const ip = p.ip ?? lease?.ip ?? null;
        const c = p.counters;
        return (
          <g key={p.id} class="port" data-testid="port" data-port={p.id} data-ip={ip ?? ''}>
            <rect class={`port-box ${p.connected ? 'up' : 'down'}`} x={x} y={y} width={BOX_W} height={BOX_H} rx={8} />
            <circle class={`link ${p.connected ? 'up' : 'down'}`} cx={x + BOX_W - 14} cy={y + 17} r={5}><title>{p.connected ? 'link up' : 'link down (the guest is not attached)'}</title></circle>
            <text class="box-title" x={x + 12} y={y + 22}>{p.id}</text>
            <text class="box-line mono" x={x + 12} y={y + 42}>{p.mac ?? '–'}</text>
            <text class="box-line" x={x + 12} y={y + 60} data-testid="port-ip">{ip ? `IP ${ip}` : 'no address yet'}{p.vlan ? ` · VLAN ${p.vlan}` : ''}</text>
            <text class="box-line muted" x={x + 12} y={y + 80}>rx {frames(c.rxFrames)} · {formatBytes(c.rxBytes ?? 0)}</text>
            <text class="box-line muted" x={x + 12} y={y + 98}>tx {frames(c.txFrames)} · {formatBytes(c.txBytes ?? 0)}</text>
            <title>{`${p.id}: rx = frames the switch got from this NIC, tx = frames it sent to it; dropped ${c.txDropped ?? 0}, spoofed ${(c.spoofedMac ?? 0) + (c.spoofedIp ?? 0)}`}</title>
          </g>
        );
      })}
    </svg>
  );
}

/** Where port i of n goes: rows of PER_ROW, the last row centred. */
function boxAt(i: number, n: number): { x: number; y: number } {
  const row = Math.floor(i / PER_ROW);
  const inRow = Math.min(PER_ROW, n - row * PER_ROW);
  const rowW = inRow * BOX_W + (inRow - 1) * GAP_X;
  const x0 = (W - rowW) / 2;
  return { x: x0 + (i % PER_ROW) * (BOX_W + GAP_X), y: ROW0 + row * ROW_H };
}
