// Domain configuration: xl.cfg-style text, JSON text and plain objects (API
// bodies), all checked by one zod schema (schema.ts). See docs/config.md.
import { z } from 'zod';
import { ConfigError, closest, show, type ConfigIssue } from './errors.js';
import {
  ALLOWED,
  DISK_OBJECT_KEYS,
  DOMAIN_KEYS,
  VIF_OBJECT_KEYS,
  XL_ONLY_KEYS,
  diskEntrySchema,
  domainConfigSchema,
  vifEntrySchema,
  type DiskSpec,
  type DomainConfig,
  type VifSpec,
} from './schema.js';
import { diskString, vifString } from './devices.js';
import { MAX_TEXT, displayPath, isJsonText, parseJsonText, parseXlText, pathKey, type LineMap } from './text.js';

export { ConfigError, type ConfigIssue } from './errors.js';
export {
  domainConfigSchema,
  diskSpecSchema,
  vifSpecSchema,
  diskEntrySchema,
  vifEntrySchema,
  DOMAIN_KEYS,
  type DomainConfig,
  type DomainConfigInput,
  type DiskSpec,
  type VifSpec,
} from './schema.js';

// ------------------------------------------------------------ zod issues -> ConfigIssue

const article = (t: string): string => (/^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`);

function describeInput(v: unknown): string {
  if (typeof v === 'string') return `the string ${show(v)}`;
  if (typeof v === 'number') return Number.isInteger(v) ? `the number ${v}` : `the number ${v} (not a whole number)`;
  if (typeof v === 'boolean') return String(v);
  return show(v);
}

/** Friendly messages for zod's built-in issues (per parse; others' zod use is untouched). */
const errorMap: z.core.$ZodErrorMap = (iss) => {
  switch (iss.code) {
    case 'invalid_type': {
      if (iss.input === undefined) return 'is required';
      const expected = iss.expected === 'int' ? 'integer' : iss.expected === 'array' ? 'list' : String(iss.expected);
      if ((expected === 'integer' || expected === 'number') && typeof iss.input === 'string' &&
        /^\s*[-+]?(0x[0-9a-f]+|\d+)\s*$/i.test(iss.input)) {
        return `expected an integer, got the string ${show(iss.input)}: write the number without quotes`;
      }
      if (expected === 'integer' && typeof iss.input === 'number') return `expected an integer, got ${iss.input}`;
      return `expected ${article(expected)}, got ${describeInput(iss.input)}`;
    }
    case 'too_small':
      if (iss.origin === 'string') return Number(iss.minimum) <= 1 ? 'must not be empty' : `is too short (at least ${iss.minimum} characters)`;
      if (iss.origin === 'array') return `needs at least ${iss.minimum} entries`;
      return `${describeInput(iss.input)} is too small (minimum ${iss.minimum})`;
    case 'too_big':
      if (iss.origin === 'string') return `is too long (at most ${iss.maximum} characters)`;
      if (iss.origin === 'array') return `has too many entries (at most ${iss.maximum})`;
      return `${describeInput(iss.input)} is too large (maximum ${iss.maximum})`;
    case 'invalid_value':
    case 'invalid_format':
      return `${show(iss.input)} is not allowed`;
    default:
      return undefined;
  }
};

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = root;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = Object.prototype.hasOwnProperty.call(v, p) ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  }
  return v;
}

function allowedFor(path: readonly PropertyKey[]): string | undefined {
  const k = path.filter((p) => typeof p === 'string').join('.');
  return Object.hasOwn(ALLOWED, k) ? ALLOWED[k] : undefined;
}

function knownKeysFor(path: readonly PropertyKey[]): readonly string[] {
  const named = path.filter((p) => typeof p === 'string');
  if (named.length === 0) return DOMAIN_KEYS;
  if (named[0] === 'disk') return DISK_OBJECT_KEYS;
  if (named[0] === 'vif') return VIF_OBJECT_KEYS;
  return [];
}

interface Located {
  path: PropertyKey[];
  message: string;
}

function flatten(issues: readonly z.core.$ZodIssue[], prefix: PropertyKey[], input: unknown, out: Located[]): void {
  for (const iss of issues) {
    const path = [...prefix, ...iss.path];
    if (iss.code === 'invalid_union') {
      // Pick the branch that matched the value's shape (e.g. the object
      // form of a disk), rather than reporting every alternative.
      const branch = iss.errors.find((b) => b.some((i) => i.path.length > 0 || !['invalid_type', 'invalid_value'].includes(i.code)));
      if (branch) flatten(branch, path, input, out);
      else out.push({ path, message: `${describeInput(valueAt(input, path))} is not allowed` });
    } else if (iss.code === 'unrecognized_keys') {
      const known = knownKeysFor(path);
      for (const k of iss.keys) {
        const hint = closest(k, known);
        const xl = path.length === 0 && Object.hasOwn(XL_ONLY_KEYS, k) ? XL_ONLY_KEYS[k] : undefined;
        let message: string;
        if (xl !== undefined) {
          message = `"${k}" is an xl option that xvm does not support${xl ? `: ${xl}` : ''}`;
        } else {
          message = `unknown key ${show(k, 40)}${hint ? `: did you mean "${hint}"?` : ''} (allowed: ${known.join(', ')})`;
        }
        out.push({ path: [...path, k], message });
      }
    } else {
      out.push({ path, message: iss.message });
    }
  }
}

function lineFor(lines: LineMap | undefined, path: readonly PropertyKey[]): number | undefined {
  if (!lines) return undefined;
  for (let n = path.length; n > 0; n--) {
    const l = lines.get(pathKey(path.slice(0, n) as (string | number)[]));
    if (l !== undefined) return l;
  }
  return undefined;
}

function toConfigIssues(err: z.ZodError, input: unknown, file?: string, lines?: LineMap): ConfigIssue[] {
  const located: Located[] = [];
  flatten(err.issues, [], input, located);
  const seen = new Set<string>();
  const out: ConfigIssue[] = [];
  for (const l of located) {
    let message = l.message;
    const allowed = allowedFor(l.path);
    if (allowed && !message.includes('(allowed:') && !message.startsWith('unknown key')) message += ` (allowed: ${allowed})`;
    const key = displayPath(l.path);
    const issue: ConfigIssue = { file, line: lineFor(lines, l.path), key, message };
    const id = `${issue.line}|${key}|${message}`;
    if (seen.has(id)) continue;
    seen.add(id);
    out.push(issue);
  }
  return out;
}

function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return issues
    .map((i, n) => ({ i, n }))
    .sort((a, b) => (a.i.line ?? Infinity) - (b.i.line ?? Infinity) || a.n - b.n)
    .map((x) => x.i);
}

function stripUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

function check(value: unknown, file: string | undefined, lines: LineMap | undefined, early: ConfigIssue[]): DomainConfig {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError([...early, { file, message: `a domain configuration must be an object, got ${describeInput(value)}` }]);
  }
  let r: ReturnType<typeof domainConfigSchema.safeParse>;
  try {
    r = domainConfigSchema.safeParse(value, { error: errorMap });
  } catch (e) {
    // The schema is meant to never throw; if it does, still report a ConfigError.
    throw new ConfigError([...early, { file, message: `could not validate: ${e instanceof Error ? e.message : String(e)}` }]);
  }
  const issues = [...early];
  if (!r.success) issues.push(...toConfigIssues(r.error, value, file, lines));
  if (issues.length > 0) throw new ConfigError(sortIssues(issues));
  return stripUndefined(r.data as DomainConfig);
}

// ------------------------------------------------------------ public API

/**
 * Parse a domain configuration file: xl.cfg syntax, or JSON when the first
 * non-blank character is "{". Throws ConfigError (only) on any problem.
 */
export function parseDomainConfigText(text: string, file?: string): DomainConfig {
  if (typeof text !== 'string') throw new ConfigError([{ file, message: 'configuration text must be a string' }]);
  if (text.length > MAX_TEXT) {
    throw new ConfigError([{ file, message: `file is too large (${text.length} characters; at most ${MAX_TEXT})` }]);
  }
  let parsed;
  try {
    parsed = isJsonText(text) ? parseJsonText(text, file) : parseXlText(text, file);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    // RangeError (stack) or similar on hostile input: report, never crash.
    throw new ConfigError([{ file, message: `could not parse: ${e instanceof Error ? e.message : String(e)}` }]);
  }
  return check(parsed.value, file, parsed.lines, parsed.issues);
}

/** Validate a plain object (an API body, or JSON.parse output). Same errors, without lines. */
export function validateDomainConfig(value: unknown, file?: string): DomainConfig {
  return check(value, file, undefined, []);
}

function parseEntry<T>(schema: z.ZodType<T>, s: unknown, what: string): T {
  if (typeof s !== 'string') throw new ConfigError([{ key: what, message: `expected a string, got ${describeInput(s)}` }]);
  const r = schema.safeParse(s, { error: errorMap });
  if (r.success) return stripUndefined(r.data as object) as T;
  const located: Located[] = [];
  flatten(r.error.issues, [], s, located);
  throw new ConfigError(
    located.map((l) => {
      const allowed = allowedFor([what, ...l.path]);
      const message = allowed && !l.message.includes('(allowed:') ? `${l.message} (allowed: ${allowed})` : l.message;
      return { key: displayPath([what, ...l.path]), message };
    }),
  );
}

/** Parse one xl disk string (xl-disk-configuration(5) syntax plus vol=POOL/NAME). */
export function parseDiskSpec(s: string): DiskSpec {
  return parseEntry(diskEntrySchema, s, 'disk');
}

/** Parse one xl vif string (xl-network-configuration(5) subset). */
export function parseVifSpec(s: string): VifSpec {
  return parseEntry(vifEntrySchema, s, 'vif');
}

// ------------------------------------------------------------ formatting

function quote(s: string): string {
  return '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/\t/g, '\\t') + '"';
}

function diskOut(d: DiskSpec): string {
  // Keep what the user wrote when it still says exactly this.
  try {
    const again = parseDiskSpec(d.raw);
    if (JSON.stringify(again) === JSON.stringify(d)) return d.raw;
  } catch {
    /* fall through to the canonical form */
  }
  return diskString(d);
}

function vifOut(v: VifSpec): string {
  try {
    const again = parseVifSpec(v.raw);
    if (JSON.stringify(again) === JSON.stringify(v)) return v.raw;
  } catch {
    /* canonical form */
  }
  return vifString(v);
}

const ORDER = DOMAIN_KEYS;

/**
 * Write a DomainConfig back as xl.cfg text; parseDomainConfigText() reads it
 * back unchanged. Throws ConfigError if `cfg` is not valid.
 */
export function formatDomainConfig(cfg: DomainConfig): string {
  // Normalise (and check) first, so that what is written always reads back.
  const rec = validateDomainConfig(cfg) as unknown as Record<string, unknown>;
  const lines: string[] = [];
  for (const key of ORDER) {
    const v = rec[key];
    if (v === undefined) continue;
    if (key === 'disk' || key === 'vif') {
      const items = key === 'disk' ? (v as DiskSpec[]).map(diskOut) : (v as VifSpec[]).map(vifOut);
      if (items.length === 0) lines.push(`${key} = []`);
      else lines.push(`${key} = [\n${items.map((s) => `    ${quote(s)},`).join('\n')}\n]`);
    } else if (typeof v === 'boolean') {
      lines.push(`${key} = ${v ? 1 : 0}`);
    } else if (typeof v === 'number') {
      lines.push(`${key} = ${v}`);
    } else {
      lines.push(`${key} = ${quote(String(v))}`);
    }
  }
  return lines.join('\n') + '\n';
}

/**
 * JSON Schema of a domain configuration: 'input' (default) is what the API
 * accepts, 'output' the normalised form it returns. Draft 2020-12 by
 * default (OpenAPI 3.1); 'draft-07' suits Ajv's default (fastify route
 * schemas), 'openapi-3.0' an OpenAPI 3.0 document.
 */
export function domainConfigJsonSchema(
  io: 'input' | 'output' = 'input',
  target: 'draft-2020-12' | 'draft-07' | 'openapi-3.0' = 'draft-2020-12',
): object {
  const id = `${io}/${target}`;
  let js = jsonSchemas.get(id);
  if (!js) {
    js = z.toJSONSchema(domainConfigSchema, { io, target, unrepresentable: 'any' }) as object;
    jsonSchemas.set(id, js);
  }
  return structuredClone(js);
}
const jsonSchemas = new Map<string, object>();
