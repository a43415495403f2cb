// The two text syntaxes of a domain configuration file, each parsed into a
// plain value plus the line where every key and list element starts (so that
// schema errors can name a line):
//   - xl.cfg:  KEY = VALUE lines, # comments, 'strings', "strings", integers,
//              0x hex, true/false, [ lists, ] over several lines, optional ;
//   - JSON:    when the first non-blank character is "{"
// Both are small hand-written recursive-descent parsers with a depth limit,
// so no input can make them recurse without bound, and they only ever throw
// ConfigError.
import { ConfigError, type ConfigIssue } from './errors.js';

/** Line of each key / list element, keyed by pathKey(path). */
export type LineMap = Map<string, number>;

export function pathKey(path: readonly (string | number)[]): string {
  return JSON.stringify(path);
}

export interface ParsedText {
  value: Record<string, unknown>;
  lines: LineMap;
  /** Problems that do not stop parsing (duplicate keys). */
  issues: ConfigIssue[];
}

export const MAX_TEXT = 4 * 1024 * 1024;
const MAX_DEPTH = 32;

/** Defines an own property even for "__proto__". */
function put(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function describeChar(c: string): string {
  const code = c.codePointAt(0) ?? 0;
  if (code < 0x20 || code === 0x7f || (code >= 0x80 && code < 0xa0)) {
    return `character U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
  }
  return JSON.stringify(c);
}

export function isJsonText(text: string): boolean {
  return /^[\s\uFEFF]*\{/.test(text);
}

// ------------------------------------------------------------------ xl.cfg

class XlParser {
  private pos = 0;
  private line = 1;
  readonly lines: LineMap = new Map();
  readonly issues: ConfigIssue[] = [];

  constructor(private readonly s: string, private readonly file?: string) {}

  private fail(message: string, key?: string, line = this.line): never {
    throw new ConfigError([{ file: this.file, line, key, message }]);
  }

  /** Skip blanks and comments; newlines too when inside a list. */
  private skip(newlines: boolean): void {
    const s = this.s;
    while (this.pos < s.length) {
      const c = s[this.pos];
      if (c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v' || c === '\uFEFF') this.pos++;
      else if (c === '#') {
        while (this.pos < s.length && s[this.pos] !== '\n') this.pos++;
      } else if (c === '\n' && newlines) {
        this.pos++;
        this.line++;
      } else break;
    }
  }

  parse(): ParsedText {
    const s = this.s;
    const value: Record<string, unknown> = {};
    const keyLine = new Map<string, number>();
    for (;;) {
      this.skip(false);
      if (this.pos >= s.length) break;
      const c = s[this.pos];
      if (c === '\n') {
        this.pos++;
        this.line++;
        continue;
      }
      if (c === ';') {
        this.pos++;
        continue;
      }
      const m = /[A-Za-z_][A-Za-z0-9_]*/y;
      m.lastIndex = this.pos;
      const km = m.exec(s);
      if (!km) {
        this.fail(`expected a setting (KEY = VALUE), found ${describeChar(c)}`);
      }
      const key = km[0];
      if (key.length > 256) this.fail('key name is too long');
      const line = this.line;
      this.pos += key.length;
      this.skip(false);
      if (s[this.pos] !== '=') {
        const found = this.pos >= s.length || s[this.pos] === '\n' ? 'end of line' : describeChar(s[this.pos]);
        this.fail(`expected "=" after the key, found ${found}`, key);
      }
      this.pos++;
      this.skip(false);
      const v = this.value(key, [key], 0);
      this.skip(false);
      if (this.pos < s.length && s[this.pos] !== '\n' && s[this.pos] !== ';') {
        this.fail(`unexpected ${describeChar(s[this.pos])} after the value (one setting per line, or separate settings with ";")`, key);
      }
      const first = keyLine.get(key);
      if (first !== undefined) {
        this.issues.push({ file: this.file, line, key, message: `set twice: on line ${first} and on line ${line}` });
        continue;
      }
      keyLine.set(key, line);
      this.lines.set(pathKey([key]), line);
      put(value, key, v);
    }
    return { value, lines: this.lines, issues: this.issues };
  }

  private value(key: string, path: (string | number)[], depth: number): unknown {
    const s = this.s;
    if (this.pos >= s.length || s[this.pos] === '\n' || s[this.pos] === ';') {
      this.fail('missing value after "="', key);
    }
    const c = s[this.pos];
    if (c === '"' || c === "'") return this.string(key);
    if (c === '[') return this.list(key, path, depth);
    if (/[0-9+-]/.test(c)) return this.number(key);
    if (/[A-Za-z_]/.test(c)) {
      const m = /[A-Za-z0-9_./:-]*/y;
      m.lastIndex = this.pos;
      const word = (m.exec(s) ?? [''])[0];
      this.pos += word.length;
      if (word === 'true') return true;
      if (word === 'false') return false;
      this.fail(`unquoted word ${JSON.stringify(word.slice(0, 40))}: write strings in quotes, e.g. "${word.slice(0, 40)}" (true and false need no quotes)`, key);
    }
    this.fail(`unexpected ${describeChar(c)} where a value should be (a "string", a number, true/false or a [list])`, key);
  }

  private string(key: string): string {
    const s = this.s;
    const q = s[this.pos];
    const startLine = this.line;
    this.pos++;
    let out = '';
    for (;;) {
      if (this.pos >= s.length || s[this.pos] === '\n') {
        this.fail(`unterminated string (a string ends with ${q} on the same line)`, key, startLine);
      }
      // copy a run of ordinary characters at once (long lines stay linear)
      let end = this.pos;
      while (end < s.length && s[end] !== q && s[end] !== '\\' && s[end] !== '\n') end++;
      out += s.slice(this.pos, end);
      this.pos = end;
      if (this.pos >= s.length || s[this.pos] === '\n') continue;
      const c = s[this.pos++];
      if (c === q) return out;
      // backslash
      const e = s[this.pos];
      const map: Record<string, string> = { '\\': '\\', '"': '"', "'": "'", n: '\n', t: '\t' };
      if (e !== undefined && Object.hasOwn(map, e)) {
        out += map[e];
        this.pos++;
      } else {
        this.fail(`unknown escape \\${e === undefined || e === '\n' ? '' : e} in string (allowed: \\\\ \\" \\' \\n \\t)`, key);
      }
    }
  }

  private number(key: string): number {
    const s = this.s;
    const m = /[+-]?[0-9A-Za-z_.]*/y;
    m.lastIndex = this.pos;
    const tok = (m.exec(s) ?? [''])[0];
    this.pos += tok.length;
    const show = JSON.stringify(tok.slice(0, 40));
    let n: number;
    if (/^[+-]?0[xX][0-9a-fA-F]+$/.test(tok)) {
      const neg = tok.startsWith('-');
      n = parseInt(tok.replace(/^[+-]/, '').slice(2), 16) * (neg ? -1 : 1);
    } else if (/^[+-]?(0|[1-9][0-9]*)$/.test(tok)) {
      n = Number(tok);
    } else if (/^[+-]?0[0-9]+$/.test(tok)) {
      this.fail(`number ${show} has a leading zero (octal is not supported; write it in decimal)`, key);
    } else if (/^[+-]?[0-9]*\.[0-9]*([eE][+-]?[0-9]+)?$/.test(tok) && /[0-9]/.test(tok)) {
      this.fail(`${show} is not an integer (only whole numbers are allowed)`, key);
    } else if (/^[+-]?[0-9]+[A-Za-z]+$/.test(tok)) {
      this.fail(`${show} is not a number: write sizes with a unit as a string, e.g. "${tok}"`, key);
    } else {
      this.fail(`${show} is not a number (allowed: decimal like 512 or hex like 0x200)`, key);
    }
    if (!Number.isSafeInteger(n)) this.fail(`number ${show} is too large`, key);
    return n;
  }

  private list(key: string, path: (string | number)[], depth: number): unknown[] {
    if (depth >= MAX_DEPTH) this.fail(`lists nested too deeply (more than ${MAX_DEPTH} levels)`, key);
    const s = this.s;
    const startLine = this.line;
    this.pos++; // [
    const items: unknown[] = [];
    for (;;) {
      this.skip(true);
      if (this.pos >= s.length) this.fail(`unterminated list (the "[" on line ${startLine} has no "]")`, key, startLine);
      if (s[this.pos] === ']') {
        this.pos++;
        return items;
      }
      const itemPath = [...path, items.length];
      this.lines.set(pathKey(itemPath), this.line);
      if (s[this.pos] === ',') this.fail('empty list element (two commas in a row, or a comma after "[")', key);
      items.push(this.value(key, itemPath, depth + 1));
      this.skip(true);
      if (this.pos >= s.length) this.fail(`unterminated list (the "[" on line ${startLine} has no "]")`, key, startLine);
      const c = s[this.pos];
      if (c === ',') this.pos++;
      else if (c !== ']') this.fail(`expected "," or "]" in the list, found ${describeChar(c)}`, key);
    }
  }
}

