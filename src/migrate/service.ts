// The save half of the domains service (issue 8): `xvm daemon stop
// --domains=save` saves every running domain into <lib>/save/NAME.xvmsave,
// all at once with a bounded wait; the next xvmd start restores each file
// and removes it. A file that cannot be restored is kept (renamed
// NAME.xvmsave.failed) and the reason logged, so nothing is lost silently.
import fs from 'node:fs';
import path from 'node:path';
import { errorMessage } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';
import type { DomainManager } from '../daemon/domains.js';
import type { Logger } from '../daemon/log.js';
import { restoreDomain, saveDomain } from './save.js';
import { RelocationServer, relocationTokenFile } from './relocation.js';

/**
 * Starts the relocation service when XVM_RELOCATION_LISTEN (HOST:PORT) is
 * set; off otherwise. A bad token file or a busy port is logged and the
 * service stays off (xvmd itself runs on).
 */
export async function startRelocation(domains: DomainManager, paths: StatePaths, log: Logger): Promise<RelocationServer | undefined> {
  const listen = process.env.XVM_RELOCATION_LISTEN;
  if (!listen) return undefined;
  try {
    const r = new RelocationServer(domains, log, { listen, tokenFile: relocationTokenFile(paths), markerDir: path.join(paths.lib, 'relocation-incoming') });
    await r.cleanupStale();
    await r.listen();
    return r;
  } catch (e) {
    log.error('relocation service not started', { listen, error: errorMessage(e) });
    return undefined;
  }
}

export function saveDir(paths: StatePaths): string {
  return path.join(paths.lib, 'save');
}

export interface SaveAllOutcome {
  domain: string;
  file: string | null;
  state: string;
  ok: boolean;
  ms: number;
  error?: string;
}

/** Saves every running or paused domain in parallel; each gets at most `timeoutSec`. */
export async function saveAll(domains: DomainManager, paths: StatePaths, log: Logger, timeoutSec: number): Promise<SaveAllOutcome[]> {
  const dir = saveDir(paths);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const live = domains.list().filter((d) => d.domid !== null && !d.preserved && (d.state === 'running' || d.state === 'paused'));
  log.info('saving domains before xvmd stops', { domains: live.map((d) => d.name), timeoutSec });
  return Promise.all(
    live.map(async (d): Promise<SaveAllOutcome> => {
      const file = path.join(dir, `${d.name}.xvmsave`);
      const t0 = Date.now();
      try {
        const r = await saveDomain(domains, log, d.name, file, { timeoutSec });
        return { domain: d.name, file, state: r.state, ok: true, ms: r.ms };
      } catch (e) {
        log.warn('domain could not be saved before xvmd stopped; left running', { domain: d.name, error: errorMessage(e) });
        let state = 'unknown';
        try {
          state = domains.info(d.name).state;
        } catch {
          /* gone */
        }
        return { domain: d.name, file: null, state, ok: false, ms: Date.now() - t0, error: errorMessage(e) };
      }
    }),
  );
}

/** At xvmd start (after load): restores every <lib>/save/*.xvmsave, one after the other, then removes the file. */
export async function restoreSaved(domains: DomainManager, paths: StatePaths, log: Logger): Promise<{ restored: string[]; failed: { file: string; error: string }[] }> {
  const dir = saveDir(paths);
  const restored: string[] = [];
  const failed: { file: string; error: string }[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.xvmsave')).sort();
  } catch {
    return { restored, failed };
  }
  for (const n of names) {
    const file = path.join(dir, n);
    try {
      const r = await restoreDomain(domains, log, file);
      fs.rmSync(file, { force: true });
      restored.push(r.domain);
      log.info('domain restored at start', { domain: r.domain, file, ms: r.ms });
    } catch (e) {
      failed.push({ file, error: errorMessage(e) });
      log.error('restoring a saved domain at start failed; file kept', { file, error: errorMessage(e) });
      try {
        fs.renameSync(file, `${file}.failed`);
      } catch {
        /* leave it */
      }
    }
  }
  return { restored, failed };
}
