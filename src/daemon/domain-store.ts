// Persistence of domain definitions and their last known status, as small
// JSON files written atomically (write to a temp file, fsync, rename).
// The store issue replaces this with the xenstore-compatible store.
import fs from 'node:fs';
import path from 'node:path';
import type { DomainConfig } from '../config/index.js';

export type DomainState = 'defined' | 'running' | 'paused' | 'shutdown' | 'crashed';

export interface DomainStatus {
  state: DomainState;
  /** Why the domain last stopped, in words a user understands. */
  lastExit?: { reason: string; at: string };
}

export interface DomainRecord {
  config: DomainConfig & { uuid: string };
  createdAt: string;
  status: DomainStatus;
}

export function writeFileAtomic(file: string, data: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

export class DomainStore {
  readonly dir: string;
  constructor(libDir: string) {
    this.dir = path.join(libDir, 'domains');
    fs.mkdirSync(this.dir, { recursive: true });
  }

  private file(uuid: string): string {
    return path.join(this.dir, `${uuid}.json`);
  }

  loadAll(): { records: DomainRecord[]; errors: string[] } {
    const records: DomainRecord[] = [];
    const errors: string[] = [];
    for (const name of fs.readdirSync(this.dir).sort()) {
      if (!name.endsWith('.json')) continue;
      const file = path.join(this.dir, name);
      try {
        records.push(JSON.parse(fs.readFileSync(file, 'utf8')) as DomainRecord);
      } catch (e) {
        errors.push(`${file}: ${(e as Error).message}`);
      }
    }
    return { records, errors };
  }

  save(rec: DomainRecord): void {
    writeFileAtomic(this.file(rec.config.uuid), JSON.stringify(rec, null, 2) + '\n');
  }

  remove(uuid: string): void {
    fs.rmSync(this.file(uuid), { force: true });
  }

  /** Domain ids grow from 1 (0 is the control domain) and are never reused while the daemon's state lives. */
  nextDomid(): number {
    const file = path.join(path.dirname(this.dir), 'next-domid');
    let n = 1;
    try {
      n = Math.max(1, Number(fs.readFileSync(file, 'utf8').trim()) || 1);
    } catch {
      /* first domain */
    }
    writeFileAtomic(file, String(n + 1));
    return n;
  }
}
