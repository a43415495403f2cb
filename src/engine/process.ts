// Facts about a QEMU process we may not be the parent of (after an xvmd
// restart the domain's QEMU is adopted, not spawned).
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { processExists } from '../common/pid.js';

export function pidAlive(pid: number): boolean {
  if (!processExists(pid)) return false;
  // A zombie is not alive for our purposes.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** True when `pid` is a QEMU process started for the domain with this UUID. */
export function isDomainQemu(pid: number, uuid: string): boolean {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const i = argv.indexOf('-uuid');
    return i >= 0 && argv[i + 1] === uuid;
  } catch {
    return false;
  }
}

const CLK_TCK = 100;

/** CPU seconds (user + system) a process has used; 0 if it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After "pid (comm) ", field index 0 is state; utime/stime are fields 14/15 of stat.
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return (utime + stime) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** Resident memory of a process in KiB (VmRSS), 0 if unknown. */
export function rssKiB(pid: number): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)/m.exec(status);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export function readPidFile(file: string): number | undefined {
  try {
    const n = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** A process started in its own session, outliving xvmd, with output to a log file. */
export interface DetachedProcess {
  pid: number;
  /** Size of the log before this start: what the process printed comes after it. */
  logStart: number;
  /** 'exit code N' / 'signal S' once it has exited, else undefined. */
  exited(): string | undefined;
  /** Set when the program could not be run at all (ENOENT, EACCES). */
  spawnError(): Error | undefined;
}

/**
 * Starts `cmd` detached (own session: an xvmd restart or crash never takes it
 * down), stdout and stderr appended to `logFile` after a "starting:" line.
 */
export function spawnDetached(cmd: string, argv: string[], logFile: string): DetachedProcess {
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  const logFd = fs.openSync(logFile, 'a', 0o640);
  const logStart = fs.fstatSync(logFd).size;
  fs.writeSync(logFd, `${new Date().toISOString()} starting: ${cmd} ${argv.join(' ')}\n`);
  const child = spawn(cmd, argv, { detached: true, stdio: ['ignore', logFd, logFd] });
  fs.closeSync(logFd);
  let exited: string | undefined;
  let error: Error | undefined;
  child.on('error', (e) => (error = e));
  child.on('exit', (code, sig) => (exited = sig ? `signal ${sig}` : `exit code ${code}`));
  child.unref();
  return { pid: child.pid ?? 0, logStart, exited: () => exited, spawnError: () => error };
}

/** What a detached process wrote to its log since `offset` (at most 1 MiB; '' if unreadable). */
export function readLogFrom(file: string, offset: number): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const len = Math.max(0, Math.min(size - offset, 1 << 20));
      const b = Buffer.alloc(len);
      fs.readSync(fd, b, 0, len, offset);
      return b.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}
