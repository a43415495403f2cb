// xvmd's structured log: one JSON line per event (time, level, message and
// fields such as domain and request id), to a file under the state root and,
// when run in the foreground, to stderr.
import fs from 'node:fs';
import path from 'node:path';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export class Logger {
  private fd: number | undefined;
  private readonly min: number;
  private readonly toStderr: boolean;

  constructor(opts: { file?: string; level?: Level; stderr?: boolean }) {
    this.min = ORDER[opts.level ?? 'info'];
    this.toStderr = opts.stderr ?? false;
    if (opts.file) {
      fs.mkdirSync(path.dirname(opts.file), { recursive: true });
      this.fd = fs.openSync(opts.file, 'a', 0o640);
    }
  }

  log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
    if (ORDER[level] < this.min) return;
    const line = JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + '\n';
    if (this.fd !== undefined) fs.writeSync(this.fd, line);
    if (this.toStderr) process.stderr.write(line);
  }
  debug(msg: string, f?: Record<string, unknown>): void {
    this.log('debug', msg, f);
  }
  info(msg: string, f?: Record<string, unknown>): void {
    this.log('info', msg, f);
  }
  warn(msg: string, f?: Record<string, unknown>): void {
    this.log('warn', msg, f);
  }
  error(msg: string, f?: Record<string, unknown>): void {
    this.log('error', msg, f);
  }
}
