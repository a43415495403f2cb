// Facts about a QEMU process we may not be the parent of (after an xvmd
// restart the domain's QEMU is adopted, not spawned).
import fs from 'node:fs';
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
