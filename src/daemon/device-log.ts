// The device event log (like xVM's xpvd-event.log): one JSON line per
// device or backend created or removed, in log/devices.log under the state
// root. xvmd writes QEMU start/stop and console attach/detach; the disk and
// NIC providers add theirs with deviceEvent().
import fs from 'node:fs';
import path from 'node:path';

let fd: number | undefined;
let file: string | undefined;

/** Opens (appends to) the device log; called once by xvmd's main. */
export function openDeviceLog(logFile: string): void {
  closeDeviceLog();
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  fd = fs.openSync(logFile, 'a', 0o640);
  file = logFile;
}

export function closeDeviceLog(): void {
  if (fd !== undefined) {
    try {
      fs.closeSync(fd);
    } catch {
      /* already closed */
    }
  }
  fd = undefined;
  file = undefined;
}

/** The file device events go to, if the log is open. */
export function deviceLogFile(): string | undefined {
  return file;
}

/**
 * Records one device event, e.g. `deviceEvent('qemu-start', { domain, pid })`
 * or `deviceEvent('disk-add', { domain, device: 'xvda', backend: 'vhost-user-blk', socket })`.
 * A no-op until openDeviceLog() ran (unit tests, tools). Never throws.
 */
export function deviceEvent(kind: string, fields: Record<string, unknown> = {}): void {
  if (fd === undefined) return;
  try {
    fs.writeSync(fd, JSON.stringify({ time: new Date().toISOString(), kind, ...fields }) + '\n');
  } catch {
    /* a full disk must not take a domain operation down */
  }
}
