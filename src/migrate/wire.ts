// The relocation protocol's framing and authentication (TCP between two
// xvmd). Every frame: type (u8) | length (u32 BE) | payload.
//   CONTROL  JSON object (hello, auth, data, prepare, ready, data-ready, the
//            disk copy's blk {zero} / blk-sync / blk-ack / blk-flush,
//            commit, running, error)
//   DATA     bytes of QEMU's migration stream
//   END      the stream is complete
//   BLK      disk data of --copy-storage: vdev length (u8) | vdev (ASCII) |
//            offset (u64 BE) | the bytes; FrameReader hands it on as the
//            control message {type: "blk", vdev, off, data: Buffer}, in
//            order with the other control messages
// Authentication is mutual, by a pre-shared token: the server sends a nonce,
// the client answers HMAC-SHA256(token, "client" | server nonce | client
// nonce) and its own nonce, the server proves itself with HMAC(token,
// "server" | client nonce | server nonce). Nothing but the hello is read or
// acted upon before the client's proof checks out.
//
// Protocol 2: QEMU's stream does not go through these frames. After
// "ready" the source opens a second connection (the stream connection),
// answers its hello with {type: "data", session: <server nonce of the
// control connection>, mac: HMAC(token, "data" | this hello's nonce |
// server nonce:client nonce)}; the target hands that socket to its QEMU
// (`migrate-incoming fd:`) and says "data-ready" on the control
// connection; the source hands its end to its QEMU (`migrate fd:`). From
// then on the bytes go QEMU → TCP → QEMU as in QEMU's own migration.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type net from 'node:net';
import { XvmError } from '../common/errors.js';

export const FRAME_CONTROL = 1;
export const FRAME_DATA = 2;
export const FRAME_END = 3;
export const FRAME_BLK = 4;
const MAX_CONTROL = 1 << 20;
const MAX_DATA = 1 << 20;
/** Disk bytes in one BLK frame, at most. */
export const MAX_BLK_DATA = 1 << 20;
const MAX_BLK = MAX_BLK_DATA + 1 + 255 + 8;

export type Frame = { type: typeof FRAME_CONTROL; msg: Record<string, unknown> } | { type: typeof FRAME_DATA; data: Buffer } | { type: typeof FRAME_END };

/**
 * Reads frames off a socket; a malformed frame destroys the connection with
 * a reason. Stream data is passed through to `onData` as it arrives (slices
 * of what the socket read: no copies, no reassembly of big frames).
 */
export class FrameReader {
  private queue: Frame[] = [];
  private waiting: ((f: Frame | null) => void) | undefined;
  private ended = false;
  private hdr = Buffer.alloc(5);
  private hdrHave = 0;
  private dataLeft = 0;
  private ctrlLeft = 0;
  private ctrlType = 0;
  private ctrlParts: Buffer[] = [];
  error: Error | undefined;
  onData?: (data: Buffer) => boolean | void;

  private readonly onSockData = (d: Buffer) => this.push(d);
  private readonly onSockClose = () => {
    this.ended = true;
    this.wake(null);
  };
  private readonly onSockError = (e: Error) => (this.error = e);

  constructor(private readonly sock: net.Socket) {
    sock.on('data', this.onSockData);
    sock.on('close', this.onSockClose);
    sock.on('error', this.onSockError);
  }

  /**
   * Stops reading the socket (its fd is about to be handed to QEMU): the
   * peer sends nothing more on it until told to, so nothing is lost here.
   */
  detach(): void {
    this.sock.pause();
    this.sock.off('data', this.onSockData);
    this.sock.off('close', this.onSockClose);
    this.sock.off('error', this.onSockError);
    this.sock.on('error', () => undefined);
  }

  private bad(why: string): void {
    this.error = new XvmError('invalid', why);
    this.sock.destroy();
  }

  private push(d: Buffer): void {
    let off = 0;
    while (off < d.length && !this.sock.destroyed) {
      if (this.dataLeft > 0) {
        const n = Math.min(this.dataLeft, d.length - off);
        const piece = d.subarray(off, off + n);
        this.dataLeft -= n;
        off += n;
        if (this.onData) {
          if (this.onData(piece) === false) this.sock.pause();
        } else {
          this.queue.push({ type: FRAME_DATA, data: Buffer.from(piece) });
          this.wake(undefined);
        }
        continue;
      }
      if (this.ctrlLeft > 0) {
        const n = Math.min(this.ctrlLeft, d.length - off);
        this.ctrlParts.push(d.subarray(off, off + n));
        this.ctrlLeft -= n;
        off += n;
        if (this.ctrlLeft === 0) {
          let msg: unknown;
          const whole = Buffer.concat(this.ctrlParts);
          this.ctrlParts = [];
          if (this.ctrlType === FRAME_BLK) {
            msg = parseBlk(whole);
            if (!msg) return this.bad('bad relocation disk data frame');
          } else {
            try {
              msg = JSON.parse(whole.toString('utf8'));
            } catch {
              msg = undefined;
            }
          }
          if (!msg || typeof msg !== 'object' || Array.isArray(msg)) return this.bad('bad relocation control message');
          this.queue.push({ type: FRAME_CONTROL, msg: msg as Record<string, unknown> });
          this.wake(undefined);
        }
        continue;
      }
      const n = Math.min(5 - this.hdrHave, d.length - off);
      d.copy(this.hdr, this.hdrHave, off, off + n);
      this.hdrHave += n;
      off += n;
      if (this.hdrHave < 5) break;
      this.hdrHave = 0;
      const type = this.hdr[0]!;
      const len = this.hdr.readUInt32BE(1);
      if (type === FRAME_DATA && len > 0 && len <= MAX_DATA) this.dataLeft = len;
      else if ((type === FRAME_CONTROL && len > 0 && len <= MAX_CONTROL) || (type === FRAME_BLK && len > 9 && len <= MAX_BLK)) {
        this.ctrlLeft = len;
        this.ctrlType = type;
      }
      else if (type === FRAME_END && len === 0) {
        this.queue.push({ type: FRAME_END });
        this.wake(undefined);
      } else return this.bad(`bad relocation frame (type ${type}, ${len} bytes)`);
    }
  }

