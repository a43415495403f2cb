// Talking to xvmd from the page: the same REST API as the CLI, over HTTPS
// with the session cookie that logging in set (same origin, so the browser
// sends it; websockets too).
import type { DomainInfo, HostInfo, HostStats } from '../api/schema.js';

export type { DomainInfo, HostInfo, HostStats };

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

/** Set by the app: called when any request answers 401 (session gone: back to the login page). */
let onUnauthorized: () => void = () => undefined;
export function setUnauthorizedHandler(fn: () => void): void {
  onUnauthorized = fn;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  // GET and DELETE carry no body; every other verb a JSON one ({} when there is nothing to say).
  const bodyless = method === 'GET' || method === 'DELETE';
  const res = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: bodyless ? {} : { 'content-type': 'application/json' },
    body: bodyless ? undefined : JSON.stringify(body ?? {}),
  }).catch((e: Error) => {
    throw new ApiError(0, 'unavailable', `cannot reach xvmd: ${e.message}`);
  });
  const text = await res.text();
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  if (!res.ok) {
    const e = (parsed as { error?: { code?: string; message?: string; details?: unknown } } | undefined)?.error;
    if (res.status === 401 && path !== '/v1/web/login') onUnauthorized();
    throw new ApiError(res.status, e?.code ?? 'error', e?.message ?? `HTTP ${res.status}`, e?.details);
  }
  return parsed as T;
}

export const post = <T>(path: string, body: unknown = {}) => api<T>('POST', path, body);
export const get = <T>(path: string) => api<T>('GET', path);

export const dpath = (name: string) => `/v1/domains/${encodeURIComponent(name)}`;

export function wsUrl(path: string): string {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;
}

export interface PoolInfo {
  name: string;
  path: string;
  volumes: number;
  allocated: number;
  capacity: number;
  available: number;
  created?: string;
}
export interface VolumeSummary {
  pool: string;
  name: string;
  format: string;
  size: number;
  allocated: number;
  readOnly: boolean;
  base: string | null;
  snapshots: number;
}
export interface VolumeInfo extends Omit<VolumeSummary, 'snapshots'> {
  path: string;
  snapshots: { name: string; created: string }[];
  dependants: string[];
  usedBy?: { domain: string; vdev: string; readOnly: boolean }[];
}
export interface ConfigIssue {
  file?: string;
  line?: number;
  key?: string;
  message: string;
}
export interface ValidateResult {
  valid: boolean;
  issues: ConfigIssue[];
  config: Record<string, unknown> | null;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 || i === 0 || Number.isInteger(v) ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export interface Progress {
  phase: string;
  done: number;
  total: number;
}

/**
 * POST to a route that streams NDJSON (save, restore): {progress} lines, then
 * {done:true,result} or {error}. Calls onProgress for each progress line;
 * resolves with the result, rejects with the error (HTTP errors before the
 * stream started included).
 */
export async function postStream<T>(path: string, body: unknown, onProgress: (p: Progress) => void): Promise<T> {
  const res = await fetch(path, { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }).catch((e: Error) => {
    throw new ApiError(0, 'unavailable', `cannot reach xvmd: ${e.message}`);
  });
  if (!res.ok || !res.body) {
    const text = await res.text();
    let e: { code?: string; message?: string } | undefined;
    try {
      e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
    } catch {
      /* not JSON */
    }
    if (res.status === 401) onUnauthorized();
    throw new ApiError(res.status, e?.code ?? 'error', e?.message ?? `HTTP ${res.status}`);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = '';
  let result: T | undefined;
  let error: ApiError | undefined;
  const line = (l: string) => {
    if (!l.trim()) return;
    let m: { progress?: Progress; done?: boolean; result?: T; error?: { code: string; message: string } };
    try {
      m = JSON.parse(l);
    } catch {
      return;
    }
    if (m.progress) onProgress(m.progress);
    if (m.done) result = m.result;
    if (m.error) error = new ApiError(500, m.error.code, m.error.message);
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += value;
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      line(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
    }
  }
  line(pending);
  if (error) throw error;
  if (result === undefined) throw new ApiError(500, 'internal', 'the stream ended without a result');
  return result;
}

export type { SaveListing, SaveListEntry } from '../api/saves-schema.js';
export type { MemSetResult, VcpuSetResult, SaveResult, RestoreResult, MigrateResult } from '../api/schema.js';
export type { InstallResult } from '../api/hvm-schema.js';
