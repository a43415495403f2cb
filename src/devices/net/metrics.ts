// Counters for one virtio-net port. Plain numbers: cheap on the data path.

export class NetMetrics {
  /** Frames the guest sent (taken from its transmit queue and handed to the switch). */
  txFrames = 0;
  txBytes = 0;
  /** Of txFrames: TCP/IPv4 segmentation offload super-frames. */
  txGso = 0;
  /** Transmit chains refused: malformed, no room for the header, writable buffers. */
  txMalformed = 0;
  /** Frames shorter than an Ethernet header. */
  txRunt = 0;
  /** Frames longer than the largest frame accepted. */
  txOversize = 0;
  /** Frames put in the guest's receive queue. */
  rxFrames = 0;
  rxBytes = 0;
  /** Receive buffers used (more than rxFrames with mergeable buffers). */
  rxBuffers = 0;
  /** Frames waiting because the guest had posted no receive buffers. */
  rxQueued = 0;
  /** Frames dropped: the guest posts no receive buffers, its queue is full, or it is not running. */
  rxDropped = 0;
  /** Receive chains that were malformed or had no writable room (given back empty). */
  rxBadChains = 0;
  /** SEND_RARP requests from QEMU after a migration (each one an announcement), and those refused (not this port's MAC). */
  rarpRequests = 0;
  rarpRefused = 0;

  toJSON(): Record<string, number> {
    return { ...this } as unknown as Record<string, number>;
  }
}
