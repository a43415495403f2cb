// Answers of the web manager's administration routes (src/daemon/web-routes.ts).

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
