// API routes for operations and debugging: sysrq, dump-core, gdbstub,
// autostart, stats (xvm top), the daemon's own logs (xvm dmesg) and the
// Prometheus endpoint. server.ts registers them with registerOpsRoutes().
import fs from 'node:fs';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { XvmError } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';
import * as s from '../api/schema.js';
import type { DomainManager } from './domains.js';
import type { Logger } from './log.js';
import { checkDumpTarget, dumpCore, gdbStart, gdbStop, sendSysrq } from './debug.js';
import { collectStats, prometheusText, RequestCounter } from './metrics.js';
import { deviceLogFile } from './device-log.js';
import { setMemory, setVcpus } from './resources.js';
import { parseInput } from './server.js';

export interface OpsDeps {
  paths: StatePaths;
  domains: DomainManager;
  log: Logger;
  startedAt: Date;
}

/** The file behind each log name of GET /v1/logs/:log. */
export function logFiles(paths: StatePaths): Record<s.LogName, string> {
  return { xvmd: `${paths.log}/xvmd.log`, devices: deviceLogFile() ?? `${paths.log}/devices.log` };
}

/** The last `n` complete lines of a file (reads backwards in blocks; never the whole of a big file). */
export function tailLines(file: string, n: number): { lines: string[]; end: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return { lines: [], end: 0 };
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (n === 0) return { lines: [], end: size };
    let pos = size;
    let text = '';
    const block = 64 * 1024;
    while (pos > 0) {
      const len = Math.min(block, pos);
      pos -= len;
      const b = Buffer.alloc(len);
      fs.readSync(fd, b, 0, len, pos);
      text = b.toString('utf8') + text;
      if (text.split('\n').length > n + 1) break;
      if (size - pos > 64 << 20) break; // 64 MiB is plenty of lines
    }
    // Drop a trailing partial line (still being written) and, unless at the start, a leading partial one.
    const lastNl = text.lastIndexOf('\n');
    const complete = lastNl >= 0 ? text.slice(0, lastNl) : '';
    const end = size - Buffer.byteLength(text.slice(lastNl + 1));
    let lines = complete ? complete.split('\n') : [];
    if (pos > 0 && lines.length > n) lines = lines.slice(1);
    return { lines: lines.slice(-n), end };
  } finally {
    fs.closeSync(fd);
  }
}

export function registerOpsRoutes(app: FastifyInstance, deps: OpsDeps): void {
  const { domains, paths, log } = deps;
  const requests = new RequestCounter();
  const followers = new Set<() => void>();
  // Open follow streams must not hold xvmd's stop (the server waits for its
  // connections before onClose hooks run: end them before that).
  app.addHook('preClose', async () => {
    for (const end of followers) end();
  });
  const name = (req: FastifyRequest) => parseInput(s.nameParams, req.params, 'domain name').name;

  app.addHook('onResponse', async (req, reply) => {
    requests.add(req.method, req.routeOptions?.url ?? 'unmatched', reply.statusCode);
  });

  app.post('/v1/domains/:name/sysrq', async (req) => {
    const body = parseInput(s.sysrqBody, req.body, 'request body');
    return sendSysrq(domains, log, name(req), body.key);
  });

  // Streams NDJSON: {progress:{status,completed,total}} lines, then {done:true,result} or {error}.
  app.post('/v1/domains/:name/dump-core', async (req, reply) => {
    const n = name(req);
    const body = parseInput(s.dumpCoreBody, req.body, 'request body');
    // Plain HTTP errors before the stream starts: unknown domain, bad target.
    domains.get(n);
    checkDumpTarget(body.file);
    reply.hijack();
    const out = reply.raw;
    out.writeHead(200, { 'content-type': 'application/x-ndjson' });
    let last = '';
    try {
      const result = await dumpCore(domains, log, n, body.file, (p) => {
        const line = JSON.stringify({ progress: p });
        if (line !== last) out.write(line + '\n');
        last = line;
      });
      out.end(JSON.stringify({ done: true, result }) + '\n');
    } catch (e) {
      const err = e instanceof XvmError ? { code: e.code, message: e.message } : { code: 'internal', message: (e as Error).message };
      out.end(JSON.stringify({ error: err }) + '\n');
    }
  });

  app.post('/v1/domains/:name/gdbstub', async (req) => {
    parseInput(s.emptyBody, req.body, 'request body');
    return gdbStart(domains, paths, log, name(req));
  });
  app.delete('/v1/domains/:name/gdbstub', async (req) => gdbStop(domains, paths, log, name(req)));

  app.post('/v1/domains/:name/autostart', async (req) => {
    const body = parseInput(s.autostartBody, req.body, 'request body');
    return domains.setAutostart(name(req), body.on);
  });

  app.post('/v1/domains/:name/memory', async (req) => {
    const body = parseInput(s.memSetBody, req.body, 'request body');
    return setMemory(domains, log, name(req), body.mib, body.wait * 1000);
  });
  app.post('/v1/domains/:name/vcpus', async (req) => {
    const body = parseInput(s.vcpuSetBody, req.body, 'request body');
    return setVcpus(domains, log, name(req), body.vcpus, body.wait * 1000);
  });

  app.get('/v1/stats', async () => collectStats(domains));

  app.get('/metrics', async (_req, reply) => {
    reply.type('text/plain; version=0.0.4; charset=utf-8');
    return prometheusText(domains, requests, deps.startedAt);
  });

  // The daemon's own logs as JSON lines; follow=true keeps streaming new lines.
  app.get('/v1/logs/:log', async (req, reply) => {
    const { log: which } = parseInput(s.logNameParams, req.params, 'log name');
    const q = parseInput(s.daemonLogQuery, req.query, 'query');
    const file = logFiles(paths)[which];
    const { lines, end: endPos } = tailLines(file, q.lines);
    const head = lines.length ? lines.join('\n') + '\n' : '';
    if (!q.follow) {
      reply.type('application/x-ndjson');
      return head;
    }
    reply.hijack();
    const out = reply.raw;
    out.writeHead(200, { 'content-type': 'application/x-ndjson' });
    out.write(head);
    let pos = endPos;
    let partial = '';
    let closed = false;
    const poll = () => {
      if (closed) return;
      try {
        const size = fs.statSync(file).size;
        if (size < pos) pos = 0; // truncated or replaced
        if (size > pos) {
          const fd = fs.openSync(file, 'r');
          try {
            const len = Math.min(size - pos, 1 << 20);
            const b = Buffer.alloc(len);
            const got = fs.readSync(fd, b, 0, len, pos);
            pos += got;
            const text = partial + b.subarray(0, got).toString('utf8');
            const nl = text.lastIndexOf('\n');
            partial = text.slice(nl + 1);
            if (nl >= 0) out.write(text.slice(0, nl + 1));
          } finally {
            fs.closeSync(fd);
          }
        }
      } catch {
        /* not there yet */
      }
    };
    const timer = setInterval(poll, 250);
    const stop = () => {
      closed = true;
      clearInterval(timer);
      followers.delete(end);
    };
    const end = () => {
      stop();
      out.end();
    };
    followers.add(end);
    req.raw.on('close', stop);
    out.on('close', stop);
    out.on('error', stop);
  });
}
