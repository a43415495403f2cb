// The web manager's API: request schemas and answers of its routes
// (src/daemon/web-routes.ts, src/daemon/web.ts).
import { z } from 'zod';

export const webEnableBody = z.strictObject({
  enabled: z.boolean(),
  port: z.number().int().min(0).max(65535).optional().describe('0: any free port'),
  listen: z.string().max(64).optional().describe('an IPv4 or IPv6 address (default 0.0.0.0)'),
  cert: z.string().max(4096).optional().describe('absolute path of a PEM certificate (with key)'),
  key: z.string().max(4096).optional().describe('absolute path of its PEM private key'),
});
export const webTokenBody = z.strictObject({ name: z.string().max(64).default('web') });
export const webLoginBody = z.strictObject({ token: z.string().max(200) });
export const validateDomainBody = z.strictObject({
  config: z.record(z.string(), z.unknown()).optional(),
  configText: z.string().max(1 << 20).optional(),
  file: z.string().max(4096).optional(),
});
export const statsStreamQuery = z.object({ interval: z.coerce.number().int().min(500).max(60000).default(2000) });

/** An access token as the API shows it: never its hash, never its text (that is shown once, at creation). */
export interface TokenSummary {
  id: string;
  name: string;
  created: string;
  lastUsed: string | null;
}

export interface WebStatus {
  enabled: boolean;
  listening: boolean;
  listen: string;
  port: number;
  url: string | null;
  cert: { file: string; key: string; selfSigned: boolean; fingerprint: string | null };
  tokens: number;
  sessions: number;
  error: string | null;
}

export interface WebSettings {
  enabled: boolean;
  port?: number;
  listen?: string;
  cert?: string;
  key?: string;
}
