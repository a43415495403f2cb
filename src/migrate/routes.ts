// API routes for save and restore. server.ts registers them with
// registerMigrateRoutes(). Long operations stream NDJSON:
// {progress:{phase,done,total}} lines, then {done:true,result} or {error}.
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { StatePaths } from '../common/paths.js';
import { migrateDomain, relocationTokenFile } from './relocation.js';
import { XvmError, errorMessage } from '../common/errors.js';
import * as s from '../api/schema.js';
import type { DomainManager } from '../daemon/domains.js';
import type { Logger } from '../daemon/log.js';
import { parseInput } from '../daemon/server.js';
import { checkSaveTarget, inspectSaveFile, restoreDomain, saveDomain, type MigrateProgress } from './save.js';

export interface MigrateDeps {
  domains: DomainManager;
  log: Logger;
  paths: StatePaths;
}

async function streamNdjson(reply: FastifyReply, work: (progress: (p: MigrateProgress) => void) => Promise<unknown>): Promise<void> {
  reply.hijack();
  const out = reply.raw;
  out.writeHead(200, { 'content-type': 'application/x-ndjson' });
  let last = '';
  let lastAt = 0;
  try {
    const result = await work((p) => {
      const line = JSON.stringify({ progress: p });
      // At most ~10 lines a second, but every phase change.
      const now = Date.now();
      if (line === last || (now - lastAt < 100 && JSON.parse(last || '{}').progress?.phase === p.phase)) return;
      last = line;
      lastAt = now;
      out.write(line + '\n');
    });
    out.end(JSON.stringify({ done: true, result }) + '\n');
  } catch (e) {
    const err = e instanceof XvmError ? { code: e.code, message: e.message } : { code: 'internal', message: errorMessage(e) };
    out.end(JSON.stringify({ error: err }) + '\n');
  }
}

export function registerMigrateRoutes(app: FastifyInstance, deps: MigrateDeps): void {
  const { domains, log } = deps;

  app.post('/v1/domains/:name/save', async (req, reply) => {
    const { name } = parseInput(s.nameParams, req.params, 'domain name');
    const body = parseInput(s.saveBody, req.body, 'request body');
    // Plain HTTP errors before the stream starts: unknown domain, bad target.
    domains.get(name);
    checkSaveTarget(body.file);
    await streamNdjson(reply, (progress) => saveDomain(domains, log, name, body.file, { checkpoint: body.checkpoint, onProgress: progress }));
  });

  app.post('/v1/restore', async (req, reply) => {
    const body = parseInput(s.restoreBody, req.body, 'request body');
    await streamNdjson(reply, (progress) => restoreDomain(domains, log, body.file, { name: body.name, paused: body.paused, onProgress: progress }));
  });

  app.post('/v1/domains/:name/migrate', async (req, reply) => {
    const { name } = parseInput(s.nameParams, req.params, 'domain name');
    const body = parseInput(s.migrateBody, req.body, 'request body');
    domains.get(name);
    await streamNdjson(reply, (progress) => migrateDomain(domains, log, name, body.target, { live: body.live, copyStorage: body.copyStorage, tokenFile: relocationTokenFile(deps.paths), onProgress: progress }));
  });

  // What a save file holds (header, sizes, checksum verified), without restoring it.
  app.get('/v1/save-file', async (req) => {
    const q = parseInput(s.saveFileQuery, req.query, 'query');
    const info = await inspectSaveFile(q.file);
    return { ...info, header: { ...info.header } };
  });
}
