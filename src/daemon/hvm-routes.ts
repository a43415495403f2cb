// API routes of HVM guests: VNC address and noVNC websocket (with
// single-use tokens), screenshots, CD-ROM insert/eject, and install.
// server.ts registers them with registerHvmRoutes(); the work is done by
// the HVM provider (hvm.ts), the VNC service (vnc.ts) and install.ts.
import net from 'node:net';
import path from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import * as s from '../api/schema.js';
import * as h from '../api/hvm-schema.js';
import { XvmError, errorMessage } from '../common/errors.js';
import type { DomainManager } from './domains.js';
import type { Logger } from './log.js';
import { parseInput } from './server.js';
import { hvmProvider, type HvmProvider } from './hvm.js';
import { install } from './install.js';
import { vncFiles } from './vnc.js';
import { deviceEvent } from './device-log.js';
import type { StatePaths } from '../common/paths.js';

export interface HvmDeps {
  paths: StatePaths;
  domains: DomainManager;
  log: Logger;
}

function provider(): HvmProvider {
  const p = hvmProvider();
  if (!p) throw new XvmError('unavailable', 'this xvmd runs no HVM guests');
  return p;
}

export function registerHvmRoutes(app: FastifyInstance, deps: HvmDeps): void {
  const { domains, log, paths } = deps;
  const name = (req: FastifyRequest) => parseInput(s.nameParams, req.params, 'domain name').name;

  app.get('/v1/domains/:name/vnc', async (req) => provider().vncInfo(domains, name(req)));
  app.post('/v1/domains/:name/vnc/token', async (req) => {
    parseInput(s.emptyBody, req.body, 'request body');
    return provider().vncToken(domains, name(req));
  });

  // noVNC: the token (single use, 60 s) is checked before the upgrade; then
  // the websocket carries QEMU's own RFB stream (None auth behind the token).
  app.get(
    '/v1/domains/:name/vnc/ws',
    {
      websocket: true,
      preValidation: async (req) => {
        const n = name(req);
        const q = parseInput(h.vncWsQuery, req.query, 'query');
        provider().vncInfo(domains, n);
        if (!provider().vnc.redeemToken(n, q.token)) {
          deviceEvent('vnc-token-refused', { domain: n });
          throw new XvmError('forbidden', `no valid VNC token for domain '${n}' (tokens from POST /v1/domains/${n}/vnc/token are single-use and expire after 60 s)`);
        }
      },
    },
    (socket: WebSocket, req: FastifyRequest) => {
      const n = name(req);
      const runDir = path.join(paths.run, 'domains', domains.info(n).uuid);
      const pending: Buffer[] = [];
      let qemu: net.Socket | undefined;
      socket.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
        const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
        if (qemu) qemu.write(buf);
        else pending.push(buf);
      });
      socket.on('close', () => qemu?.destroy());
      socket.on('error', () => qemu?.destroy());
      // Straight to QEMU's socket, no handshake of ours: noVNC speaks RFB itself.
      {
        const sock = net.connect(vncFiles(runDir).socket);
        sock.on('connect', () => {
          qemu = sock;
          for (const b of pending.splice(0)) sock.write(b);
          log.info('vnc websocket attached', { domain: n, reqId: req.id });
          deviceEvent('vnc-ws-attach', { domain: n, reqId: req.id });
        });
        sock.on('data', (c: Buffer) => {
          if (socket.readyState === socket.OPEN) socket.send(c);
        });
        sock.on('error', (e) => {
          log.info('vnc websocket: QEMU socket failed', { domain: n, error: errorMessage(e) });
          socket.close(1011, 'the domain has no screen right now');
        });
        sock.on('close', () => socket.close());
      }
    },
  );

  app.get('/v1/domains/:name/screenshot', async (req, reply) => {
    const png = await provider().screenshot(domains, name(req));
    reply.type('image/png');
    return png;
  });

  app.get('/v1/domains/:name/cdrom', async (req) => provider().cdroms(domains, name(req)));
  app.post('/v1/domains/:name/cdrom/insert', async (req) => {
    const b = parseInput(h.cdromInsertBody, req.body, 'request body');
    return provider().cdromInsert(domains, name(req), b.file, b.vdev);
  });
  app.post('/v1/domains/:name/cdrom/eject', async (req) => {
    const b = parseInput(h.cdromEjectBody, req.body, 'request body');
    return provider().cdromEject(domains, name(req), b.vdev);
  });

  app.post('/v1/install', async (req) => {
    const b = parseInput(h.installBody, req.body, 'request body');
    return install(domains, log, b);
  });
}
