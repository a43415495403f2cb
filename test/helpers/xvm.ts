// Test harness: a private xvmd per test file (own XVM_HOME), a console
// session that collects output and waits for text, and the CLI as a user
// runs it. The default guest image is shared between test files through
// XVM_IMAGE_DIR (built once, then cached).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type WebSocket from 'ws';
import { XvmClient } from '../../src/api/client.js';
import { pidAlive } from '../../src/engine/process.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const IMAGE_DIR = process.env.XVM_IMAGE_DIR ?? path.join(REPO, '.cache', 'images');
export const XVM_BIN = path.join(REPO, 'bin', 'xvm.js');
export const XVMD_BIN = path.join(REPO, 'bin', 'xvmd.js');
export { READY_BANNER } from '../../src/image/index.js';

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

export class TestHost {
  readonly home: string;
  readonly env: NodeJS.ProcessEnv;
  readonly client: XvmClient;
  daemon: ChildProcess | undefined;

  constructor(prefix = 'xvmt') {
    // Short paths: unix socket paths are limited to 108 bytes.
    this.home = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
    this.env = { ...process.env, XVM_HOME: this.home, XVM_IMAGE_DIR: IMAGE_DIR };
    this.client = new XvmClient({ socketPath: path.join(this.home, 'run', 'xvmd.sock') });
  }

