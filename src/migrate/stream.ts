// The byte path of save / restore / migration. QEMU reads and writes the
// stream itself through fds xvmd hands it (QMP getfd): the save file after
// xvm's header, the file at the stream's offset for a restore, the stream
// connection's socket for a live migration. What is left for xvmd: hashing a
// save file as QEMU writes it (FollowHash), the fd under a Node socket
// (socketFd), and StreamSink (the old unix-socket sink; only the benchmark's
// --raw-via-sink uses it, to show what a copy through xvmd costs).
import fs from 'node:fs';
import net from 'node:net';
import crypto from 'node:crypto';
import { XvmError } from '../common/errors.js';
import { startWriteback } from '../sys/fd.js';
import { mapShared } from '../sys/mman.js';

const CHUNK = 4 << 20;

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

/**
 * Hashes a file while another process (QEMU, through a passed fd) is still
 * appending to it: reads what has landed in the page cache so far, hashes it,
 * and waits for more, until `finish(end)` says where the file ends. The
 * checksum is then ready a moment after QEMU's last write instead of a whole
 * read-back later. With `writeback`, ranges already hashed are handed to the
 * kernel's writeback (sync_file_range) so the closing fsync has less to do.
 */
export class FollowHash {
  pos: number;
  private end: number | undefined;
  private stopped = false;
  private wake: (() => void) | undefined;
  private readonly loop: Promise<void>;

  constructor(
    private readonly fd: number,
    start: number,
    private readonly hash: crypto.Hash,
    private readonly writeback = true,
  ) {
    this.pos = start;
    this.loop = this.run();
    this.loop.catch(() => undefined);
  }

  private async run(): Promise<void> {
    let flushedTo = this.pos;
    for (;;) {
      if (this.stopped) return;
      const limit = this.end ?? fs.fstatSync(this.fd).size;
      const avail = limit - this.pos;
      if (avail <= 0 || (this.end === undefined && avail < 256 << 10)) {
        if (this.end !== undefined) break;
        await new Promise<void>((r) => {
          this.wake = r;
          setTimeout(r, 5);
        });
        this.wake = undefined;
        continue;
      }
      const n = Math.min(CHUNK, avail);
      if (this.end !== undefined && fs.fstatSync(this.fd).size < this.end) throw new XvmError('internal', `the save file is shorter than the ${this.end} bytes QEMU wrote`);
      // Hash the page cache in place (mmap): no copy into xvmd.
      const m = mapShared(this.fd, n, this.pos, false);
      try {
        this.hash.update(m.buf);
      } finally {
        m.unmap();
      }
      this.pos += n;
      // Let the event loop (QMP, the API) breathe between chunks.
      await new Promise((r) => setImmediate(r));
      if (this.writeback && this.pos - flushedTo >= 8 << 20) {
        try {
          startWriteback(this.fd, flushedTo, this.pos - flushedTo);
        } catch {
          /* only a head start for fsync */
        }
        flushedTo = this.pos;
      }
    }
  }

  digest(): Buffer {
    return this.hash.digest();
  }

  /** Resolves once every byte up to `end` is hashed. */
  finish(end: number): Promise<void> {
    this.end = end;
    this.wake?.();
    return this.loop;
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }
}

/** The kernel fd under a connected Node socket (to pass to QEMU with getfd). */
export function socketFd(sock: net.Socket): number {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new XvmError('internal', 'the stream connection has no file descriptor');
  return fd;
}
