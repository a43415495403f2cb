// xvm save / restore (xm save / xm restore): thin verbs over the API
// (src/migrate holds the logic, in xvmd).
import path from 'node:path';
import type { Command } from 'commander';
import { action, client, printJson } from './context.js';
import { progress, type Progress } from './progress.js';

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

function barUpdate(bar: Progress | undefined) {
  return (p: { phase: string; done: number; total: number }) => {
    if (!bar) return;
    const step = p.total ? `${p.phase} ${mib(p.done)} / ${mib(p.total)}` : p.done ? `${p.phase} ${mib(p.done)}` : p.phase;
    bar.update(step, p.total ? p.done : undefined, p.total || undefined);
  };
}

/** DOMAIN-20261201-223100.xvmsave: the name a save gets in <lib>/saves when none is given (the web manager uses it too). */
export function defaultSaveName(domain: string, at = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${domain}-${at.getFullYear()}${p(at.getMonth() + 1)}${p(at.getDate())}-${p(at.getHours())}${p(at.getMinutes())}${p(at.getSeconds())}.xvmsave`;
}

export function registerSaveCommands(program: Command): void {
  registerMigrateCommand(program);
  program
    .command('saves')
    .description('list the save files in <lib>/saves that xvm restore (and the web manager) can bring back')
    .option('--json', 'print JSON')
    .action(
      action(async (opts: { json?: boolean }) => {
        const l = await client().listSaves();
        if (opts.json) return printJson(l);
        if (l.files.length === 0) {
          process.stdout.write(`no save files in ${l.dir}\n`);
          return;
        }
        const rows = l.files.map((f) => [f.name, f.domain ?? '?', f.error ? 'unreadable' : `${f.state}${f.checkpoint ? ' (checkpoint)' : ''}`, mib(f.bytes), f.createdAt ?? f.modified, f.error ?? '']);
        const head = ['FILE', 'DOMAIN', 'STATE', 'SIZE', 'SAVED', ''];
        const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
        for (const r of [head, ...rows]) process.stdout.write(r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd() + '\n');
        process.stdout.write(`(in ${l.dir})\n`);
      }),
    );


  program
    .command('save')
    .description('save a running domain into FILE and stop it (--checkpoint: leave it running); xvm restore FILE continues it')
    .argument('<domain>')
    .argument('[file]', 'the save file (relative paths are taken from this directory; written by xvmd); default: <lib>/saves/DOMAIN-TIME.xvmsave, listed by xvm saves')
    .option('-c, --checkpoint', 'leave the domain running (the file is a checkpoint)')
    .option('--json', 'print JSON (sizes, time, downtime)')
    .action(
      action(async (domain: string, file: string | undefined, opts: { checkpoint?: boolean; json?: boolean }) => {
        const abs = file ? path.resolve(file) : path.join((await client().listSaves()).dir, defaultSaveName(domain));
        const bar = opts.json ? undefined : progress(`save ${domain}`);
        try {
          const r = await client().saveDomain(domain, abs, { checkpoint: Boolean(opts.checkpoint) }, barUpdate(bar));
          bar?.stop();
          if (opts.json) printJson(r);
          else {
            const down = r.downtimeMs !== null ? `, guest paused ${secs(r.downtimeMs)}` : '';
            process.stdout.write(`${r.checkpoint ? 'checkpoint of' : 'saved'} ${r.domain} to ${r.file}: ${mib(r.fileBytes)} in ${secs(r.ms)}${down}; ${r.domain} is ${r.state}\n`);
          }
        } catch (e) {
          bar?.stop();
          throw e;
        }
      }),
    );

  program
    .command('restore')
    .description('bring back a domain saved with xvm save (it continues where it was); --info only checks the file and shows what it holds')
    .argument('<file>', 'the save file')
    .option('--name <name>', 'restore a copy as a new domain with this name (new uuid)')
    .option('-p, --paused', 'leave the restored domain paused')
    .option('--info', 'check the file (format, checksum) and print its header; restore nothing')
    .option('--json', 'print JSON')
    .action(
      action(async (file: string, opts: { name?: string; paused?: boolean; info?: boolean; json?: boolean }) => {
        const abs = path.resolve(file);
        const c = client();
        if (opts.info) {
          const info = (await c.inspectSaveFile(abs)) as { header: { config: { name: string; memory: number }; state: string; checkpoint: boolean; createdAt: string; xvmVersion: string; qemu: { version: string; machine: string } }; formatVersion: number; fileBytes: number; sha256: string };
          if (opts.json) printJson(info);
          else {
            const h = info.header;
            process.stdout.write(
              [
                `File:      ${abs} (${mib(info.fileBytes)}, format ${info.formatVersion}, checksum ok)`,
                `Domain:    ${h.config.name} (${h.config.memory} MiB), ${h.state}${h.checkpoint ? ', checkpoint' : ''}`,
                `Saved:     ${h.createdAt} by xvm ${h.xvmVersion}, QEMU ${h.qemu.version} (${h.qemu.machine})`,
                `SHA-256:   ${info.sha256}`,
                '',
              ].join('\n'),
            );
          }
          return;
        }
        const bar = opts.json ? undefined : progress('restore');
        try {
          const r = await c.restoreDomain(abs, { name: opts.name, paused: Boolean(opts.paused) }, barUpdate(bar));
          bar?.stop();
          if (opts.json) printJson(r);
          else process.stdout.write(`restored ${r.domain} from ${r.file} in ${secs(r.ms)} (check ${secs(r.verifyMs)}); ${r.domain} is ${r.state}\n`);
        } catch (e) {
          bar?.stop();
          throw e;
        }
      }),
    );
}

export function registerMigrateCommand(program: Command): void {
  program
    .command('migrate')
    .description("move a running domain to another host's xvmd (its relocation service, see docs/save-restore.md); the domain leaves this host")
    .argument('<domain>')
    .argument('<target>', 'HOST[:PORT] of the target xvmd relocation service (default port 8002)')
    .option('-l, --live', 'live: copy memory while the guest runs, pause it only for the last pass')
    .option('--copy-storage', "copy the domain's volumes into the target's pools while it runs (no shared storage)")
    .option('--json', 'print JSON (time, downtime, bytes)')
    .action(
      action(async (domain: string, target: string, opts: { live?: boolean; copyStorage?: boolean; json?: boolean }) => {
        const bar = opts.json ? undefined : progress(`migrate ${domain}`);
        try {
          const r = await client().migrateDomain(domain, target, { live: Boolean(opts.live), copyStorage: Boolean(opts.copyStorage) }, barUpdate(bar));
          bar?.stop();
          if (opts.json) printJson(r);
          else {
            const disks = r.storage === 'copy' ? `, disks ${mib(r.storageBytes ?? 0)} copied` : r.storage === 'shared' ? ', disks on shared storage' : '';
            process.stdout.write(`migrated ${r.domain} to ${r.target}${r.live ? ' (live)' : ''}: memory ${mib(r.bytes)}${disks} in ${secs(r.ms)}, downtime ${r.downtimeMs} ms\n`);
          }
        } catch (e) {
          bar?.stop();
          throw e;
        }
      }),
    );
}
