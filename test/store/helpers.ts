import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Store, serveStore, StoreClient, type StoreServer, type StoreOptions } from '../../src/store/index.js';

export function tmpDir(prefix = 'xvm-store-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface Served {
  dir: string;
  store: Store;
  server: StoreServer;
  socketPath: string;
  clients: StoreClient[];
  client(): Promise<StoreClient>;
  close(): Promise<void>;
}

/** An in-process store served on a fresh socket in a fresh temp dir. */
export async function serve(opts: Partial<StoreOptions> = {}): Promise<Served> {
  const dir = tmpDir();
  const store = await Store.open({ dataDir: path.join(dir, 'data'), ...opts });
  const socketPath = path.join(dir, 'sock');
  const server = await serveStore(store, socketPath);
  const clients: StoreClient[] = [];
  return {
    dir,
    store,
    server,
    socketPath,
    clients,
    async client() {
      const c = await StoreClient.connect(socketPath);
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) c.close();
      await server.close();
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** dist/src/store/main.js, next to this compiled test. */
export const MAIN_JS = path.resolve(here, '../../src/store/main.js');

export interface Child {
  proc: ChildProcess;
  stderr: () => string;
}

/** Start the standalone store; resolves once it listens. */
export function startStandalone(socketPath: string, dataDir: string, extra: string[] = []): Promise<Child> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [MAIN_JS, '--socket', socketPath, '--data', dataDir, ...extra], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`standalone store did not start: ${err}`));
    }, 30_000);
    proc.stderr!.on('data', (d) => (err += d));
    proc.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('listening on')) {
        clearTimeout(timer);
        resolve({ proc, stderr: () => err });
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`standalone store exited with ${code}: ${err}`));
    });
  });
}

export function waitExit(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((r) => proc.once('exit', () => r()));
}

export function collect(client: StoreClient): { events: [string, string][] } {
  const box = { events: [] as [string, string][] };
  client.on('watch', (p, t) => box.events.push([p, t]));
  return box;
}

export async function until(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
