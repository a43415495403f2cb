// Save/restore of a block backend's state.
//
// Under vhost-user the virtqueue positions are QEMU's to save (it reads
// them with GET_VRING_BASE when the VM stops and migrates them itself), and
// requests in flight survive a backend restart through the inflight memfd
// that QEMU keeps. So what a block backend must carry across a save/restore
// or a migration is its configuration: which image, how it is exposed.
// Restoring means starting a backend with the same options before QEMU
// reconnects. (Stub-level: no in-memory device state beyond this exists.)
import type { BlkDeviceOptions } from './device.js';

export const BLK_STATE_VERSION = 1;

export interface BlkState {
  version: number;
  imagePath: string;
  format: 'raw' | 'qcow2';
  readOnly: boolean;
  numQueues: number;
  serial: string;
  /** Virtio features the driver accepted (for checking the destination offers them). */
  ackedFeatures: string;
}

export function saveState(opts: { imagePath: string; format: 'raw' | 'qcow2' } & Pick<BlkDeviceOptions, 'numQueues' | 'serial' | 'readOnly'>, acked: bigint): BlkState {
  return {
    version: BLK_STATE_VERSION,
    imagePath: opts.imagePath,
    format: opts.format,
    readOnly: opts.readOnly ?? false,
    numQueues: opts.numQueues,
    serial: opts.serial ?? '',
    ackedFeatures: '0x' + acked.toString(16),
  };
}

export function parseState(json: unknown): BlkState {
  const s = json as Partial<BlkState>;
  if (typeof s !== 'object' || s === null || s.version !== BLK_STATE_VERSION) throw new Error('not a block backend state (version mismatch)');
  if (typeof s.imagePath !== 'string' || (s.format !== 'raw' && s.format !== 'qcow2')) throw new Error('block backend state: bad image');
  if (!Number.isInteger(s.numQueues) || (s.numQueues as number) < 1) throw new Error('block backend state: bad queue count');
  return s as BlkState;
}