export function parseXlText(text: string, file?: string): ParsedText {
  return new XlParser(text, file).parse();
}

// ------------------------------------------------------------------ JSON

class JsonParser {
  private pos = 0;
  private line = 1;
  readonly lines: LineMap = new Map();
  readonly issues: ConfigIssue[] = [];

  constructor(private readonly s: string, private readonly file?: string) {}

  private fail(message: string, line = this.line): never {
    throw new ConfigError([{ file: this.file, line, message: `invalid JSON: ${message}` }]);
  }

  private ws(): void {
    const s = this.s;
    while (this.pos < s.length) {
      const c = s[this.pos];
      if (c === '\n') this.line++;
      else if (c !== ' ' && c !== '\t' && c !== '\r' && !(c === '\uFEFF' && this.pos === 0)) break;
      this.pos++;
    }
  }

  private found(): string {
    return this.pos >= this.s.length ? 'end of file' : describeChar(this.s[this.pos]);
  }

  parse(): ParsedText {
    this.ws();
    if (this.s[this.pos] !== '{') this.fail('a domain configuration must be a JSON object');
    const value = this.value([], 0) as Record<string, unknown>;
    this.ws();
    if (this.pos < this.s.length) this.fail(`unexpected ${this.found()} after the end of the object`);
    return { value, lines: this.lines, issues: this.issues };
  }

