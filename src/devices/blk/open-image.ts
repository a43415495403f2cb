// Open a disk image for the backend: raw files, block devices and qcow2 all
// come from the storage layer, with inline page-cache I/O (this process does
// nothing but serve one disk; see FileIo in src/storage/io.ts).
import type { BlockImage } from '../../storage/image.js';
import { openImage as openStorageImage, probeFormat } from '../../storage/open.js';

export async function openImage(path: string, opts: { format?: 'raw' | 'qcow2'; readOnly?: boolean } = {}): Promise<BlockImage> {
  const format = opts.format ?? probeFormat(path);
  return openStorageImage(path, { format, readOnly: opts.readOnly, inlineIo: true });
}
