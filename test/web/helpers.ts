// Web manager test helpers: enable the listener on a private xvmd, make
// tokens through the CLI, HTTPS requests that trust the daemon's own
// certificate (pinned, not "insecure"), and Debian's chromium through
// playwright-core.
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import type { TestHost } from '../helpers/xvm.js';
import type { WebStatus } from '../../src/api/web-types.js';

export const CHROMIUM = '/usr/bin/chromium';

export interface WebEndpoint {
  url: string;
  ca: string;
  status: WebStatus;
}

export function enableWeb(host: TestHost): WebEndpoint {
  const r = host.cli(['web', 'enable', '--port', '0', '--listen', '127.0.0.1', '--json']);
  if (r.code !== 0) throw new Error(`xvm web enable failed: ${r.stderr}`);
  const status = JSON.parse(r.stdout) as WebStatus;
  if (!status.listening || !status.url) throw new Error(`web manager not listening: ${r.stdout}`);
  return { url: status.url, ca: fs.readFileSync(status.cert.file, 'utf8'), status };
}

export function makeToken(host: TestHost, name: string): string {
  const r = host.cli(['web', 'token', '--name', name]);
  if (r.code !== 0) throw new Error(`xvm web token failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** One HTTPS request to the web listener, verifying its certificate against the one xvmd made. */
export function httpsRequest(ep: WebEndpoint, method: string, urlPath: string, opts: { headers?: Record<string, string>; body?: unknown; rawBody?: string } = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const u = new URL(urlPath, ep.url);
  const payload = opts.rawBody !== undefined ? Buffer.from(opts.rawBody) : opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, method, ca: ep.ca, headers: { ...(payload ? { 'content-type': 'application/json' } : {}), ...opts.headers } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      },
    );
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** Headless chromium with a fresh profile; trusts nothing but accepts the self-signed certificate of this test's xvmd. */
export async function launchBrowser(): Promise<Browser> {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'xvmweb-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 800 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
  });
  return {
    context,
    async close() {
      await context.close().catch(() => undefined);
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}