  /**
   * Starts xvmd in the foreground of a child process and waits until the API
   * answers; `netns` runs it inside that network namespace (`ip netns exec`
   * execs node: same pid), `env` adds to the host's environment.
   */
  async startDaemon(opts: { netns?: string; env?: Record<string, string> } = {}): Promise<void> {
    const out = fs.openSync(path.join(this.home, 'xvmd.test.out'), 'a');
    const argv = [process.execPath, XVMD_BIN];
    if (opts.netns) argv.unshift('ip', 'netns', 'exec', opts.netns);
    this.daemon = spawn(argv[0]!, argv.slice(1), { env: { ...this.env, ...opts.env }, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    await waitUntil(
      async () => {
        try {
          await this.client.host();
          return true;
        } catch {
          if (this.daemon?.exitCode !== null) throw new Error(`xvmd exited: ${fs.readFileSync(path.join(this.home, 'xvmd.test.out'), 'utf8')}`);
          return false;
        }
      },
      20000,
      'xvmd to answer',
    );
  }

  /** Stops xvmd (domains keep running). `kill9` simulates a crash. */
  async stopDaemon(kill9 = false): Promise<void> {
    const d = this.daemon;
    if (!d || d.exitCode !== null) return;
    const gone = new Promise((r) => d.once('exit', r));
    d.kill(kill9 ? 'SIGKILL' : 'SIGTERM');
    await gone;
    this.daemon = undefined;
  }

  /** Runs the CLI like a user does; returns exit code and output. */
  cli(args: string[], opts: { input?: string; timeoutMs?: number } = {}): { code: number; stdout: string; stderr: string } {
    const r = spawnSync(process.execPath, [XVM_BIN, ...args], {
      env: this.env,
      input: opts.input ?? '',
      encoding: 'utf8',
      timeout: opts.timeoutMs ?? 120000,
    });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  /** Runs the CLI and asserts it succeeded; returns its standard output. */
  ok(args: string[], opts: { input?: string; timeoutMs?: number } = {}): string {
    const r = this.cli(args, opts);
    if (r.code !== 0) throw new assert.AssertionError({ message: `xvm ${args.join(' ')} failed (exit ${r.code}): ${r.stderr}`, actual: r.code, expected: 0, operator: '===' });
    return r.stdout;
  }

  /**
   * Runs the CLI without blocking this process (so its websockets keep being
   * served); `onStderr` sees its standard error so far (progress) as it comes.
   */
  cliAsync(args: string[], onStderr?: (text: string) => void): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const p = spawn(process.execPath, [XVM_BIN, ...args], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d) => (stdout += d));
      p.stderr.on('data', (d) => {
        stderr += d;
        onStderr?.(stderr);
      });
      p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  }

  /** The pids of this home's switch processes (one per network with ports). */
  switchPids(): number[] {
    const dir = path.join(this.home, 'run', 'networks');
    const out: number[] = [];
    for (const n of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
      try {
        out.push(Number(fs.readFileSync(path.join(dir, n, 'switch.pid'), 'utf8')));
      } catch {
        /* not running */
      }
    }
    return out;
  }

  /** The pids of this home's disk backends (blk-*.pid of every running domain). */
  blkPids(): number[] {
    const out: number[] = [];
    const dir = path.join(this.home, 'run', 'domains');
    for (const uuid of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
      for (const f of fs.readdirSync(path.join(dir, uuid))) {
        if (/^blk-.*\.pid$/.test(f)) out.push(Number(fs.readFileSync(path.join(dir, uuid, f), 'utf8')));
      }
    }
    return out;
  }

  /** Destroys every domain, stops the daemon, kills any QEMU left, removes the home. */
  async cleanup(): Promise<void> {
    const pids: number[] = [];
    try {
      for (const d of await this.client.listDomains()) {
        if (d.pid) pids.push(d.pid);
        if (d.domid !== null) await this.client.destroy(d.name).catch(() => undefined);
      }
    } catch {
      /* daemon down */
    }
    await this.stopDaemon();
    // Anything still running from this home (e.g. after a daemon kill): end it.
    const runDir = path.join(this.home, 'run', 'domains');
    if (fs.existsSync(runDir)) {
      for (const uuid of fs.readdirSync(runDir)) {
        try {
          pids.push(Number(fs.readFileSync(path.join(runDir, uuid, 'qemu.pid'), 'utf8')));
        } catch {
          /* no pidfile */
        }
      }
    }
    for (const pid of pids) {
      if (pid && pidAlive(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    fs.rmSync(this.home, { recursive: true, force: true });
  }
}

/** A live console connection that records everything it receives. */
export class ConsoleSession {
  output = '';
  private ws: WebSocket;
  private opened: Promise<void>;

  constructor(client: XvmClient, name: string, history = 0) {
    this.ws = client.openConsole(name, { history });
    this.ws.on('message', (d: Buffer) => (this.output += d.toString('utf8')));
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
      this.ws.once('unexpected-response', (_q, res) => reject(new Error(`console refused: HTTP ${res.statusCode}`)));
    });
  }

  ready(): Promise<void> {
    return this.opened;
  }

  /** Waits until the output (after `from`) contains `text`; returns the index after it. */
  async waitFor(text: string | RegExp, timeoutMs = 60000, from = 0): Promise<number> {
    let idx = -1;
    await waitUntil(
      () => {
        const rest = this.output.slice(from);
        if (typeof text === 'string') {
          const i = rest.indexOf(text);
          if (i >= 0) idx = from + i + text.length;
        } else {
          const m = text.exec(rest);
          if (m) idx = from + m.index + m[0].length;
        }
        return idx >= 0;
      },
      timeoutMs,
      `console output ${String(text)} (got: ${JSON.stringify(this.output.slice(-300))})`,
    );
    return idx;
  }

  /** Types a command line into the guest's shell. */
  send(line: string): void {
    this.ws.send(Buffer.from(line + '\r'));
  }

  /** Runs a command in the guest and returns what it printed between two markers. */
  async run(cmd: string, timeoutMs = 30000): Promise<string> {
    const tag = Math.random().toString(36).slice(2, 8);
    const start = this.output.length;
    // The markers are built by the shell, so the echo of the typed line does not match them.
    this.send(`echo B${tag}''X; ${cmd}; echo E${tag}''X`);
    const b = await this.waitFor(`B${tag}X`, timeoutMs, start);
    const e = await this.waitFor(`E${tag}X`, timeoutMs, b);
    return this.output.slice(b, e - `E${tag}X`.length).replace(/\r/g, '').trim();
  }

  close(): void {
    this.ws.close();
  }
}

/** A loopback TCP port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}
