// The byte pipes between QEMU's migration stream and a save file. QEMU
// writes (`migrate uri=unix:…`) to a socket xvmd listens on, or reads
// (`migrate-incoming uri=unix:…`) from a socket QEMU listens on; xvmd sits
// in the middle so it can checksum, count and report progress.
import fs from 'node:fs';
import net from 'node:net';
import crypto from 'node:crypto';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { XvmError } from '../common/errors.js';

/** A unix socket QEMU connects to once; everything it sends lands in `fd` from `offset`, hashed into `hash`. */
export class StreamSink {
  readonly socketPath: string;
  private server: net.Server;
  private done: Promise<number>;
  bytes = 0;

  private constructor(socketPath: string, server: net.Server, done: Promise<number>) {
    this.socketPath = socketPath;
    this.server = server;
    this.done = done;
  }

  static async listen(socketPath: string, fd: number, offset: number, hash: crypto.Hash): Promise<StreamSink> {
    fs.rmSync(socketPath, { force: true });
    let sink!: StreamSink;
    let resolveDone!: (n: number) => void;
    let rejectDone!: (e: Error) => void;
    const done = new Promise<number>((res, rej) => {
      resolveDone = res;
      rejectDone = rej;
    });
    done.catch(() => undefined);
    const server = net.createServer({ allowHalfOpen: false }, (sock) => {
      server.close(); // one stream per save
      // Synchronous writes into the page cache: one 64 KiB write costs less
      // than a round trip through libuv's thread pool, and QEMU, not xvmd,
      // stays the bottleneck of the pipe.
      let pos = offset;
      let failed = false;
      sock.on('data', (chunk: Buffer) => {
        if (failed) return;
        try {
          hash.update(chunk);
          let off = 0;
          while (off < chunk.length) off += fs.writeSync(fd, chunk, off, chunk.length - off, pos + off);
          pos += chunk.length;
          sink.bytes += chunk.length;
        } catch (e) {
          failed = true;
          sock.destroy();
          rejectDone(e as Error);
        }
      });
      sock.on('end', () => {
        if (!failed) resolveDone(sink.bytes);
      });
      sock.on('error', (e) => {
        if (!failed) rejectDone(e);
        failed = true;
      });
    });
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(socketPath, () => res());
    });
    sink = new StreamSink(socketPath, server, done);
    return sink;
  }

  /** Resolves with the byte count once QEMU has closed the stream and all of it is written. */
  finished(): Promise<number> {
    return this.done;
  }

  close(): void {
    this.server.close();
    fs.rmSync(this.socketPath, { force: true });
  }
}

/** Connects to QEMU's incoming migration socket, waiting for it to appear. */
export async function connectIncoming(socketPath: string, timeoutMs = 15_000): Promise<net.Socket> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<net.Socket>((res, rej) => {
        const s = net.createConnection(socketPath);
        s.once('connect', () => res(s));
        s.once('error', rej);
      });
    } catch (e) {
      if (Date.now() > end) throw new XvmError('timeout', `QEMU did not open its incoming migration socket within ${timeoutMs / 1000} s: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Connects to QEMU's incoming socket (waiting for it to appear) and sends `length` bytes of `file` from `offset`. */
export async function feedStream(socketPath: string, file: string, offset: number, length: number, onBytes: (n: number) => void, timeoutMs = 15_000): Promise<void> {
  const sock = await connectIncoming(socketPath, timeoutMs);
  let sent = 0;
  const count = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      sent += chunk.length;
      onBytes(sent);
      cb(null, chunk);
    },
  });
  await pipeline(fs.createReadStream(file, { start: offset, end: offset + length - 1, highWaterMark: 4 << 20 }), count, sock);
}
