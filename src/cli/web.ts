// `xvm web …`: the web manager's listener and access tokens (docs/web.md).
// Each verb is one API call on the unix socket.
import path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import type { WebStatus } from '../api/web-types.js';
import { action, client, CliError, keyValues, printJson, table } from './context.js';

function port(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 65535) throw new InvalidArgumentError('must be a number from 0 to 65535');
  return n;
}

function showStatus(st: WebStatus): string {
  return keyValues([
    ['enabled', st.enabled ? 'yes' : 'no'],
    ['listening', st.listening ? 'yes' : 'no'],
    ['url', st.url],
    ['listen', `${st.listen} port ${st.port}`],
    ['certificate', `${st.cert.file}${st.cert.selfSigned ? ' (self-signed, made by xvmd)' : ''}`],
    ['fingerprint', st.cert.fingerprint ? `SHA-256 ${st.cert.fingerprint}` : null],
    ['tokens', st.tokens],
    ['sessions', st.sessions],
    ...(st.error ? ([['error', st.error]] as [string, string][]) : []),
  ]);
}

export function registerWebCommands(program: Command): void {
  const web = program.command('web').description('the web manager: HTTPS listener, access tokens (docs/web.md)');
  web
    .command('enable')
    .description('turn the HTTPS listener on (kept in <lib>/xvmd.json; applies at once)')
    .option('--port <n>', 'TCP port (0: any free port)', port)
    .option('--listen <addr>', 'address to listen on (default 0.0.0.0)')
    .option('--cert <file>', 'PEM certificate (with --key; default: a self-signed one)')
    .option('--key <file>', 'PEM private key of --cert')
    .option('--json', 'print JSON')
    .action(
      action(async (o: { port?: number; listen?: string; cert?: string; key?: string; json?: boolean }) => {
        if ((o.cert === undefined) !== (o.key === undefined)) throw new CliError('give --cert and --key together', 2);
        const st = await client().webConfigure({
          enabled: true,
          ...(o.port !== undefined ? { port: o.port } : {}),
          ...(o.listen !== undefined ? { listen: o.listen } : {}),
          ...(o.cert !== undefined ? { cert: path.resolve(o.cert), key: path.resolve(o.key!) } : {}),
        });
        if (o.json) return printJson(st);
        process.stdout.write(`web manager listening at ${st.url}\n`);
        if (st.cert.fingerprint) process.stdout.write(`certificate SHA-256 ${st.cert.fingerprint}\n`);
        if (st.tokens === 0) process.stdout.write("make an access token to log in with: xvm web token\n");
      }),
    );
  web
    .command('disable')
    .description('turn the HTTPS listener off (tokens are kept)')
    .action(
      action(async () => {
        await client().webConfigure({ enabled: false });
        process.stdout.write('web manager disabled\n');
      }),
    );
  web
    .command('status')
    .description('whether the listener is on, its URL and certificate')
    .option('--json', 'print JSON')
    .action(
      action(async (o: { json?: boolean }) => {
        const st = await client().webStatus();
        if (o.json) return printJson(st);
        process.stdout.write(showStatus(st));
      }),
    );
  web
    .command('token')
    .description('make an access token and print it (shown this once; only its hash is kept)')
    .option('--name <name>', 'what the token is for', 'web')
    .option('--json', 'print JSON')
    .action(
      action(async (o: { name: string; json?: boolean }) => {
        const t = await client().webCreateToken(o.name);
        if (o.json) return printJson(t);
        process.stdout.write(`${t.token}\n`);
        if (process.stderr.isTTY) process.stderr.write(`token '${t.entry.name}' made; it is shown only now. Revoke it with: xvm web revoke ${t.entry.name}\n`);
      }),
    );
  web
    .command('tokens')
    .description('list access tokens (names and dates, never the tokens)')
    .option('--json', 'print JSON')
    .action(
      action(async (o: { json?: boolean }) => {
        const list = await client().webTokens();
        if (o.json) return printJson(list);
        process.stdout.write(table(['NAME', 'ID', 'CREATED', 'LAST USED'], list.map((t) => [t.name, t.id, t.created, t.lastUsed ?? '-'])));
      }),
    );
  web
    .command('revoke')
    .description('revoke an access token: it and every session logged in with it stop working at once')
    .argument('<name>', 'token name or id')
    .action(
      action(async (name: string) => {
        const r = await client().webRevokeToken(name);
        process.stdout.write(`token '${r.revoked.name}' revoked\n`);
      }),
    );
}
