// The xvm save file (.xvmsave): one self-describing file per saved domain.
//
//   offset 0   "XVMSAVE\0"                       8 bytes magic
//          8   format version (u32 BE)
//         12   header length H (u32 BE, ≤ 1 MiB)
//         16   header: H bytes of UTF-8 JSON (SaveHeader)
//     16 + H   QEMU's migration stream, S bytes, exactly as QEMU wrote it
//   16 + H + S trailer, 48 bytes:
//              "XVMTAIL\0" (8) | S (u64 BE) | SHA-256 of bytes [0, 16 + H + S) (32)
//
// The stream length and the checksum go in the trailer because neither is
// known before QEMU has finished writing. A reader checks the magic and the
// version first (so a file from another format is refused with the version
// it has), then that the sizes add up (truncation), then the checksum of
// the whole (corruption) — all before anything starts.
import fs from 'node:fs';
import crypto from 'node:crypto';
import { z } from 'zod';
import { XvmError } from '../common/errors.js';

export const SAVE_MAGIC = Buffer.from('XVMSAVE\0', 'latin1');
export const TAIL_MAGIC = Buffer.from('XVMTAIL\0', 'latin1');
export const SAVE_FORMAT_VERSION = 1;
export const PREAMBLE_BYTES = 16;
export const TRAILER_BYTES = 48;
export const MAX_HEADER_BYTES = 1 << 20;

/** One disk backend of the saved domain, as it served the guest. */
export const savedDiskSchema = z.object({
  vdev: z.string(),
  image: z.string(),
  format: z.enum(['raw', 'qcow2']),
  readOnly: z.boolean(),
  vol: z.string().optional(),
});

export const saveHeaderSchema = z.object({
  xvmVersion: z.string(),
  createdAt: z.string(),
  /** The domain's configuration (validated again on restore). */
  config: z.record(z.string(), z.unknown()),
  /** running or paused when it was saved: a restore brings it back the same way. */
  state: z.enum(['running', 'paused']),
  checkpoint: z.boolean(),
  qemu: z.object({ version: z.string(), machine: z.string() }),
  memoryMiB: z.number().int().positive(),
  /** Facts of the saved run shown after a restore (the guest does not boot again). */
  run: z.object({ readyAt: z.string().nullable(), reboots: z.number().int().nonnegative(), startedAt: z.string().nullable() }),
  disks: z.array(savedDiskSchema),
});
export type SaveHeader = z.infer<typeof saveHeaderSchema>;
export type SavedDisk = z.infer<typeof savedDiskSchema>;

export function encodePreamble(header: SaveHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  if (json.length > MAX_HEADER_BYTES) throw new XvmError('invalid', `save header too large (${json.length} bytes)`);
  const pre = Buffer.alloc(PREAMBLE_BYTES);
  SAVE_MAGIC.copy(pre, 0);
  pre.writeUInt32BE(SAVE_FORMAT_VERSION, 8);
  pre.writeUInt32BE(json.length, 12);
  return Buffer.concat([pre, json]);
}

export function encodeTrailer(streamBytes: number, sha256: Buffer): Buffer {
  const t = Buffer.alloc(TRAILER_BYTES);
  TAIL_MAGIC.copy(t, 0);
  t.writeBigUInt64BE(BigInt(streamBytes), 8);
  sha256.copy(t, 16);
  return t;
}

/** What a verified save file holds, and where its QEMU stream is. */
export interface SaveFileInfo {
  file: string;
  header: SaveHeader;
  formatVersion: number;
  streamOffset: number;
  streamBytes: number;
  fileBytes: number;
  sha256: string;
}

function bad(file: string, why: string): XvmError {
  return new XvmError('invalid', `${file} is not a usable xvm save file: ${why}`);
}

/**
 * Reads and checks a save file: magic, format version, header, sizes and,
 * unless `checksum` is false, the SHA-256 of the whole. Throws XvmError
 * ('invalid') saying what is wrong; never starts anything.
 */
