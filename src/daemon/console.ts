// The console service of one domain: every byte of the serial console from
// the first instruction on goes to a size-bounded, rotated log and to any
// number of live clients (CLI, websocket). Input from any client goes to the
// guest.
//
// QEMU's serial is a pipe chardev on two FIFOs that QEMU opens read-write, so
// the pipes never break: while xvmd is away (restart), output waits in the
// pipe and is read — and logged — when xvmd re-adopts the domain.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import { mkfifo } from '../sys/fifo.js';

export interface ConsoleLogOptions {
  /** Rotate the log when it reaches this many bytes. */
  maxBytes: number;
  /** How many rotated files to keep besides the current one. */
  keep: number;
}

export const DEFAULT_CONSOLE_LOG: ConsoleLogOptions = { maxBytes: 1 << 20, keep: 4 };

/** Bytes kept in memory for clients that ask for recent history. */
const RING_BYTES = 256 * 1024;

export function makeFifo(file: string): void {
  try {
    const st = fs.statSync(file);
    if (st.isFIFO()) return;
    fs.rmSync(file);
  } catch {
    /* does not exist */
  }
  mkfifo(file, 0o600);
}

export class ConsoleService extends EventEmitter {
  readonly logFile: string;
  private readonly opts: ConsoleLogOptions;
  private logFd: number | undefined;
  private logSize = 0;
  private ring: Buffer[] = [];
  private ringBytes = 0;
  private out: net.Socket | undefined;
  private in: net.Socket | undefined;
  /** Total bytes seen since the daemon started serving this console. */
  bytesSeen = 0;

  constructor(logFile: string, opts: ConsoleLogOptions = DEFAULT_CONSOLE_LOG) {
    super();
    this.setMaxListeners(0);
    this.logFile = logFile;
    this.opts = opts;
    fs.mkdirSync(path.dirname(logFile), { recursive: true });
  }

  /** Starts reading the guest's output FIFO (before QEMU starts: nothing is missed). */
  attach(consoleOut: string): void {
    this.detach();
    // O_RDWR on a FIFO never sees EOF when the writer goes and never blocks
    // on open: safe before QEMU starts and after it exits.
    const outFd = fs.openSync(consoleOut, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    this.out = new net.Socket({ fd: outFd, readable: true, writable: false });
    this.out.on('data', (chunk: Buffer) => this.onOutput(chunk));
    this.out.on('error', () => undefined);
  }

  /** Opens the guest's input FIFO, once QEMU (its reader) is up. */
  attachInput(consoleIn: string): void {
    this.in?.destroy();
    // Write-only: xvmd must never be a reader of the guest's input.
    const inFd = fs.openSync(consoleIn, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    this.in = new net.Socket({ fd: inFd, readable: false, writable: true });
    this.in.on('error', () => undefined);
  }

  detach(): void {
    this.out?.destroy();
    this.in?.destroy();
    this.out = undefined;
    this.in = undefined;
  }

  get attached(): boolean {
    return this.out !== undefined;
  }

  /** Sends bytes to the guest's serial input. */
  write(data: Buffer | string): boolean {
    if (!this.in) return false;
    this.in.write(data);
    return true;
  }

  /** Records a line in the log that did not come from the guest (e.g. "domain started"). */
  mark(text: string): void {
    this.onOutput(Buffer.from(`\r\n[xvm] ${text}\r\n`));
  }

  private onOutput(chunk: Buffer): void {
    this.bytesSeen += chunk.length;
    this.appendLog(chunk);
    this.ring.push(chunk);
    this.ringBytes += chunk.length;
    while (this.ringBytes - this.ring[0]!.length >= RING_BYTES) {
      this.ringBytes -= this.ring.shift()!.length;
    }
    this.emit('data', chunk);
  }

  private openLog(): void {
    this.logFd = fs.openSync(this.logFile, 'a', 0o640);
    this.logSize = fs.fstatSync(this.logFd).size;
  }

  private appendLog(chunk: Buffer): void {
    if (this.logFd === undefined) this.openLog();
    if (this.logSize > 0 && this.logSize + chunk.length > this.opts.maxBytes) this.rotate();
    // Synchronous write: once it returns the bytes are in the kernel, so a
    // crash of xvmd right after loses nothing.
    fs.writeSync(this.logFd!, chunk);
    this.logSize += chunk.length;
  }

  private rotate(): void {
    if (this.logFd !== undefined) fs.closeSync(this.logFd);
    this.logFd = undefined;
    const { keep } = this.opts;
    fs.rmSync(`${this.logFile}.${keep}`, { force: true });
    for (let i = keep - 1; i >= 1; i--) {
      if (fs.existsSync(`${this.logFile}.${i}`)) fs.renameSync(`${this.logFile}.${i}`, `${this.logFile}.${i + 1}`);
    }
    if (keep >= 1) fs.renameSync(this.logFile, `${this.logFile}.1`);
    else fs.rmSync(this.logFile, { force: true });
    this.openLog();
  }

  /** The last `bytes` of console output, from the log files (oldest first). */
  tail(bytes: number): Buffer {
    const parts: Buffer[] = [];
    let want = bytes;
    const files = [this.logFile];
    for (let i = 1; i <= this.opts.keep; i++) files.push(`${this.logFile}.${i}`);
    for (const file of files) {
      if (want <= 0) break;
      let fd: number;
      try {
        fd = fs.openSync(file, 'r');
      } catch {
        continue;
      }
      try {
        const size = fs.fstatSync(fd).size;
        const n = Math.min(size, want);
        const b = Buffer.alloc(n);
        fs.readSync(fd, b, 0, n, size - n);
        parts.unshift(b);
        want -= n;
      } finally {
        fs.closeSync(fd);
      }
    }
    return Buffer.concat(parts);
  }

  /** Recent output kept in memory (cheap, for new clients). */
  recent(bytes: number): Buffer {
    const all = Buffer.concat(this.ring);
    return all.subarray(Math.max(0, all.length - bytes));
  }

  close(): void {
    this.detach();
    if (this.logFd !== undefined) fs.closeSync(this.logFd);
    this.logFd = undefined;
  }
}
