// The daemon's own configuration file, <lib>/xvmd.json. Today it holds the
// web manager's listener; `xvm web enable|disable` writes it through the API
// and xvmd reads it at start.
//
//   { "web": { "enabled": true, "port": 8443, "listen": "0.0.0.0",
//              "cert": "/etc/xvm/cert.pem", "key": "/etc/xvm/key.pem" } }
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { XvmError } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';

export const DEFAULT_WEB_PORT = 8443;

export const webConfigSchema = z.strictObject({
  enabled: z.boolean().default(false),
  /** 0 picks any free port (tests); `xvm web status` shows the one in use. */
  port: z.number().int().min(0).max(65535).default(DEFAULT_WEB_PORT),
  listen: z
    .string()
    .refine((a) => net.isIP(a) !== 0, { message: 'must be an IPv4 or IPv6 address such as 0.0.0.0, 127.0.0.1 or ::' })
    .default('0.0.0.0'),
  /** PEM files of a certificate and its key; both or neither (then a self-signed one is made). */
  cert: z.string().refine((p) => path.isAbsolute(p), { message: 'must be an absolute path' }).optional(),
  key: z.string().refine((p) => path.isAbsolute(p), { message: 'must be an absolute path' }).optional(),
});
export type WebConfig = z.infer<typeof webConfigSchema>;

const daemonConfigSchema = z.object({ web: webConfigSchema.default({ enabled: false, port: DEFAULT_WEB_PORT, listen: '0.0.0.0' }) }).passthrough();

export function daemonConfigFile(paths: StatePaths): string {
  return path.join(paths.lib, 'xvmd.json');
}

function issuesText(e: z.ZodError): string {
  return e.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ');
}

/** Reads the file; a missing file is the defaults (web off), a bad one a clear error. */
export function readWebConfig(paths: StatePaths): WebConfig {
  const file = daemonConfigFile(paths);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return webConfigSchema.parse({});
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new XvmError('invalid', `${file}: not valid JSON (${(e as Error).message})`);
  }
  const r = daemonConfigSchema.safeParse(raw);
  if (!r.success) throw new XvmError('invalid', `${file}: ${issuesText(r.error)}`);
  return checkPair(r.data.web, file);
}

function checkPair(web: WebConfig, where: string): WebConfig {
  if ((web.cert === undefined) !== (web.key === undefined)) throw new XvmError('invalid', `${where}: give both cert and key, or neither (a self-signed certificate is made)`);
  return web;
}

/** Validates and writes the web block, keeping any other keys of the file. */
export function writeWebConfig(paths: StatePaths, input: unknown): WebConfig {
  const r = webConfigSchema.safeParse(input);
  if (!r.success) throw new XvmError('invalid', `invalid web configuration: ${issuesText(r.error)}`);
  const web = checkPair(r.data, 'web configuration');
  const file = daemonConfigFile(paths);
  let rest: Record<string, unknown> = {};
  try {
    rest = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    /* new file */
  }
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ ...rest, web }, null, 2) + '\n', { mode: 0o600 });
  fs.renameSync(tmp, file);
  return web;
}
