// The domains service (xVM's svc:/system/xvm/domains): domains marked
// `autostart = 1` start when xvmd starts, and `xvm daemon stop
// --domains=shutdown` shuts the running ones down, in parallel, with a
// bounded wait, before xvmd goes.
import { errorMessage } from '../common/errors.js';
import type { DomainManager } from './domains.js';
import type { Logger } from './log.js';

/**
 * Starts every domain with autostart set that is not running (call after
 * load(): re-adopted domains are running already and are left alone).
 * Starts them one after the other (each QEMU start is CPU-heavy); failures
 * are logged, not thrown.
 */
export async function autostartDomains(domains: DomainManager, log: Logger): Promise<{ started: string[]; failed: { domain: string; error: string }[] }> {
  const started: string[] = [];
  const failed: { domain: string; error: string }[] = [];
  for (const info of domains.list()) {
    if (!info.config.autostart || info.domid !== null) continue;
    try {
      await domains.start(info.name);
      started.push(info.name);
      log.info('domain autostarted', { domain: info.name });
    } catch (e) {
      failed.push({ domain: info.name, error: errorMessage(e) });
      log.error('autostart failed', { domain: info.name, error: errorMessage(e) });
    }
  }
  return { started, failed };
}

export interface ShutdownOutcome {
  domain: string;
  state: string;
  ok: boolean;
  error?: string;
}

/**
 * Shuts every running (or paused) domain down through the ACPI power button,
 * all at once, waiting at most `timeoutSec` for each. A guest that does not go
 * in time is left running and reported (never destroyed behind the user's back).
 */
export async function shutdownAll(domains: DomainManager, log: Logger, timeoutSec: number): Promise<ShutdownOutcome[]> {
  const live = domains.list().filter((d) => d.domid !== null && !d.preserved && (d.state === 'running' || d.state === 'paused'));
  log.info('shutting down domains before xvmd stops', { domains: live.map((d) => d.name), timeoutSec });
  return Promise.all(
    live.map(async (d): Promise<ShutdownOutcome> => {
      try {
        if (d.state === 'paused') await domains.unpause(d.name);
        const info = await domains.shutdown(d.name, { wait: true, timeoutSec });
        return { domain: d.name, state: info.state, ok: true };
      } catch (e) {
        log.warn('domain did not shut down before xvmd stopped', { domain: d.name, error: errorMessage(e) });
        let state = 'unknown';
        try {
          state = domains.info(d.name).state;
        } catch {
          /* gone */
        }
        return { domain: d.name, state, ok: false, error: errorMessage(e) };
      }
    }),
  );
}
