// Announcing a guest that arrived by live migration (or restore): QEMU asks
// the guest's port with VHOST_USER_SEND_RARP (src/devices/net/device.ts),
// and the port sends broadcast RARP frames from the guest's MAC into the
// switch as if the guest had sent them, so the switch's MAC table, the
// uplink (TAP) and the host, trunks and other hosts learn where the guest
// is now before it sends anything itself.
//
// One frame per request, as QEMU's own qemu_announce_self sends one per
// announce round for an emulated NIC: QEMU sends SEND_RARP once per round,
// already spaced out (its defaults: 5 rounds, 0, 50, 200, 450, 800 ms —
// measured in test/migrate/migrate.test.ts). Requests that come bunched
// (QEMU holds a stopped guest's packets, its announce rounds included, until
// the guest runs, so a guest left paused after the move announces in one
// burst when it is continued) are spread out here: frames go at least
// MIN_GAP_MS apart, at most MAX_PENDING waiting.
import { rarpFrame } from './frame.js';

/** Least time between two announcement frames of one port. */
export const MIN_GAP_MS = 50;
/** Requests held back to keep the gap; more are dropped (counted). */
export const MAX_PENDING = 5;

export interface AnnouncerOptions {
  mac: number;
  /** The port's native VLAN is untagged; these are announced tagged too (a trunk port's VLANs, where the guest's VLAN interfaces share its MAC). */
  trunk?: number[];
  /** Into the switch, as if the guest sent it. */
  send: (frame: Buffer) => void;
  now?: () => number;
}

export class Announcer {
  /** Requests taken, requests dropped (too many waiting), frames sent (one per request and VLAN), when the last went. */
  readonly stats = { requests: 0, dropped: 0, frames: 0, lastAt: 0 };
  private pending = 0;
  private timer: NodeJS.Timeout | null = null;
  private last = -Infinity;
  private readonly frames: Buffer[];
  private readonly now: () => number;

  constructor(private readonly o: AnnouncerOptions) {
    this.frames = [rarpFrame(o.mac), ...(o.trunk ?? []).map((v) => rarpFrame(o.mac, v))];
    this.now = o.now ?? Date.now;
  }

  /** Frames still waiting for their turn. */
  get waiting(): number {
    return this.pending;
  }

  announce(): void {
    if (this.pending >= MAX_PENDING) {
      this.stats.dropped++;
      return;
    }
    this.stats.requests++;
    if (this.timer === null && this.now() - this.last >= MIN_GAP_MS) {
      this.burst();
      return;
    }
    this.pending++;
    this.arm();
  }

  private arm(): void {
    if (this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pending--;
      this.burst();
      if (this.pending > 0) this.arm();
    }, Math.max(0, this.last + MIN_GAP_MS - this.now()));
    this.timer.unref();
  }

  private burst(): void {
    for (const f of this.frames) {
      this.stats.frames++;
      this.o.send(Buffer.from(f)); // a copy: a receiver may keep it
    }
    this.last = this.now();
    this.stats.lastAt = Date.now();
  }

  /** The port goes away: no more frames. */
  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.pending = 0;
  }
}
