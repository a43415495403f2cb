// xs_wire framing: a 16-byte little-endian header { type, req_id, tx_id, len }
// followed by `len` payload bytes, len ≤ 4096 (XENSTORE_PAYLOAD_MAX).
import { StoreError } from './errors.js';

export const XS = {
  CONTROL: 0,
  DIRECTORY: 1,
  READ: 2,
  GET_PERMS: 3,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  INTRODUCE: 8,
  RELEASE: 9,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  SET_PERMS: 14,
  WATCH_EVENT: 15,
  ERROR: 16,
  IS_DOMAIN_INTRODUCED: 17,
  RESUME: 18,
  SET_TARGET: 19,
  RESTRICT: 20,
  RESET_WATCHES: 21,
  DIRECTORY_PART: 22,
} as const;

export type XsType = (typeof XS)[keyof typeof XS];

export const XS_NAMES: Record<number, string> = Object.fromEntries(Object.entries(XS).map(([k, v]) => [v, k]));

export const HEADER_SIZE = 16;
export const PAYLOAD_MAX = 4096;

export interface Message {
  type: number;
  reqId: number;
  txId: number;
  payload: Buffer;
}

export function encodeMessage(type: number, reqId: number, txId: number, payload: Buffer): Buffer {
  const b = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  b.writeUInt32LE(type >>> 0, 0);
  b.writeUInt32LE(reqId >>> 0, 4);
  b.writeUInt32LE(txId >>> 0, 8);
  b.writeUInt32LE(payload.length, 12);
  payload.copy(b, HEADER_SIZE);
  return b;
}

/**
 * NUL-terminate each string and concatenate. The server speaks latin1 (one
 * char per byte, so tokens and paths round-trip byte for byte); the client
 * uses utf8.
 */
export function encodeStrings(parts: readonly string[], enc: BufferEncoding = 'latin1'): Buffer {
  let n = 0;
  for (const p of parts) n += Buffer.byteLength(p, enc) + 1;
  const b = Buffer.allocUnsafe(n);
  let off = 0;
  for (const p of parts) {
    off += b.write(p, off, enc);
    b[off++] = 0;
  }
  return b;
}

export class FrameError extends Error {}

/**
 * Splits a byte stream into messages. Throws FrameError for a header whose
 * length is past the limit: the connection must then be dropped (as Xen does).
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly maxPayload = PAYLOAD_MAX) {}

  push(chunk: Buffer): Message[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Message[] = [];
    let off = 0;
    while (this.buf.length - off >= HEADER_SIZE) {
      const len = this.buf.readUInt32LE(off + 12);
      if (len > this.maxPayload) throw new FrameError(`payload length ${len} is over the ${this.maxPayload}-byte limit`);
      if (this.buf.length - off < HEADER_SIZE + len) break;
      out.push({
        type: this.buf.readUInt32LE(off),
        reqId: this.buf.readUInt32LE(off + 4),
        txId: this.buf.readUInt32LE(off + 8),
        payload: this.buf.subarray(off + HEADER_SIZE, off + HEADER_SIZE + len),
      });
      off += HEADER_SIZE + len;
    }
    this.buf = off === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(off);
    return out;
  }

  /** Bytes of an incomplete message held back. */
  get pending(): number {
    return this.buf.length;
  }
}

// ---- payload parsing (requests) ----------------------------------------

/** Exactly one NUL-terminated string. */
export function oneArg(p: Buffer): string {
  if (p.length === 0 || p[p.length - 1] !== 0) throw new StoreError('EINVAL', 'argument is not NUL-terminated');
  const i = p.indexOf(0);
  if (i !== p.length - 1) throw new StoreError('EINVAL', 'more than one argument');
  return p.toString('latin1', 0, i);
}

/** NUL-separated strings; the payload must end with a NUL. */
export function manyArgs(p: Buffer, min: number): string[] {
  if (p.length === 0 || p[p.length - 1] !== 0) throw new StoreError('EINVAL', 'arguments are not NUL-terminated');
  const parts = p.toString('latin1', 0, p.length - 1).split('\0');
  if (parts.length < min) throw new StoreError('EINVAL', `expected at least ${min} arguments`);
  return parts;
}

/** WRITE: <path>|<value|> — the value is the rest, may hold NULs. */
export function pathAndValue(p: Buffer): { path: string; value: Buffer } {
  const i = p.indexOf(0);
  if (i < 0) throw new StoreError('EINVAL', 'WRITE without a NUL after the path');
  return { path: p.toString('latin1', 0, i), value: Buffer.from(p.subarray(i + 1)) };
}

export function parseDomid(s: string): number {
  if (!/^\d{1,5}$/.test(s)) throw new StoreError('EINVAL', `bad domain id ${JSON.stringify(s.slice(0, 20))}`);
  const n = Number(s);
  if (n > 65535) throw new StoreError('EINVAL', `domain id ${n} out of range`);
  return n;
}
