// Open any image by format (given or probed), and the backing-chain opener
// that qcow2 uses for its backing files.
import fs from 'node:fs';
import { BlockImage, ImageError } from './image.js';
import { RawImage } from './raw.js';
import { Qcow2Image, setBackingOpener } from './qcow2.js';
import { QCOW2_MAGIC } from './qcow2-format.js';

export type ImageFormat = 'raw' | 'qcow2';

export interface OpenImageOptions {
  readOnly?: boolean;
  /** Skip probing. Probing a file that should be raw is unsafe when a guest wrote it (it may contain a qcow2 header). */
  format?: ImageFormat;
  /** qcow2: scan metadata on read-write open (default true). */
  check?: boolean;
  /** Page-cache I/O on the calling thread (see FileIo in io.ts): only for the block backend's own process. */
  inlineIo?: boolean;
}

/** 'qcow2' if the file starts with the qcow2 magic, else 'raw'. */
export function probeFormat(file: string): ImageFormat {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw new ImageError(`cannot open ${file}: ${(err as Error).message}`);
  }
  try {
    const b = Buffer.alloc(4);
    const n = fs.readSync(fd, b, 0, 4, 0);
    return n === 4 && b.readUInt32BE(0) === QCOW2_MAGIC ? 'qcow2' : 'raw';
  } finally {
    fs.closeSync(fd);
  }
}

export async function openImage(file: string, opts: OpenImageOptions = {}): Promise<RawImage | Qcow2Image> {
  const format = opts.format ?? probeFormat(file);
  if (format === 'raw') return RawImage.open(file, { readOnly: opts.readOnly, inlineIo: opts.inlineIo });
  if (format === 'qcow2') return Qcow2Image.open(file, { readOnly: opts.readOnly, check: opts.check, inlineIo: opts.inlineIo });
  throw new ImageError(`unknown image format ${String(format)}`);
}

setBackingOpener(async (file: string, format: string | null, chain: string[], inlineIo: boolean): Promise<BlockImage> => {
  // A backing file named in an image header must be an image file, not a
  // host device (an untrusted image could otherwise read /dev/sda).
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    throw new ImageError(`backing file ${file}: ${(err as Error).message}`);
  }
  if (!st.isFile()) throw new ImageError(`backing file ${file} is not a regular file`);
  if (format !== null && format !== 'raw' && format !== 'qcow2') throw new ImageError(`unsupported backing format ${format}`);
  const fmt = (format as ImageFormat | null) ?? probeFormat(file);
  if (fmt === 'raw') return RawImage.open(file, { readOnly: true, inlineIo });
  return Qcow2Image.open(file, { readOnly: true, chain, inlineIo });
});
