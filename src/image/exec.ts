// Running the host tools the image builder needs (apt-get, apt-cache,
// dpkg-deb, cpio, zstd, xz, depmod), with errors that say what to do.
import { spawn } from 'node:child_process';
import { XvmError } from '../common/errors.js';

export const INSTALL_HINT = 'run scripts/install-deps.sh';

export interface RunResult {
  stdout: Buffer;
  stderr: string;
  code: number;
}

export interface RunOptions {
  cwd?: string;
  /** Bytes written to the child's stdin, then closed. */
  input?: Buffer | string;
  /** Give up (SIGKILL) after this many ms. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/**
 * Runs a command to completion. A missing program becomes XvmError
 * 'unavailable' ("run scripts/install-deps.sh"); a non-zero exit does not
 * throw (callers decide), see runOk.
 */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? { ...process.env, LC_ALL: 'C' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    if (opts.timeoutMs) {
      timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, opts.timeoutMs);
    }
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      if (e.code === 'ENOENT') {
        reject(new XvmError('unavailable', `${cmd} not found: ${INSTALL_HINT}`));
      } else {
        reject(new XvmError('internal', `cannot run ${cmd}: ${e.message}`));
      }
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (timedOut) {
        reject(new XvmError('timeout', `${cmd} ${args.join(' ')} took longer than ${opts.timeoutMs} ms`));
        return;
      }
      resolve({
        stdout: Buffer.concat(out),
        stderr: Buffer.concat(err).toString('utf8'),
        code: code ?? (signal ? 128 : 1),
      });
    });
    child.stdin.on('error', () => {
      /* child exited before reading all input; reported by its exit code */
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** Like run, but a non-zero exit throws XvmError with the command's stderr. */
export async function runOk(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    const msg = r.stderr.trim().split('\n').slice(-5).join('\n');
    throw new XvmError('internal', `${cmd} ${args.join(' ')} failed (exit ${r.code})${msg ? `: ${msg}` : ''}`);
  }
  return r;
}
