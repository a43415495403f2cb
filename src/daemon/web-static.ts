// The web manager's front end, as built by scripts/build-web.js into
// dist/web: index.html and assets/*. Served from memory-cheap reads of the
// files; nothing from outside the folder, nothing from a CDN.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';

/** dist/web, next to dist/src (this file is dist/src/daemon/web-static.js). */
export const WEB_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../web');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.map': 'application/json',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};
// What a page may load: only this origin (websockets included), no inline scripts; blob: images are the screenshot thumbnails the page fetched itself.
// What a page may load: only this origin (websockets included), no inline scripts.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/** Paths the front end lives at: readable before logging in (the login page itself). */
export function isStaticPath(url: string): boolean {
  return url === '/' || url === '/index.html' || url === '/favicon.svg' || url.startsWith('/assets/');
}

export function registerStaticFiles(app: FastifyInstance): void {
  const send = (file: string, reply: import('fastify').FastifyReply) => {
    const full = path.join(WEB_ROOT, file);
    // Only files inside WEB_ROOT, only regular files.
    if (!full.startsWith(WEB_ROOT + path.sep)) return reply.code(404).send({ error: { code: 'not_found', message: 'no such file' } });
    let data: Buffer;
    try {
      if (!fs.statSync(full).isFile()) throw new Error('not a file');
      data = fs.readFileSync(full);
    } catch {
      if (file === 'index.html') {
        return reply.code(503).type('text/plain; charset=utf-8').send(`the web front end is not built (no ${full}): run 'npm run build'\n`);
      }
      return reply.code(404).send({ error: { code: 'not_found', message: `no file ${file}` } });
    }
    reply.header('content-security-policy', CSP);
    reply.header('cache-control', file === 'index.html' ? 'no-cache' : 'public, max-age=300');
    return reply.type(TYPES[path.extname(full)] ?? 'application/octet-stream').send(data);
  };
  app.get('/', async (_req, reply) => send('index.html', reply));
  app.get('/index.html', async (_req, reply) => send('index.html', reply));
  app.get('/favicon.svg', async (_req, reply) => send('favicon.svg', reply));
  app.get('/assets/*', async (req, reply) => {
    const rest = (req.params as { '*': string })['*'];
    if (!/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/.test(rest) || rest.split('/').includes('..')) {
      return reply.code(404).send({ error: { code: 'not_found', message: 'no such file' } });
    }
    return send(path.join('assets', rest), reply);
  });
}
