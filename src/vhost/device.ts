// What a vhost-user device (blk, net, ...) provides to the generic back-end.
// The protocol, memory, rings, inflight tracking and dirty logging live in
// this folder; a device only describes itself and handles requests.
import type { Vring } from './vring.js';

export interface VhostUserDevice {
  /** Short name for logs ("blk", "net"). */
  readonly name: string;
  /** Number of virtqueues the device offers (GET_QUEUE_NUM). */
  readonly numQueues: number;
  /** Device-specific virtio feature bits (the layer adds VERSION_1, INDIRECT_DESC, EVENT_IDX, LOG_ALL). */
  readonly features: bigint;
  /** Extra protocol features the device supports (e.g. CONFIG). */
  readonly protocolFeatures: bigint;
  /** Read `size` bytes of the virtio config space at `offset`. */
  getConfig(offset: number, size: number): Buffer;
  /** Write the config space; return false to refuse. */
  setConfig?(offset: number, data: Buffer): boolean;
  /** The driver's accepted feature set (SET_FEATURES). */
  ackFeatures?(features: bigint): void;
  /**
   * The ring has work: take requests with `ring.pop()` until it returns
   * null, and give each back (possibly later, in any order) with
   * `ring.complete(chain, bytesWritten)`. Must not throw for guest faults.
   */
  processQueue(ring: Vring): void;
  /**
   * SEND_RARP (offered with PF.RARP): a live migration finished and the
   * guest did not negotiate VIRTIO_NET_F_GUEST_ANNOUNCE, so the back-end
   * announces `mac` (6 bytes) on the network. Throw to refuse (bad MAC).
   */
  sendRarp?(mac: Buffer): void;
  /** The front-end went away or reset the device. */
  reset?(): void;
}
