// What every CLI verb shares: the API client, output in tables or JSON, and
// turning failures into messages and exit codes (0 ok, 1 failure, 2 usage).
import { ApiError, XvmClient } from '../api/client.js';

export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

export interface GlobalOptions {
  verbose?: boolean;
}

let globals: GlobalOptions = {};
export function setGlobals(g: GlobalOptions): void {
  globals = g;
}

export function client(): XvmClient {
  return new XvmClient({
    onRequest: globals.verbose
      ? (method, path, status, ms) => process.stderr.write(`[api] ${method} ${path} -> ${status} (${ms} ms)\n`)
      : undefined,
  });
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Left-aligns text columns and right-aligns the ones listed in `right`. */
export function table(headers: string[], rows: (string | number)[][], right: number[] = []): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return (
    cells
      .map((r) => r.map((c, i) => (right.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd())
      .join('\n') + '\n'
  );
}

export function keyValues(pairs: [string, string | number | null | undefined][]): string {
  const w = Math.max(...pairs.map(([k]) => k.length)) + 1;
  return pairs.map(([k, v]) => `${(k + ':').padEnd(w + 1)}${v ?? '-'}`).join('\n') + '\n';
}

/** Wraps an action: ApiError/CliError become one line on stderr and exit code 1 (or 2). */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      if (e instanceof CliError) {
        process.stderr.write(`xvm: ${e.message}\n`);
        process.exit(e.exitCode);
      }
      if (e instanceof ApiError) {
        process.stderr.write(`xvm: ${e.message}\n`);
        process.exit(1);
      }
      process.stderr.write(`xvm: ${(e as Error).stack ?? e}\n`);
      process.exit(1);
    }
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
