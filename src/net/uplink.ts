// The TAP uplink: a port of the switch whose peer is the host's own network
// stack. The switch process opens a TAP interface, gives it the network's
// gateway address (iproute2), and moves frames between it and the switch,
// so the host and the guests talk IP both ways. Needs root (CAP_NET_ADMIN);
// without it the network has no uplink and the services answer for the
// gateway address themselves.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { closeQuiet, openTap, tapRead, tapWrite, watchFd, type FdWatch } from '../sys/index.js';
import { formatIp, parseMac, type Subnet } from './frame.js';
import type { PortSink, Switch } from './switch.js';

export const UPLINK_PORT = 'uplink';

export class TapUplink implements PortSink {
  private readonly fd: number;
  private watch: FdWatch | null = null;
  private readonly buf = Buffer.alloc(65536);
  readonly mac: number;
  readFrames = 0;
  writeDropped = 0;

  constructor(
    readonly name: string,
    private readonly sw: Switch,
    opts: { gateway: number; subnet: Subnet; vlan: number },
  ) {
    this.fd = openTap(name);
    try {
      const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
      ip('addr', 'add', `${formatIp(opts.gateway)}/${opts.subnet.prefix}`, 'dev', name);
      ip('link', 'set', name, 'up');
      this.mac = parseMac(fs.readFileSync(`/sys/class/net/${name}/address`, 'utf8').trim());
    } catch (e) {
      closeQuiet(this.fd);
      const err = e as Error & { stderr?: Buffer };
      throw new Error(`configuring ${name}: ${err.stderr?.toString().trim() || err.message}`);
    }
    // The host sends from the TAP's MAC; not locked to an IP (it routes for others).
    sw.addPort({ id: UPLINK_PORT, mac: this.mac, vlan: opts.vlan }, this);
    this.watch = watchFd(this.fd, () => this.onReadable());
  }

  private onReadable(): void {
    // Bounded per wake-up so one busy host cannot starve the guests' queues.
    for (let i = 0; i < 256; i++) {
      const n = tapRead(this.fd, this.buf);
      if (n === 0) return;
      this.readFrames++;
      this.sw.input(UPLINK_PORT, Buffer.from(this.buf.subarray(0, n)));
    }
  }

  deliver(frame: Buffer): boolean {
    if (tapWrite(this.fd, frame)) return true;
    this.writeDropped++;
    return false;
  }

  close(): void {
    this.watch?.close();
    this.watch = null;
    this.sw.removePort(UPLINK_PORT);
    closeQuiet(this.fd);
  }
}
