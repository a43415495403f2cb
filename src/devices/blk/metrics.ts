// Counters for one block device (all queues). Plain numbers: cheap to bump
// on the data path, serialised as JSON for the daemon.

export class BlkMetrics {
  readRequests = 0;
  readBytes = 0;
  writeRequests = 0;
  writeBytes = 0;
  /** Guest memory pieces (descriptors) of the reads' and writes' data: per request, how scattered guest buffers are. */
  dataSegments = 0;
  flushRequests = 0;
  discardRequests = 0;
  writeZeroesRequests = 0;
  getIdRequests = 0;
  /** Requests answered VIRTIO_BLK_S_IOERR because they were malformed or refused. */
  invalidRequests = 0;
  /** Requests answered VIRTIO_BLK_S_UNSUPP. */
  unsupportedRequests = 0;
  /** I/O that failed in the image layer. */
  ioErrors = 0;
  /** Chains without a status byte: returned with nothing written. */
  droppedRequests = 0;
  inFlight = 0;
  maxInFlight = 0;

  toJSON(): Record<string, number> {
    return { ...this } as unknown as Record<string, number>;
  }
}
