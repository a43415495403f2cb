// ConfigError: every problem found in a domain configuration, each with the
// file, line and key it concerns, formatted one per line as
//   FILE:LINE: KEY: what is wrong (allowed: ...)
import { XvmError } from '../common/errors.js';

export interface ConfigIssue {
  file?: string;
  line?: number;
  key?: string;
  message: string;
}

export function formatIssue(i: ConfigIssue): string {
  let where = '';
  if (i.file !== undefined) where += i.file;
  if (i.line !== undefined) where += (where ? ':' : 'line ') + i.line;
  const parts: string[] = [];
  if (where) parts.push(where);
  if (i.key !== undefined && i.key !== '') parts.push(i.key);
  parts.push(i.message);
  return parts.join(': ');
}

/** At most this many issues are kept (a garbage file should not make a megabyte of errors). */
export const MAX_ISSUES = 50;

/**
 * Thrown for any invalid configuration (text, JSON, API body, disk or vif
 * string). An XvmError with code 'invalid', so the API answers 400.
 */
export class ConfigError extends XvmError {
  readonly issues: ConfigIssue[];
  constructor(issues: ConfigIssue[]) {
    let list = issues.length > 0 ? issues : [{ message: 'invalid configuration' }];
    if (list.length > MAX_ISSUES) {
      const more = list.length - MAX_ISSUES;
      list = [...list.slice(0, MAX_ISSUES), { file: list[0].file, message: `… and ${more} more problem${more === 1 ? '' : 's'}` }];
    }
    super('invalid', list.map(formatIssue).join('\n'), { issues: list });
    this.name = 'ConfigError';
    this.issues = list;
  }
}

/** Shorten a value for quoting inside an error message. */
export function show(v: unknown, max = 60): string {
  let s: string;
  if (typeof v === 'string') s = JSON.stringify(v);
  else if (v === undefined) s = 'nothing';
  else if (v === null) s = 'null';
  else if (Array.isArray(v)) s = 'a list';
  else if (typeof v === 'object') s = 'an object';
  else s = String(v);
  if (s.length > max) s = s.slice(0, max - 4) + '…' + (typeof v === 'string' ? '"' : '');
  return s;
}

/** Edit distance with transpositions (optimal string alignment); short strings only. */
export function editDistance(a: string, b: string): number {
  if (a.length > 64 || b.length > 64) return Math.max(a.length, b.length);
  const d: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    d.push(new Array<number>(b.length + 1).fill(0));
    d[i][0] = i;
  }
  for (let j = 0; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2][j - 2] + 1);
      d[i][j] = v;
    }
  }
  return d[a.length][b.length];
}

/** The closest known word to `word`, if it is close enough to be a likely typo. */
export function closest(word: string, known: readonly string[]): string | undefined {
  const w = word.toLowerCase();
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(w, k.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  const limit = Math.max(1, Math.floor(w.length / 3));
  return bestD <= limit ? best : undefined;
}
