// GET /v1/saves: the save files a user can restore, i.e. every *.xvmsave in
// <lib>/saves (the folder the web manager and `xvm save NAME` without a file
// write to). Only the headers are read (cheap); restoring checks the whole
// file. <lib>/save (singular) is xvmd's own stop-time folder, restored and
// emptied at start, and is not listed.
import fs from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { errorMessage } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';
import { readSaveFile } from '../migrate/format.js';
import type { SaveListing, SaveListEntry } from '../api/saves-schema.js';

export function savesDir(paths: StatePaths): string {
  return path.join(paths.lib, 'saves');
}

export async function listSaves(paths: StatePaths): Promise<SaveListing> {
  const dir = savesDir(paths);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const names = fs.readdirSync(dir).filter((n) => n.endsWith('.xvmsave')).sort();
  const files: SaveListEntry[] = [];
  for (const n of names) {
    const file = path.join(dir, n);
    let st: fs.Stats;
    try {
      st = fs.statSync(file);
    } catch {
      continue; // removed while listing
    }
    if (!st.isFile()) continue;
    try {
      const info = await readSaveFile(file, { checksum: false });
      const h = info.header;
      files.push({ file, name: n, bytes: st.size, modified: st.mtime.toISOString(), domain: String(h.config.name ?? ''), uuid: typeof h.config.uuid === 'string' ? h.config.uuid : null, state: h.state, checkpoint: h.checkpoint, createdAt: h.createdAt, memoryMiB: h.memoryMiB, error: null });
    } catch (e) {
      // Listed with the reason, so a broken or half-written file is seen, not hidden.
      files.push({ file, name: n, bytes: st.size, modified: st.mtime.toISOString(), domain: null, uuid: null, state: null, checkpoint: null, createdAt: null, memoryMiB: null, error: errorMessage(e) });
    }
  }
  return { dir, files };
}

export function registerSavesRoutes(app: FastifyInstance, deps: { paths: StatePaths }): void {
  app.get('/v1/saves', async () => listSaves(deps.paths));
}
