// Announcing a guest that arrived by live migration (or restore): QEMU asks
// the guest's port with VHOST_USER_SEND_RARP (src/devices/net/device.ts),
// and the port sends broadcast RARP frames from the guest's MAC into the
// switch as if the guest had sent them, so the switch's MAC table, the
// uplink (TAP) and the host, trunks and other hosts learn where the guest
// is now before it sends anything itself.
//
// A few frames, spaced out, like QEMU's own qemu_announce_self (a switch or
// host busy at the first one still sees a later one). QEMU sends SEND_RARP
// once per announce round, but the rounds of a guest that was paused when
// the migration completed (ours: the target continues it on "commit")
// arrive together when it continues; requests during a train join it, so a
// burst of requests is one train of frames, not five.
import { rarpFrame } from './frame.js';

/** When the frames of one announcement go out, in ms after the request. */
export const ANNOUNCE_SCHEDULE_MS = [0, 50, 200] as const;

export interface AnnouncerOptions {
  mac: number;
  /** The port's native VLAN is untagged; these are announced tagged too (a trunk port's VLANs, where the guest's VLAN interfaces share its MAC). */
  trunk?: number[];
  /** Into the switch, as if the guest sent it. */
  send: (frame: Buffer) => void;
}

export class Announcer {
  /** Announcements started, requests that joined a running one, frames sent. */
  readonly stats = { announcements: 0, joined: 0, frames: 0, lastAt: 0 };
  private timers: NodeJS.Timeout[] = [];
  private readonly frames: Buffer[];

  constructor(private readonly o: AnnouncerOptions) {
    this.frames = [rarpFrame(o.mac), ...(o.trunk ?? []).map((v) => rarpFrame(o.mac, v))];
  }

  get running(): boolean {
    return this.timers.length > 0;
  }

  announce(): void {
    if (this.running) {
      this.stats.joined++;
      return;
    }
    this.stats.announcements++;
    for (const [i, ms] of ANNOUNCE_SCHEDULE_MS.entries()) {
      const last = i === ANNOUNCE_SCHEDULE_MS.length - 1;
      if (ms === 0) this.burst();
      else {
        const t = setTimeout(() => {
          this.burst();
          if (last) this.timers = [];
        }, ms);
        t.unref();
        this.timers.push(t);
      }
    }
  }

  private burst(): void {
    for (const f of this.frames) {
      this.stats.frames++;
      this.o.send(Buffer.from(f)); // a copy: a receiver may keep it
    }
    this.stats.lastAt = Date.now();
  }

  /** The port goes away: no more frames. */
  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
  }
}
