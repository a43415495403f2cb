// xvm daemon start|stop|status
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { statePaths } from '../common/paths.js';
import { pidAlive } from '../engine/process.js';
import { ApiError } from '../api/client.js';
import { action, client, CliError, keyValues, printJson, sleep } from './context.js';

const XVMD = fileURLToPath(new URL('../../../bin/xvmd.js', import.meta.url));

async function isUp(): Promise<boolean> {
  try {
    await client().host();
    return true;
  } catch (e) {
    if (e instanceof ApiError && e.code === 'unavailable') return false;
    throw e;
  }
}

/** Starts xvmd in the background and returns once its API answers. */
export async function startDaemon(opts: { quiet?: boolean; timeoutSec?: number } = {}): Promise<void> {
  const paths = statePaths();
  if (await isUp()) {
    if (!opts.quiet) process.stdout.write(`xvmd is already running (socket ${paths.apiSocket})\n`);
    return;
  }
  for (const d of [paths.lib, paths.run, paths.log]) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  const outFile = path.join(paths.log, 'xvmd.out');
  const out = fs.openSync(outFile, 'a', 0o640);
  const child = spawn(process.execPath, [XVMD], { detached: true, stdio: ['ignore', out, out], env: process.env });
  fs.closeSync(out);
  let exit: string | undefined;
  child.on('exit', (code, sig) => (exit = sig ? `signal ${sig}` : `exit code ${code}`));
  child.unref();
  const deadline = Date.now() + (opts.timeoutSec ?? 30) * 1000;
  while (Date.now() < deadline) {
    if (exit) {
      const tail = fs.readFileSync(outFile, 'utf8').trim().split('\n').slice(-5).join('\n');
      throw new CliError(`xvmd exited at start (${exit}):\n${tail}`);
    }
    if (await isUp()) {
      if (!opts.quiet) process.stdout.write(`xvmd started (pid ${child.pid}, socket ${paths.apiSocket})\n`);
      return;
    }
    await sleep(50);
  }
  throw new CliError(`xvmd did not answer within ${opts.timeoutSec ?? 30} s (see ${outFile})`);
}

export function registerDaemonCommands(program: Command): void {
  const daemon = program.command('daemon').description('start, stop or query xvmd, the daemon');

  daemon
    .command('start')
    .description('start xvmd in the background; returns once its API answers')
    .action(action(async () => startDaemon()));

  daemon
    .command('stop')
    .description('stop xvmd; running domains keep running and are re-adopted at the next start (--domains=shutdown shuts them down first, --domains=save saves them and the next start restores them)')
    .option('--domains <policy>', 'keep: guests keep running; shutdown: ACPI shutdown of every running guest, in parallel, before xvmd stops; save: save every running guest (in parallel) into <lib>/save, restored at the next start', 'keep')
    .option('--timeout <seconds>', 'with --domains=shutdown|save: how long to wait for each guest', '60')
    .action(
      action(async (opts: { domains: string; timeout: string }) => {
        if (opts.domains !== 'keep' && opts.domains !== 'shutdown' && opts.domains !== 'save') throw new CliError(`--domains takes keep, shutdown or save (got '${opts.domains}')`, 2);
        const timeout = Number(opts.timeout);
        if (!Number.isInteger(timeout) || timeout < 1 || timeout > 3600) throw new CliError(`--timeout must be whole seconds from 1 to 3600 (got '${opts.timeout}')`, 2);
        const c = client();
        let pid: number;
        let guestsLeft = false;
        try {
          const r = await c.stopDaemon(opts.domains === 'keep' ? {} : { domains: opts.domains, timeout });
          pid = r.pid;
          for (const s of r.shutdown ?? []) {
            process.stdout.write(s.ok ? `${s.domain}: ${s.state}\n` : `${s.domain}: did not shut down (${s.error}); left ${s.state}\n`);
            if (!s.ok) guestsLeft = true;
          }
          for (const s of r.saved ?? []) {
            process.stdout.write(s.ok ? `${s.domain}: saved to ${s.file} (${(s.ms / 1000).toFixed(1)} s)\n` : `${s.domain}: not saved (${s.error}); left ${s.state}\n`);
            if (!s.ok) guestsLeft = true;
          }
        } catch (e) {
          if (e instanceof ApiError && e.code === 'unavailable') {
            process.stdout.write('xvmd is not running\n');
            return;
          }
          throw e;
        }
        const end = Date.now() + 15000;
        while (pidAlive(pid) && Date.now() < end) await sleep(50);
        if (pidAlive(pid)) throw new CliError(`xvmd (pid ${pid}) did not stop within 15 s`);
        process.stdout.write(opts.domains !== 'keep' ? `xvmd stopped (pid ${pid})${guestsLeft ? '; some domains are still running' : ''}\n` : `xvmd stopped (pid ${pid}); domains keep running\n`);
      }),
    );

  daemon
    .command('status')
    .description('is xvmd running? (exit 0 yes, 1 no)')
    .option('--json', 'print JSON')
    .action(
      action(async (opts: { json?: boolean }) => {
        const paths = statePaths();
        let host;
        try {
          host = await client().host();
        } catch (e) {
          if (e instanceof ApiError && e.code === 'unavailable') {
            if (opts.json) printJson({ running: false, socket: paths.apiSocket });
            else process.stdout.write(`xvmd is not running (socket ${paths.apiSocket})\n`);
            process.exit(1);
          }
          throw e;
        }
        if (opts.json) {
          printJson({ running: true, ...host.daemon, socket: paths.apiSocket, version: host.version, domains: host.domains });
          return;
        }
        process.stdout.write(
          keyValues([
            ['xvmd', 'running'],
            ['PID', host.daemon.pid],
            ['Version', host.version],
            ['Uptime', `${host.daemon.uptimeSec} s`],
            ['Socket', paths.apiSocket],
            ['Domains', `${host.domains.running} running, ${host.domains.total} defined`],
          ]),
        );
      }),
    );
}
