// The relocation protocol's framing and authentication (TCP between two
// xvmd). Every frame: type (u8) | length (u32 BE) | payload.
//   CONTROL  JSON object (hello, auth, prepare, ready, commit, running, error)
//   DATA     bytes of QEMU's migration stream
//   END      the stream is complete
// Authentication is mutual, by a pre-shared token: the server sends a nonce,
// the client answers HMAC-SHA256(token, "client" | server nonce | client
// nonce) and its own nonce, the server proves itself with HMAC(token,
// "server" | client nonce | server nonce). Nothing but the hello is read or
// acted upon before the client's proof checks out.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type net from 'node:net';
import { XvmError } from '../common/errors.js';

export const FRAME_CONTROL = 1;
export const FRAME_DATA = 2;
export const FRAME_END = 3;
const MAX_CONTROL = 1 << 20;
const MAX_DATA = 1 << 20;

export type Frame = { type: typeof FRAME_CONTROL; msg: Record<string, unknown> } | { type: typeof FRAME_DATA; data: Buffer } | { type: typeof FRAME_END };

/** Reads frames off a socket; a malformed frame destroys the connection with a reason. */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  private queue: Frame[] = [];
  private waiting: ((f: Frame | null) => void) | undefined;
  private ended = false;
  error: Error | undefined;
  onData?: (data: Buffer) => boolean | void;

  constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => this.push(d));
    sock.on('close', () => {
      this.ended = true;
      this.wake(null);
    });
    sock.on('error', (e) => (this.error = e));
  }

  private push(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (this.buf.length >= 5) {
      const type = this.buf[0]!;
      const len = this.buf.readUInt32BE(1);
      if ((type === FRAME_CONTROL && len > MAX_CONTROL) || (type === FRAME_DATA && len > MAX_DATA) || (type === FRAME_END && len !== 0) || type < 1 || type > 3) {
        this.error = new XvmError('invalid', `bad relocation frame (type ${type}, ${len} bytes)`);
        this.sock.destroy();
        return;
      }
      if (this.buf.length < 5 + len) break;
      const payload = this.buf.subarray(5, 5 + len);
      this.buf = this.buf.subarray(5 + len);
      let f: Frame;
      if (type === FRAME_CONTROL) {
        let msg: unknown;
        try {
          msg = JSON.parse(payload.toString('utf8'));
        } catch {
          msg = undefined;
        }
        if (!msg || typeof msg !== 'object' || Array.isArray(msg)) {
          this.error = new XvmError('invalid', 'bad relocation control message');
          this.sock.destroy();
          return;
        }
        f = { type: FRAME_CONTROL, msg: msg as Record<string, unknown> };
      } else if (type === FRAME_DATA) {
        // Data goes straight to its consumer when there is one (no queueing of the stream).
        if (this.onData) {
          if (this.onData(Buffer.from(payload)) === false) this.sock.pause();
          continue;
        }
        f = { type: FRAME_DATA, data: Buffer.from(payload) };
      } else {
        f = { type: FRAME_END };
      }
      this.queue.push(f);
      this.wake(undefined);
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

function frame(type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h[0] = type;
  h.writeUInt32BE(payload.length, 1);
  return Buffer.concat([h, payload]);
}

export function sendControl(sock: net.Socket, msg: Record<string, unknown>): boolean {
  return sock.write(frame(FRAME_CONTROL, Buffer.from(JSON.stringify(msg), 'utf8')));
}
export function sendData(sock: net.Socket, data: Buffer): boolean {
  let ok = true;
  for (let off = 0; off < data.length; off += MAX_DATA) ok = sock.write(frame(FRAME_DATA, data.subarray(off, off + MAX_DATA))) && ok;
  return ok;
}
export function sendEnd(sock: net.Socket): void {
  sock.write(frame(FRAME_END, Buffer.alloc(0)));
}

export function mac(token: Buffer, role: 'client' | 'server', a: string, b: string): string {
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