  private value(path: (string | number)[], depth: number): unknown {
    if (depth > MAX_DEPTH) this.fail(`nested too deeply (more than ${MAX_DEPTH} levels)`);
    this.ws();
    const s = this.s;
    const c = s[this.pos];
    if (c === '{') return this.object(path, depth);
    if (c === '[') return this.array(path, depth);
    if (c === '"') return this.string();
    if (c === '-' || (c >= '0' && c <= '9')) return this.number();
    for (const [w, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (s.startsWith(w, this.pos)) {
        this.pos += w.length;
        return v;
      }
    }
    this.fail(`expected a value, found ${this.found()}`);
  }

  private object(path: (string | number)[], depth: number): Record<string, unknown> {
    const obj: Record<string, unknown> = {};
    const seen = new Map<string, number>();
    this.pos++; // {
    this.ws();
    if (this.s[this.pos] === '}') {
      this.pos++;
      return obj;
    }
    for (;;) {
      this.ws();
      if (this.s[this.pos] !== '"') this.fail(`expected a "key" in double quotes, found ${this.found()}`);
      const line = this.line;
      const key = this.string();
      this.ws();
      if (this.s[this.pos] !== ':') this.fail(`expected ":" after the key ${JSON.stringify(key.slice(0, 40))}, found ${this.found()}`);
      this.pos++;
      const p = [...path, key];
      const v = this.value(p, depth + 1);
      const first = seen.get(key);
      if (first !== undefined) {
        this.issues.push({ file: this.file, line, key: displayPath(p), message: `set twice: on line ${first} and on line ${line}` });
      } else {
        seen.set(key, line);
        this.lines.set(pathKey(p), line);
        put(obj, key, v);
      }
      this.ws();
      const c = this.s[this.pos];
      if (c === ',') {
        this.pos++;
        continue;
      }
      if (c === '}') {
        this.pos++;
        return obj;
      }
      this.fail(`expected "," or "}" in the object, found ${this.found()}`);
    }
  }

  private array(path: (string | number)[], depth: number): unknown[] {
    const arr: unknown[] = [];
    this.pos++; // [
    this.ws();
    if (this.s[this.pos] === ']') {
      this.pos++;
      return arr;
    }
    for (;;) {
      this.ws();
      const p = [...path, arr.length];
      this.lines.set(pathKey(p), this.line);
      arr.push(this.value(p, depth + 1));
      this.ws();
      const c = this.s[this.pos];
      if (c === ',') {
        this.pos++;
        continue;
      }
      if (c === ']') {
        this.pos++;
        return arr;
      }
      this.fail(`expected "," or "]" in the list, found ${this.found()}`);
    }
  }

  private string(): string {
    const s = this.s;
    this.pos++; // "
    let out = '';
    for (;;) {
      let end = this.pos;
      while (end < s.length && s[end] !== '"' && s[end] !== '\\' && s.charCodeAt(end) >= 0x20) end++;
      out += s.slice(this.pos, end);
      this.pos = end;
      if (this.pos >= s.length) this.fail('unterminated string');
      const c = s[this.pos];
      if (c === '"') {
        this.pos++;
        return out;
      }
      if (c !== '\\') this.fail(`${describeChar(c)} inside a string (control characters must be escaped)`);
      const e = s[this.pos + 1];
      const map: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (e !== undefined && Object.hasOwn(map, e)) {
        out += map[e];
        this.pos += 2;
      } else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(s.slice(this.pos + 2, this.pos + 6))) {
        out += String.fromCharCode(parseInt(s.slice(this.pos + 2, this.pos + 6), 16));
        this.pos += 6;
      } else {
        this.fail(`bad escape in string at ${JSON.stringify(s.slice(this.pos, this.pos + 6))}`);
      }
    }
  }

  private number(): number {
    const m = /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
    m.lastIndex = this.pos;
    const r = m.exec(this.s);
    if (!r || r[0] === '-') this.fail(`bad number at ${JSON.stringify(this.s.slice(this.pos, this.pos + 20))}`);
    this.pos += r[0].length;
    return Number(r[0]);
  }
}

export function parseJsonText(text: string, file?: string): ParsedText {
  return new JsonParser(text, file).parse();
}

/** disk[1].vdev style for messages. */
export function displayPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else {
      let k = String(p);
      if (k.length > 64) k = k.slice(0, 60) + '…';
      out += (out ? '.' : '') + k;
    }
  }
  return out;
}
