// Open a disk image for the backend. Raw regular files get RawFileImage
// (vectored, zero-copy); block devices and qcow2 go through the storage
// layer's images.
import fs from 'node:fs';
import type { BlockImage } from '../../storage/image.js';
import { openImage as openStorageImage, probeFormat } from '../../storage/open.js';
import { RawFileImage } from './raw-file.js';

export async function openImage(path: string, opts: { format?: 'raw' | 'qcow2'; readOnly?: boolean } = {}): Promise<BlockImage> {
  const format = opts.format ?? probeFormat(path);
  if (format === 'raw' && fs.statSync(path).isFile()) return RawFileImage.open(path, { readOnly: opts.readOnly });
  return openStorageImage(path, { format, readOnly: opts.readOnly });
}
