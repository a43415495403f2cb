// Inflight I/O tracking for split virtqueues (vhost-user INFLIGHT_SHMFD).
//
// The back-end records in a memfd that QEMU keeps for it which requests it
// has taken from each queue and not yet completed. If the back-end dies,
// QEMU hands the same memfd to the next instance, which resubmits those
// requests in the order they were first taken.
//
// Layout per queue (ours: QEMU treats the buffer as opaque):
//   u64 features | u16 version | u16 desc_num | u16 last_batch_head | u16 used_idx
//   desc[desc_num]: u8 inflight | u8 pad[5] | u16 next | u64 counter
// Each queue region is rounded up to 64 bytes.

const HEADER = 16;
const ENTRY = 16;
const ALIGN = 64;
export const INFLIGHT_VERSION = 1;

export function inflightQueueBytes(queueSize: number): number {
  return Math.ceil((HEADER + ENTRY * queueSize) / ALIGN) * ALIGN;
}

export class InflightQueue {
  private counter = 0;
  constructor(
    private readonly buf: Buffer,
    readonly size: number,
  ) {
    if (buf.length < inflightQueueBytes(size)) throw new Error('inflight region too small');
    const version = buf.readUInt16LE(8);
    const num = buf.readUInt16LE(10);
    if (version !== INFLIGHT_VERSION || num !== (size & 0xffff)) {
      // Never initialised, or written for another queue size: start clean.
      buf.fill(0, 0, inflightQueueBytes(size));
      buf.writeUInt16LE(INFLIGHT_VERSION, 8);
      buf.writeUInt16LE(size & 0xffff, 10);
    }
    for (let i = 0; i < size; i++) this.counter = Math.max(this.counter, this.readCounter(i));
  }

  private readCounter(i: number): number {
    const o = HEADER + i * ENTRY + 8;
    return this.buf.readUInt32LE(o) + this.buf.readUInt32LE(o + 4) * 0x100000000;
  }

  /** A request with head descriptor `head` was taken from the available ring. */
  begin(head: number): void {
    const o = HEADER + head * ENTRY;
    const n = ++this.counter;
    this.buf.writeUInt32LE(n % 0x100000000, o + 8);
    this.buf.writeUInt32LE(Math.floor(n / 0x100000000), o + 12);
    this.buf[o] = 1;
  }

  /** A request taken by mistake went back to the available ring. */
  cancel(head: number): void {
    this.buf[HEADER + head * ENTRY] = 0;
  }

  /** Before publishing `head` in the used ring. */
  preComplete(head: number): void {
    const o = HEADER + head * ENTRY;
    this.buf.writeUInt16LE(this.buf.readUInt16LE(12), o + 6); // next = last_batch_head
    this.buf.writeUInt16LE(head, 12); // last_batch_head = head
  }

  /** After used->idx became `usedIdx`. */
  postComplete(head: number, usedIdx: number): void {
    this.buf[HEADER + head * ENTRY] = 0;
    this.buf.writeUInt16LE(usedIdx & 0xffff, 14);
  }

  /**
   * After a restart: repair the last batch if we died between publishing it
   * and clearing its flags, then list the heads still in flight, oldest first.
   * (We publish one element per batch, so the batch is one entry.)
   */
  recover(guestUsedIdx: number): number[] {
    if (this.buf.readUInt16LE(14) !== (guestUsedIdx & 0xffff)) {
      const last = this.buf.readUInt16LE(12);
      if (last < this.size) this.buf[HEADER + last * ENTRY] = 0;
      this.buf.writeUInt16LE(guestUsedIdx & 0xffff, 14);
    }
    const heads: { head: number; counter: number }[] = [];
    for (let i = 0; i < this.size; i++) {
      if (this.buf[HEADER + i * ENTRY] === 1) heads.push({ head: i, counter: this.readCounter(i) });
    }
    heads.sort((a, b) => a.counter - b.counter);
    return heads.map((h) => h.head);
  }
}