export async function readSaveFile(file: string, opts: { checksum?: boolean } = {}): Promise<SaveFileInfo> {
  let fd: fs.promises.FileHandle;
  try {
    fd = await fs.promises.open(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new XvmError(code === 'ENOENT' ? 'not_found' : 'invalid', `cannot open save file ${file}: ${code ?? (e as Error).message}`);
  }
  try {
    const st = await fd.stat();
    if (!st.isFile()) throw bad(file, 'it is not a regular file');
    const size = st.size;
    const pre = Buffer.alloc(PREAMBLE_BYTES);
    const { bytesRead } = await fd.read(pre, 0, PREAMBLE_BYTES, 0);
    if (bytesRead < 8 || !pre.subarray(0, 8).equals(SAVE_MAGIC)) throw bad(file, 'it does not start with the xvm save magic (XVMSAVE)');
    if (bytesRead < PREAMBLE_BYTES) throw bad(file, `truncated: ${size} bytes, shorter than the preamble`);
    const version = pre.readUInt32BE(8);
    if (version !== SAVE_FORMAT_VERSION) {
      throw new XvmError('invalid', `${file} is in xvm save format version ${version}; this xvm reads format version ${SAVE_FORMAT_VERSION} only (restore it with the xvm that wrote it)`);
    }
    const hlen = pre.readUInt32BE(12);
    if (hlen === 0 || hlen > MAX_HEADER_BYTES) throw bad(file, `header length ${hlen} is out of range (1..${MAX_HEADER_BYTES})`);
    if (size < PREAMBLE_BYTES + hlen + TRAILER_BYTES) throw bad(file, `truncated: ${size} bytes, too short for its ${hlen}-byte header and the trailer`);
    const hbuf = Buffer.alloc(hlen);
    await fd.read(hbuf, 0, hlen, PREAMBLE_BYTES);
    let headerJson: unknown;
    try {
      headerJson = JSON.parse(hbuf.toString('utf8'));
    } catch {
      throw bad(file, 'its header is not valid JSON (corrupt)');
    }
    const parsed = saveHeaderSchema.safeParse(headerJson);
    if (!parsed.success) throw bad(file, `its header is malformed (${parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || 'header'}: ${i.message}`).join('; ')})`);
    const tail = Buffer.alloc(TRAILER_BYTES);
    await fd.read(tail, 0, TRAILER_BYTES, size - TRAILER_BYTES);
    const streamOffset = PREAMBLE_BYTES + hlen;
    if (!tail.subarray(0, 8).equals(TAIL_MAGIC)) throw bad(file, 'truncated or incomplete: the trailer (XVMTAIL) is missing at its end');
    const streamBytes = Number(tail.readBigUInt64BE(8));
    if (streamOffset + streamBytes + TRAILER_BYTES !== size) {
      throw bad(file, `truncated or padded: the trailer says ${streamBytes} stream bytes, the file holds ${size - streamOffset - TRAILER_BYTES}`);
    }
    if (streamBytes === 0) throw bad(file, 'it holds no QEMU migration stream');
    const want = tail.subarray(16, 48);
    if (opts.checksum !== false) {
      const got = await hashRange(fd, 0, streamOffset + streamBytes);
      if (!got.equals(want)) throw bad(file, 'checksum mismatch (SHA-256 of its contents differs from the one recorded): the file is corrupt');
    }
    return { file, header: parsed.data, formatVersion: version, streamOffset, streamBytes, fileBytes: size, sha256: want.toString('hex') };
  } finally {
    await fd.close();
  }
}

async function hashRange(fd: fs.promises.FileHandle, start: number, end: number): Promise<Buffer> {
  // Two buffers: the next read runs (in libuv's pool) while this one is hashed.
  const h = crypto.createHash('sha256');
  const size = 4 << 20;
  const bufs = [Buffer.allocUnsafe(size), Buffer.allocUnsafe(size)];
  let pos = start;
  let i = 0;
  let pending = pos < end ? fd.read(bufs[0]!, 0, Math.min(size, end - pos), pos) : undefined;
  while (pending) {
    const { bytesRead } = await pending;
    if (bytesRead === 0) break;
    const cur = bufs[i]!;
    pos += bytesRead;
    i ^= 1;
    pending = pos < end ? fd.read(bufs[i]!, 0, Math.min(size, end - pos), pos) : undefined;
    h.update(cur.subarray(0, bytesRead));
  }
  return h.digest();
}
