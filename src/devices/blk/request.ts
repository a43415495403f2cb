// Parse one virtio-blk request (virtio 1.1 §5.2.6) from a descriptor chain:
//
//   device-readable:  struct { le32 type; le32 reserved; le64 sector; } [+ data for writes / discard ranges]
//   device-writable:  [data for reads / get-id] + u8 status (the chain's last byte)
//
// Parsing never touches the image; it decides what to do, or which status
// to answer with when the request is malformed.
import type { DescriptorChain, Segment } from '../../vhost/index.js';

export const SECTOR = 512;
export const T_IN = 0;
export const T_OUT = 1;
export const T_FLUSH = 4;
export const T_GET_ID = 8;
export const T_GET_LIFETIME = 10;
export const T_DISCARD = 11;
export const T_WRITE_ZEROES = 13;
export const S_OK = 0;
export const S_IOERR = 1;
export const S_UNSUPP = 2;
export const ID_BYTES = 20;
const HEADER = 16;
const RANGE = 16;
const WZ_UNMAP = 1;

export interface Range {
  sector: number;
  sectors: number;
  unmap: boolean;
}

export type BlkOp =
  | { kind: 'read'; sector: number; data: Segment[]; bytes: number }
  | { kind: 'write'; sector: number; data: Segment[]; bytes: number }
  | { kind: 'flush' }
  | { kind: 'get-id'; data: Segment[] }
  | { kind: 'discard'; ranges: Range[] }
  | { kind: 'write-zeroes'; ranges: Range[] }
  /** Answer at once with this status (bad request, unsupported, read-only). */
  | { kind: 'fail'; status: number; reason: string };

export interface ParsedRequest {
  op: BlkOp;
  /** The status byte in guest memory, or null when the chain has no writable byte. */
  status: Buffer | null;
}

export interface ParseLimits {
  capacitySectors: number;
  readOnly: boolean;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
}

/** The segments covering bytes [start, start+len) of a segment list. */
export function sliceSegments(segs: readonly Segment[], start: number, len: number): Segment[] {
  const out: Segment[] = [];
  let pos = 0;
  const end = start + len;
  for (const s of segs) {
    const sEnd = pos + s.byteLength;
    if (sEnd > start && pos < end) {
      const a = Math.max(start, pos) - pos;
      const b = Math.min(end, sEnd) - pos;
      // Whole segments (a request's data pages, usually) are shared as they are.
      out.push(a === 0 && b === s.byteLength ? s : s.slice(a, b));
    }
    pos = sEnd;
    if (pos >= end) break;
  }
  return out;
}

/** Copy `len` bytes at `start` of a segment list into a fresh Buffer (headers, ranges). */
export function copyOut(segs: readonly Segment[], start: number, len: number): Buffer {
  const out = Buffer.alloc(len);
  let o = 0;
  for (const s of sliceSegments(segs, start, len)) {
    s.buf.copy(out, o);
    o += s.buf.length;
  }
  return out;
}

function fail(status: number, reason: string): BlkOp {
  return { kind: 'fail', status, reason };
}

