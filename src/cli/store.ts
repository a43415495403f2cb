// `xvm store …`: the store for people without xenstore-utils. Talks xs_wire
// to the store socket (src/store/client.ts); read commands take --json.
// Exit codes: 0 ok, 1 failure, 2 usage.
import { Command, Option, InvalidArgumentError } from 'commander';
import { StoreClient } from '../store/client.js';
import { StoreError } from '../store/errors.js';

class UsageError extends Error {}

function fail(e: unknown): void {
  if (e instanceof UsageError) {
    process.stderr.write(`xvm store: ${e.message}\n`);
    process.exitCode = 2;
    return;
  }
  const msg = e instanceof StoreError ? e.message.replace(/^E[A-Z0-9]+: /, '') : (e as Error).message;
  process.stderr.write(`xvm store: ${msg}\n`);
  process.exitCode = 1;
}

function run(getSocketPath: () => string, fn: (c: StoreClient) => Promise<void>): Promise<void> {
  return (async () => {
    let c: StoreClient | null = null;
    try {
      c = await StoreClient.connect(getSocketPath());
      await fn(c);
    } catch (e) {
      fail(e);
    } finally {
      c?.close();
    }
  })();
}

interface Entry {
  path: string;
  value: string;
  perms?: string[];
}

async function walk(c: StoreClient, path: string, withPerms: boolean, out: Entry[]): Promise<void> {
  const value = await c.read(path);
  const e: Entry = { path, value };
  if (withPerms) e.perms = await c.getPerms(path);
  out.push(e);
  for (const child of await c.directory(path)) {
    await walk(c, path === '/' ? `/${child}` : `${path}/${child}`, withPerms, out);
  }
}

function depthOf(root: string, p: string): number {
  if (p === root) return 0;
  const rest = root === '/' ? p.slice(1) : p.slice(root.length + 1);
  return rest.split('/').length;
}

/** Adds `store read|write|ls|rm|watch|chmod` under `program`. */
export function registerStoreCommands(program: Command, getSocketPath: () => string): Command {
  const store = program
    .command('store')
    .description('read and change the store (xenstore-compatible configuration database)');

  store
    .command('read')
    .description('print the value of each PATH')
    .argument('<path...>', 'store paths')
    .option('--json', 'print {"path": value, …}')
    .action((paths: string[], opts: { json?: boolean }) =>
      run(getSocketPath, async (c) => {
        const values: Record<string, string> = {};
        for (const p of paths) values[p] = await c.read(p);
        if (opts.json) process.stdout.write(JSON.stringify(values, null, 2) + '\n');
        else for (const p of paths) process.stdout.write(`${values[p]}\n`);
      }),
    );

  store
    .command('write')
    .description('set PATH to VALUE (several pairs are written in one transaction)')
    .argument('<path-value...>', 'PATH VALUE [PATH VALUE …]')
    .action((args: string[]) => {
      if (args.length % 2 !== 0) return fail(new UsageError('write wants PATH VALUE pairs'));
      return run(getSocketPath, async (c) => {
        await c.transaction(async (tx) => {
          for (let i = 0; i < args.length; i += 2) await c.write(args[i], args[i + 1], tx);
        });
      });
    });

  store
    .command('ls')
    .description('list PATH and everything below it (like xenstore-ls)')
    .argument('[path]', 'store path', '/')
    .option('-p, --perms', 'show permissions')
    .option('--json', 'print [{path, value, perms?}, …]')
    .action((path: string, opts: { perms?: boolean; json?: boolean }) =>
      run(getSocketPath, async (c) => {
        const out: Entry[] = [];
        await walk(c, path, !!opts.perms, out);
        if (opts.json) {
          process.stdout.write(JSON.stringify(out, null, 2) + '\n');
          return;
        }
        for (const e of out) {
          if (e.path === path) continue;
          const d = depthOf(path, e.path);
          const name = e.path.slice(e.path.lastIndexOf('/') + 1);
          const perms = e.perms ? `  (${e.perms.join(',')})` : '';
          process.stdout.write(`${' '.repeat(d - 1)}${name} = ${JSON.stringify(e.value)}${perms}\n`);
        }
      }),
    );

  store
    .command('rm')
    .description('remove each PATH and everything below it')
    .argument('<path...>', 'store paths')
    .action((paths: string[]) =>
      run(getSocketPath, async (c) => {
        for (const p of paths) await c.rm(p);
      }),
    );

  store
    .command('chmod')
    .description('set the permissions of PATH: owner first, then per-domain entries (n|r|w|b followed by a domid)')
    .argument('<path>', 'store path')
    .argument('<perm...>', 'e.g. n0 r5 b7')
    .option('-r, --recursive', 'apply to every node below PATH too')
    .action((path: string, perms: string[], opts: { recursive?: boolean }) => {
      for (const p of perms) if (!/^[nrwb]\d{1,5}$/.test(p)) return fail(new UsageError(`bad permission ${JSON.stringify(p)} (want n|r|w|b followed by a domid)`));
      return run(getSocketPath, async (c) => {
        const targets: string[] = [path];
        if (opts.recursive) {
          const all: Entry[] = [];
          await walk(c, path, false, all);
          targets.splice(0, 1, ...all.map((e) => e.path));
        }
        for (const t of targets) await c.setPerms(t, perms);
      });
    });

  store
    .command('watch')
    .description('print the path of every change at or below PATH (the first line is the watch itself)')
    .argument('<path>', 'store path, or @introduceDomain / @releaseDomain')
    .addOption(new Option('-n, --count <n>', 'stop after this many events').argParser((v) => {
      if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError('wants a positive integer');
      return Number(v);
    }))
    .option('--json', 'print one JSON object {path, token} per line')
    .action((path: string, opts: { count?: number; json?: boolean }) =>
      run(getSocketPath, async (c) => {
        let seen = 0;
        await new Promise<void>((resolve, reject) => {
          c.on('watch', (p, token) => {
            process.stdout.write(opts.json ? `${JSON.stringify({ path: p, token })}\n` : `${p}\n`);
            if (opts.count !== undefined && ++seen >= opts.count) resolve();
          });
          c.on('close', () => reject(new StoreError('EIO', 'the store closed the connection')));
          const stop = (): void => resolve();
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
          c.watch(path, 'xvm-store-watch').catch(reject);
        });
      }),
    );

  return store;
}