  private wake(_f: Frame | null | undefined): void {
    const w = this.waiting;
    if (!w) return;
    const next = this.queue.shift();
    if (next) {
      this.waiting = undefined;
      w(next);
    } else if (this.ended) {
      this.waiting = undefined;
      w(null);
    }
  }

  resume(): void {
    this.sock.resume();
  }

  /** The next non-data frame (null when the connection closed), within `timeoutMs`. */
  next(timeoutMs: number, what: string): Promise<Frame> {
    const f = this.queue.shift();
    if (f) return Promise.resolve(f);
    if (this.ended) return Promise.reject(new XvmError('unavailable', `the relocation peer closed the connection (waiting for ${what})${this.error ? `: ${this.error.message}` : ''}`));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting = undefined;
        reject(new XvmError('timeout', `the relocation peer did not send ${what} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.waiting = (x) => {
        clearTimeout(t);
        if (x) resolve(x);
        else reject(new XvmError('unavailable', `the relocation peer closed the connection (waiting for ${what})${this.error ? `: ${this.error.message}` : ''}`));
      };
    });
  }

  /** The next control message; an {error} from the peer becomes an XvmError. */
  async control(timeoutMs: number, what: string): Promise<Record<string, unknown>> {
    const f = await this.next(timeoutMs, what);
    if (f.type !== FRAME_CONTROL) throw new XvmError('invalid', `relocation peer sent a stream frame while ${what} was expected`);
    if (f.msg.type === 'error') throw new XvmError(((f.msg.code as string) ?? 'internal') as 'internal', `the target refused: ${String(f.msg.message ?? 'error')}`);
    return f.msg;
  }
}

function frameHeader(type: number, len: number): Buffer {
  const h = Buffer.alloc(5);
  h[0] = type;
  h.writeUInt32BE(len, 1);
  return h;
}

function frame(type: number, payload: Buffer): Buffer {
  return Buffer.concat([frameHeader(type, payload.length), payload]);
}

export function sendControl(sock: net.Socket, msg: Record<string, unknown>): boolean {
  return sock.write(frame(FRAME_CONTROL, Buffer.from(JSON.stringify(msg), 'utf8')));
}
function parseBlk(b: Buffer): Record<string, unknown> | undefined {
  const n = b[0]!;
  if (n === 0 || b.length < 1 + n + 8) return undefined;
  const off = b.readBigUInt64BE(1 + n);
  if (off > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return { type: 'blk', vdev: b.toString('latin1', 1, 1 + n), off: Number(off), data: b.subarray(1 + n + 8) };
}

/** Disk data as a BLK frame (no base64); the bytes are written as they are, not copied. */
export function sendBlk(sock: net.Socket, vdev: string, off: number, data: Buffer): boolean {
  const name = Buffer.from(vdev, 'latin1');
  if (name.length === 0 || name.length > 255 || data.length === 0 || data.length > MAX_BLK_DATA) throw new XvmError('internal', 'bad disk data frame');
  const meta = Buffer.alloc(1 + name.length + 8);
  meta[0] = name.length;
  name.copy(meta, 1);
  meta.writeBigUInt64BE(BigInt(off), 1 + name.length);
  sock.write(Buffer.concat([frameHeader(FRAME_BLK, meta.length + data.length), meta]));
  return sock.write(data);
}

/** The relocation protocol this xvm speaks (the hello's `protocol`). */
export const RELOCATION_PROTOCOL = 2;

/** Header and payload written separately: the stream's bytes are not copied. */
export function sendData(sock: net.Socket, data: Buffer): boolean {
  let ok = true;
  for (let off = 0; off < data.length; off += MAX_DATA) {
    const piece = data.subarray(off, off + MAX_DATA);
    sock.write(frameHeader(FRAME_DATA, piece.length));
    ok = sock.write(piece) && ok;
  }
  return ok;
}
export function sendEnd(sock: net.Socket): void {
  sock.write(frame(FRAME_END, Buffer.alloc(0)));
}

export function mac(token: Buffer, role: 'client' | 'server' | 'data', a: string, b: string): string {
  return crypto.createHmac('sha256', token).update(`xvm-relocation ${role} ${a} ${b}`).digest('hex');
}

export function macEqual(a: unknown, b: string): boolean {
  if (typeof a !== 'string' || a.length !== b.length) return false;
  return crypto.timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

/** The pre-shared token: at least 16 bytes of a file only its owner can read. */
export function readToken(file: string): Buffer {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new XvmError('invalid', `relocation token file ${file} does not exist (put a shared secret of 16+ characters in it, mode 0600, on both hosts)`);
  }
  if ((st.mode & 0o077) !== 0) throw new XvmError('invalid', `relocation token file ${file} is readable by others (chmod 600 it)`);
  const t = fs.readFileSync(file, 'utf8').trim();
  if (t.length < 16) throw new XvmError('invalid', `relocation token in ${file} is shorter than 16 characters`);
  return Buffer.from(t, 'utf8');
}
