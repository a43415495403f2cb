// Access tokens of the web manager. A token is shown once, when it is made
// (`xvm web token`); only its SHA-256 is kept, in <lib>/web-tokens.json
// (mode 0600). Tokens are 32 random bytes, so a plain hash is enough: there
// is nothing to brute-force the way there is with a password.
//
//   token text:  xvm_<id>_<secret>     id: 8 hex digits, names the entry
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { XvmError } from '../common/errors.js';

export interface TokenEntry {
  id: string;
  name: string;
  /** sha256 of the whole token text, hex. */
  hash: string;
  created: string;
  lastUsed: string | null;
}

export type { TokenSummary } from '../api/web-types.js';
import type { TokenSummary } from '../api/web-types.js';

const TOKEN_RE = /^xvm_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$/;
export const TOKEN_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/;

function sha256(text: string): string {
  return crypto.createHash('sha256').update(text).digest('hex');
}

export class TokenStore {
  private entries: TokenEntry[] = [];
  private lastUsedWritten = new Map<string, number>();

  constructor(readonly file: string) {
    this.load();
  }

  private load(): void {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch {
      this.entries = [];
      return;
    }
    try {
      const parsed = JSON.parse(text) as { tokens?: TokenEntry[] };
      this.entries = Array.isArray(parsed.tokens)
        ? parsed.tokens.filter((t) => t && typeof t.id === 'string' && typeof t.hash === 'string' && typeof t.name === 'string')
        : [];
    } catch (e) {
      throw new XvmError('internal', `${this.file} is not valid JSON (${(e as Error).message}); fix or remove it`);
    }
  }

  private save(): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ tokens: this.entries }, null, 2) + '\n', { mode: 0o600 });
    fs.renameSync(tmp, this.file);
  }

  list(): TokenSummary[] {
    return this.entries.map(({ hash: _hash, ...rest }) => rest);
  }

  /** Makes a token; the returned text is the only time it is ever seen. */
  create(name: string): { token: string; entry: TokenSummary } {
    if (!TOKEN_NAME_RE.test(name)) {
      throw new XvmError('invalid', `token name '${name}': 1 to 64 characters from A-Z a-z 0-9 _ . @ -, starting with a letter or digit`);
    }
    if (this.entries.some((t) => t.name === name)) throw new XvmError('conflict', `a token named '${name}' exists (revoke it first, or pick another name)`);
    let id: string;
    do id = crypto.randomBytes(4).toString('hex');
    while (this.entries.some((t) => t.id === id));
    const token = `xvm_${id}_${crypto.randomBytes(32).toString('base64url')}`;
    const entry: TokenEntry = { id, name, hash: sha256(token), created: new Date().toISOString(), lastUsed: null };
    this.entries.push(entry);
    this.save();
    const { hash: _hash, ...summary } = entry;
    return { token, entry: summary };
  }

  /** Revokes by name or id; answers what was revoked. */
  revoke(nameOrId: string): TokenSummary {
    const i = this.entries.findIndex((t) => t.name === nameOrId || t.id === nameOrId);
    if (i < 0) throw new XvmError('not_found', `no token named '${nameOrId}' (see 'xvm web tokens')`);
    const [gone] = this.entries.splice(i, 1);
    this.save();
    const { hash: _hash, ...summary } = gone!;
    return summary;
  }

  /** The entry a token text belongs to, or null. Constant-time on the hash. */
  verify(token: string): TokenSummary | null {
    const m = TOKEN_RE.exec(token);
    if (!m) return null;
    const entry = this.entries.find((t) => t.id === m[1]);
    if (!entry) return null;
    const want = Buffer.from(entry.hash, 'hex');
    const got = Buffer.from(sha256(token), 'hex');
    if (want.length !== got.length || !crypto.timingSafeEqual(want, got)) return null;
    this.touch(entry);
    const { hash: _hash, ...summary } = entry;
    return summary;
  }

  /** Whether the token of this id is still valid (sessions check it on every request). */
  has(id: string): boolean {
    return this.entries.some((t) => t.id === id);
  }

  // lastUsed is written at most once a minute per token: logins, not every request.
  private touch(entry: TokenEntry): void {
    const now = Date.now();
    entry.lastUsed = new Date(now).toISOString();
    if (now - (this.lastUsedWritten.get(entry.id) ?? 0) > 60000) {
      this.lastUsedWritten.set(entry.id, now);
      try {
        this.save();
      } catch {
        /* lastUsed is informational */
      }
    }
  }
}
