// A small QMP client (docs/interop/qmp-spec.txt): greeting, capabilities
// negotiation, commands matched to replies by id, asynchronous events.
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { XvmError } from '../common/errors.js';
import { sendMsg } from '../sys/socket.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  command: string;
}

export class QmpClient extends EventEmitter {
  private sock: net.Socket;
  private buf = '';
  private nextId = 1;
  private pending = new Map<string, Pending>();
  private closed = false;

  private constructor(sock: net.Socket) {
    super();
    this.sock = sock;
  }

  /** Connects and negotiates capabilities; rejects if the socket is not a QMP server. */
  static connect(socketPath: string, timeoutMs = 5000): Promise<QmpClient> {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(socketPath);
      const client = new QmpClient(sock);
      let greeted = false;
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new XvmError('timeout', `QMP at ${socketPath} did not greet within ${timeoutMs} ms`));
      }, timeoutMs);
      sock.once('error', (err) => {
        clearTimeout(timer);
        if (!greeted) reject(err);
      });
      client.once('greeting', () => {
        greeted = true;
        client
          .execute('qmp_capabilities')
          .then(() => {
            clearTimeout(timer);
            resolve(client);
          })
          .catch((e) => {
            clearTimeout(timer);
            reject(e);
          });
      });
      sock.on('data', (d) => client.onData(d));
      sock.on('close', () => client.onClose());
      sock.on('error', () => {
        /* reported through 'close' */
      });
    });
  }

  private onData(d: Buffer): void {
    this.buf += d.toString('utf8');
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.emit('greeting', msg.QMP);
      } else if ('event' in msg) {
        this.emit('event', msg as unknown as QmpEvent);
      } else if ('id' in msg) {
        const p = this.pending.get(String(msg.id));
        if (!p) continue;
        this.pending.delete(String(msg.id));
        if ('error' in msg) {
          const e = msg.error as { class?: string; desc?: string };
          p.reject(new XvmError('internal', `QEMU refused ${p.command}: ${e.desc ?? e.class ?? 'error'}`));
        } else {
          p.resolve(msg.return);
        }
      }
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) {
      p.reject(new XvmError('unavailable', `QEMU closed its monitor while ${p.command} was pending`));
    }
    this.pending.clear();
    this.emit('close');
  }

  /**
   * Resolves true when QEMU reports DEVICE_DELETED for `id` (the guest let a
   * device_del'd device go), false after `timeoutMs`. Listen before device_del.
   */
  deviceDeleted(id: string, timeoutMs: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.off('event', onEvent);
        resolve(false);
      }, timeoutMs);
      const onEvent = (ev: QmpEvent) => {
        if (ev.event === 'DEVICE_DELETED' && ev.data?.device === id) {
          clearTimeout(timer);
          this.off('event', onEvent);
          resolve(true);
        }
      };
      this.on('event', onEvent);
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 30000): Promise<T> {
    if (this.closed) {
      return Promise.reject(new XvmError('unavailable', `QEMU monitor is closed (command ${command})`));
    }
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) {
          reject(new XvmError('timeout', `QEMU did not answer ${command} within ${timeoutMs} ms`));
        }
      }, timeoutMs);
      this.pending.set(id, {
        command,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args) msg.arguments = args;
      this.sock.write(JSON.stringify(msg) + '\n');
    });
  }

  /**
   * Hands QEMU a file descriptor under `fdname` (QMP `getfd`: the fd rides
   * the command's bytes as SCM_RIGHTS). QEMU keeps its own copy; ours stays
   * open. Used for `migrate fd:NAME` / `migrate-incoming fd:NAME`.
   */
  async sendFd(fdname: string, fd: number, timeoutMs = 30000): Promise<void> {
    if (this.closed) throw new XvmError('unavailable', 'QEMU monitor is closed (command getfd)');
    const sockFd = (this.sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (typeof sockFd !== 'number' || sockFd < 0) throw new XvmError('internal', 'the QMP socket has no file descriptor to pass an fd through');
    // Our bytes must not overtake (or be overtaken by) a write libuv still queues.
    while (this.sock.writableLength > 0) await new Promise((r) => this.sock.once('drain', r));
    const id = String(this.nextId++);
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(new XvmError('timeout', `QEMU did not answer getfd within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        command: 'getfd',
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
    const line = Buffer.from(JSON.stringify({ execute: 'getfd', arguments: { fdname }, id }) + '\n');
    for (let tries = 0; ; tries++) {
      try {
        sendMsg(sockFd, line, [fd]);
        break;
      } catch (e) {
        // The socket is non-blocking (libuv's): a full send buffer is EAGAIN.
        if ((e as { code?: string }).code !== 'EAGAIN' || tries > 500) {
          this.pending.delete(id);
          throw new XvmError('internal', `cannot pass a file descriptor to QEMU: ${(e as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 2));
      }
    }
    return done;
  }

  close(): void {
    this.sock.destroy();
  }
}