export function parseRequest(chain: DescriptorChain, lim: ParseLimits): ParsedRequest {
  let status: Buffer | null = null;
  if (chain.writable.length > 0) {
    const last = chain.writable[chain.writable.length - 1];
    status = last.slice(last.byteLength - 1, last.byteLength).buf;
  }
  if (chain.error !== undefined) return { op: fail(S_IOERR, `malformed chain: ${chain.error}`), status };
  if (status === null) return { op: fail(S_IOERR, 'no device-writable status byte'), status };
  if (chain.readableLen < HEADER) return { op: fail(S_IOERR, `request header is ${chain.readableLen} bytes, need 16`), status };
  const hdr = copyOut(chain.readable, 0, HEADER);
  const type = hdr.readUInt32LE(0);
  const sectorHi = hdr.readUInt32LE(12);
  const sector = sectorHi >= 0x200000 ? Number.MAX_SAFE_INTEGER : sectorHi * 0x100000000 + hdr.readUInt32LE(8);
  const extraIn = chain.readableLen - HEADER; // driver → device bytes after the header
  const dataOut = chain.writableLen - 1; // device → driver bytes before the status

  const inRange = (s: number, bytes: number): boolean => s <= lim.capacitySectors && bytes / SECTOR <= lim.capacitySectors - s;

  switch (type) {
    case T_IN: {
      if (extraIn !== 0) return { op: fail(S_IOERR, 'read request carries device-readable data'), status };
      if (dataOut % SECTOR !== 0) return { op: fail(S_IOERR, `read of ${dataOut} bytes is not a multiple of 512`), status };
      if (!inRange(sector, dataOut)) return { op: fail(S_IOERR, `read beyond the end of the disk (sector ${sector})`), status };
      return { op: { kind: 'read', sector, data: sliceSegments(chain.writable, 0, dataOut), bytes: dataOut }, status };
    }
    case T_OUT: {
      if (lim.readOnly) return { op: fail(S_IOERR, 'write to a read-only disk'), status };
      if (dataOut !== 0) return { op: fail(S_IOERR, 'write request carries device-writable data'), status };
      if (extraIn % SECTOR !== 0) return { op: fail(S_IOERR, `write of ${extraIn} bytes is not a multiple of 512`), status };
      if (!inRange(sector, extraIn)) return { op: fail(S_IOERR, `write beyond the end of the disk (sector ${sector})`), status };
      return { op: { kind: 'write', sector, data: sliceSegments(chain.readable, HEADER, extraIn), bytes: extraIn }, status };
    }
    case T_FLUSH:
      return { op: { kind: 'flush' }, status };
    case T_GET_ID:
      return { op: { kind: 'get-id', data: sliceSegments(chain.writable, 0, Math.min(dataOut, ID_BYTES)) }, status };
    case T_DISCARD:
    case T_WRITE_ZEROES: {
      const discard = type === T_DISCARD;
      if (lim.readOnly) return { op: fail(S_IOERR, `${discard ? 'discard' : 'write-zeroes'} on a read-only disk`), status };
      if (extraIn === 0 || extraIn % RANGE !== 0) return { op: fail(S_IOERR, `range list of ${extraIn} bytes`), status };
      const n = extraIn / RANGE;
      const maxSeg = discard ? lim.maxDiscardSeg : lim.maxWriteZeroesSeg;
      const maxSectors = discard ? lim.maxDiscardSectors : lim.maxWriteZeroesSectors;
      if (n > maxSeg) return { op: fail(S_UNSUPP, `${n} ranges > ${maxSeg}`), status };
      const raw = copyOut(chain.readable, HEADER, extraIn);
      const ranges: Range[] = [];
      for (let i = 0; i < n; i++) {
        const o = i * RANGE;
        const hi = raw.readUInt32LE(o + 4);
        const s = hi >= 0x200000 ? Number.MAX_SAFE_INTEGER : hi * 0x100000000 + raw.readUInt32LE(o);
        const count = raw.readUInt32LE(o + 8);
        const flags = raw.readUInt32LE(o + 12);
        if (discard && flags !== 0) return { op: fail(S_UNSUPP, `discard with flags 0x${flags.toString(16)}`), status };
        if (!discard && (flags & ~WZ_UNMAP) !== 0) return { op: fail(S_UNSUPP, `write-zeroes with reserved flags 0x${flags.toString(16)}`), status };
        if (count > maxSectors) return { op: fail(S_IOERR, `range of ${count} sectors > ${maxSectors}`), status };
        if (!inRange(s, count * SECTOR)) return { op: fail(S_IOERR, `range beyond the end of the disk (sector ${s})`), status };
        ranges.push({ sector: s, sectors: count, unmap: (flags & WZ_UNMAP) !== 0 });
      }
      return { op: discard ? { kind: 'discard', ranges } : { kind: 'write-zeroes', ranges }, status };
    }
    default:
      return { op: fail(S_UNSUPP, `request type ${type}`), status };
  }
}
