// The backend's control socket (--control PATH): xvmd switches a running
// disk to a snapshot's new top layer in place, without restarting the
// backend, so QEMU never reconnects (and a paused guest's disk can be
// snapshotted: QEMU 7.2 sets a vhost-user disk up again only once after a
// reconnect while paused, see docs/vhost-user.md).
//
// One JSON object per line each way, one client at a time:
//   {"op":"freeze"}                         rings held, nothing in flight, image flushed
//   {"op":"switch","image":P,"format":F}    (frozen) the image is closed, P opened in its place
//   {"op":"thaw"}                           requests flow again
//   {"op":"status"}                         {"ok":true,"image":…,"format":…,"frozen":…}
// Replies {"ok":true,…} or {"ok":false,"error":"…"}. A client that goes
// away while the disk is frozen thaws it: a dead xvmd never leaves a
// guest's disk hanging.
import fs from 'node:fs';
import net from 'node:net';

export interface ControlTarget {
  freeze(): Promise<void>;
  switchTo(image: string, format: 'raw' | 'qcow2' | undefined): Promise<void>;
  thaw(): void;
  status(): { image: string; format: string; frozen: boolean };
}

/** Longest request line accepted. */
const MAX_LINE = 64 * 1024;

export interface ControlServer {
  close(): void;
}

export function serveControl(socketPath: string, target: ControlTarget, log: (m: string) => void): Promise<ControlServer> {
  fs.rmSync(socketPath, { force: true });
  let client: net.Socket | null = null;
  const server = net.createServer((sock) => {
    if (client !== null) {
      sock.end(JSON.stringify({ ok: false, error: 'another control client is connected' }) + '\n');
      return;
    }
    client = sock;
    let buf = '';
    let chain: Promise<void> = Promise.resolve();
    const reply = (o: object) => {
      if (!sock.destroyed) sock.write(JSON.stringify(o) + '\n');
    };
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_LINE && !buf.includes('\n')) {
        reply({ ok: false, error: `request line longer than ${MAX_LINE} bytes` });
        sock.destroy();
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        // One request at a time, in order.
        chain = chain.then(() => handle(line).then(reply));
      }
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      client = null;
      void chain.then(() => {
        if (target.status().frozen) {
          log('control client went away with the disk frozen; thawing it');
          target.thaw();
        }
      });
    });
  });

  async function handle(line: string): Promise<object> {
    let req: unknown;
    try {
      req = JSON.parse(line);
    } catch {
      return { ok: false, error: 'not a JSON object' };
    }
    if (typeof req !== 'object' || req === null || Array.isArray(req)) return { ok: false, error: 'not a JSON object' };
    const r = req as Record<string, unknown>;
    try {
      switch (r.op) {
        case 'freeze':
          await target.freeze();
          return { ok: true };
        case 'switch': {
          if (typeof r.image !== 'string' || r.image === '' || r.image.includes('\0')) return { ok: false, error: 'switch: "image" must be a file path' };
          if (r.format !== undefined && r.format !== 'raw' && r.format !== 'qcow2') return { ok: false, error: 'switch: "format" must be raw or qcow2' };
          if (!target.status().frozen) return { ok: false, error: 'switch: freeze the disk first' };
          await target.switchTo(r.image, r.format as 'raw' | 'qcow2' | undefined);
          return { ok: true, ...target.status() };
        }
        case 'thaw':
          target.thaw();
          return { ok: true };
        case 'status':
          return { ok: true, ...target.status() };
        default:
          return { ok: false, error: `unknown op ${JSON.stringify(r.op)}` };
      }
    } catch (e) {
      return { ok: false, error: (e as Error).message };
    }
  }

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve({
        close() {
          server.close();
          client?.destroy();
          fs.rmSync(socketPath, { force: true });
        },
      });
    });
  });
}
