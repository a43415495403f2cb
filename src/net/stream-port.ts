// A switch port for QEMU's emulated NICs (e1000, rtl8139): QEMU's
// `-netdev stream` backend connected to a unix socket the switch listens on.
// The stream carries each Ethernet frame as a 4-byte big-endian length and
// then the frame, both ways (QEMU's net/stream.c, the same framing as
// `-netdev socket`). QEMU 7.2 does not reconnect a stream netdev: if the
// switch process restarts, the emulated NIC loses its link until the domain
// is restarted (vhost-user ports reconnect; these cannot).
import fs from 'node:fs';
import net from 'node:net';
import type { PortSink } from './switch.js';

export const STREAM_HEADER = 4;
/** The largest length a stream frame header may carry (QEMU's NET_BUFSIZE is larger, but no NIC sends more). */
export const MAX_STREAM_FRAME = 65535;
/** Bytes queued toward QEMU before the port drops frames (a peer that stopped reading). */
export const MAX_STREAM_BACKLOG = 512 * 1024;

/**
 * Cuts a byte stream into length-prefixed frames. Holds at most one
 * incomplete frame (header + MAX_STREAM_FRAME bytes). A header with length
 * 0 or above MAX_STREAM_FRAME is an error: the stream is out of sync and
 * cannot be trusted any more, so the caller drops the connection.
 */
export class StreamDecoder {
  // One fixed buffer for the frame being assembled: a peer trickling bytes
  // costs linear copying, never re-concatenation.
  private readonly buf = Buffer.allocUnsafe(STREAM_HEADER + MAX_STREAM_FRAME);
  private have = 0;
  private need = 0;

  /**
   * Feed bytes; calls onFrame for every complete frame (the frame is valid
   * until onFrame returns); returns an error text for a bad header (then
   * stop feeding).
   */
  push(chunk: Buffer, onFrame: (frame: Buffer) => void): string | null {
    let o = 0;
    while (o < chunk.length) {
      if (this.have < STREAM_HEADER) {
        const n = Math.min(STREAM_HEADER - this.have, chunk.length - o);
        chunk.copy(this.buf, this.have, o, o + n);
        this.have += n;
        o += n;
        if (this.have < STREAM_HEADER) break;
        const len = this.buf.readUInt32BE(0);
        if (len === 0 || len > MAX_STREAM_FRAME) {
          this.have = 0;
          return `bad frame length ${len}`;
        }
        this.need = len;
      }
      const got = this.have - STREAM_HEADER;
      if (got === 0 && chunk.length - o >= this.need) {
        // The whole frame is in this chunk: no copy.
        onFrame(chunk.subarray(o, o + this.need));
        o += this.need;
        this.have = 0;
        continue;
      }
      const n = Math.min(this.need - got, chunk.length - o);
      chunk.copy(this.buf, this.have, o, o + n);
      this.have += n;
      o += n;
      if (this.have - STREAM_HEADER === this.need) {
        onFrame(this.buf.subarray(STREAM_HEADER, STREAM_HEADER + this.need));
        this.have = 0;
      }
    }
    return null;
  }

  /** Bytes of an incomplete frame held (at most STREAM_HEADER + MAX_STREAM_FRAME). */
  get pendingBytes(): number {
    return this.have;
  }
}

/** One frame as it goes on the stream: header + a copy of the frame (the switch reuses its buffers). */
export function encodeStreamFrame(frame: Buffer): Buffer {
  const out = Buffer.allocUnsafe(STREAM_HEADER + frame.length);
  out.writeUInt32BE(frame.length, 0);
  frame.copy(out, STREAM_HEADER);
  return out;
}

export interface StreamPortMetrics {
  connections: number;
  /** Connections closed because of a bad length header. */
  malformed: number;
  framesIn: number;
  framesOut: number;
  /** Frames toward QEMU dropped: not connected or backlog full. */
  dropped: number;
}

export interface StreamPortOptions {
  socketPath: string;
  /** A frame from QEMU (valid until the call returns). */
  onFrame: (frame: Buffer) => void;
  log: (msg: string) => void;
}

/** The switch side of one emulated NIC: a unix-socket server with at most one live connection. */
export class StreamPort implements PortSink {
  private server: net.Server | null = null;
  private conn: net.Socket | null = null;
  readonly metrics: StreamPortMetrics = { connections: 0, malformed: 0, framesIn: 0, framesOut: 0, dropped: 0 };

  constructor(private readonly o: StreamPortOptions) {}

  get connected(): boolean {
    return this.conn !== null;
  }

  listen(): void {
    fs.rmSync(this.o.socketPath, { force: true });
    const server = net.createServer((c) => this.onConnection(c));
    server.on('error', (e) => this.o.log(`stream socket: ${e.message}`));
    server.listen(this.o.socketPath);
    this.server = server;
  }

  private onConnection(c: net.Socket): void {
    // The newest peer is the live QEMU (a restarted domain connects again): it replaces the old one.
    if (this.conn) {
      this.o.log('stream peer replaced by a new connection');
      this.conn.destroy();
    }
    this.conn = c;
    this.metrics.connections++;
    this.o.log('front-end connected (stream)');
    const dec = new StreamDecoder();
    c.on('data', (d: Buffer) => {
      if (this.conn !== c) return;
      const err = dec.push(d, (f) => {
        this.metrics.framesIn++;
        this.o.onFrame(f);
      });
      if (err !== null) {
        this.metrics.malformed++;
        this.o.log(`stream: ${err}; connection closed`);
        c.destroy();
      }
    });
    c.on('error', () => undefined);
    c.on('close', () => {
      if (this.conn === c) {
        this.conn = null;
        this.o.log('front-end disconnected (stream)');
      }
    });
  }

  deliver(frame: Buffer): boolean {
    const c = this.conn;
    if (c === null || c.writableLength > MAX_STREAM_BACKLOG) {
      this.metrics.dropped++;
      return false;
    }
    c.write(encodeStreamFrame(frame));
    this.metrics.framesOut++;
    return true;
  }

  async close(): Promise<void> {
    this.conn?.destroy();
    this.conn = null;
    const s = this.server;
    this.server = null;
    if (s) await new Promise<void>((r) => s.close(() => r()));
    fs.rmSync(this.o.socketPath, { force: true });
  }
}
