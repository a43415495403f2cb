// Open a disk image for the backend. Raw files go through RawFileImage
// (vectored I/O); qcow2 through the storage layer.
import fs from 'node:fs';
import type { BlockImage } from '../../storage/image.js';
import { RawFileImage } from './raw-file.js';

const QCOW2_MAGIC = 0x514649fb;

export async function detectFormat(path: string): Promise<'raw' | 'qcow2'> {
  const fd = fs.openSync(path, 'r');
  try {
    const b = Buffer.alloc(4);
    const n = fs.readSync(fd, b, 0, 4, 0);
    return n === 4 && b.readUInt32BE(0) === QCOW2_MAGIC ? 'qcow2' : 'raw';
  } finally {
    fs.closeSync(fd);
  }
}

export async function openImage(path: string, opts: { format?: 'raw' | 'qcow2'; readOnly?: boolean } = {}): Promise<BlockImage> {
  const format = opts.format ?? (await detectFormat(path));
  if (format === 'raw') return RawFileImage.open(path, { readOnly: opts.readOnly });
  throw new Error(`${path}: qcow2 images need the storage layer's Qcow2Image (not available in this build)`);
}
