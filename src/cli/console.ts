// xvm console NAME, xvm log NAME [--follow]
//
// On a terminal, `console` is interactive: raw mode, Ctrl-] detaches and the
// guest keeps running. When stdin is not a terminal, stdin's bytes go to the
// guest and the command detaches a moment after stdin ends (--linger), so
// scripts can do `echo 'uname -a' | xvm console web1`.
import type { Command } from 'commander';
import type WebSocket from 'ws';
import type { XvmClient } from '../api/client.js';
import { action, client, CliError } from './context.js';

const ESCAPE = 0x1d; // Ctrl-]

/** Opens the console websocket; rejects with the daemon's message if it refuses. */
function open(c: XvmClient, name: string, history: number): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = c.openConsole(name, { history });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        let msg = `HTTP ${res.statusCode}`;
        try {
          msg = JSON.parse(body).error.message;
        } catch {
          /* keep status */
        }
        reject(new CliError(msg));
      });
    });
    ws.once('error', (e: Error) => reject(new CliError(`cannot open the console of '${name}': ${e.message.includes('ENOENT') || e.message.includes('ECONNREFUSED') ? "xvmd is not running (start it with 'xvm daemon start')" : e.message}`)));
  });
}

export async function attachConsole(c: XvmClient, name: string, opts: { history?: number; linger?: number; readOnly?: boolean }): Promise<void> {
  const ws = await open(c, name, opts.history ?? 0);
  const stdin = process.stdin;
  const interactive = !opts.readOnly && stdin.isTTY;
  await new Promise<void>((resolve) => {
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      if (interactive) {
        stdin.setRawMode(false);
        process.stderr.write(`\r\n[detached from ${name}]\r\n`);
      }
      stdin.pause();
      ws.close();
      resolve();
    };
    ws.on('message', (data: Buffer) => process.stdout.write(data));
    ws.on('close', finish);
    if (opts.readOnly) return;
    if (interactive) {
      process.stderr.write(`[connected to ${name}; Ctrl-] detaches]\r\n`);
      stdin.setRawMode(true);
      stdin.on('data', (d: Buffer) => {
        const i = d.indexOf(ESCAPE);
        if (i >= 0) {
          if (i > 0) ws.send(d.subarray(0, i));
          finish();
        } else ws.send(d);
      });
      stdin.resume();
    } else {
      // Serial lines want carriage returns: turn \n into \r as a terminal would.
      stdin.on('data', (d: Buffer) => ws.send(Buffer.from(d.toString('latin1').replace(/\r?\n/g, '\r'), 'latin1')));
      stdin.on('end', () => setTimeout(finish, opts.linger ?? 1000));
      stdin.resume();
    }
  });
}

export function registerConsoleCommands(program: Command): void {
  program
    .command('console')
    .description('attach to a domain\'s serial console (Ctrl-] detaches; from a pipe: send stdin, then detach)')
    .argument('<name>')
    .option('--history <bytes>', 'first replay this many bytes of past output', '0')
    .option('--linger <ms>', 'when stdin is not a terminal: stay this long after its end to show the output', '1000')
    .action(
      action(async (name: string, opts: { history: string; linger: string }) => {
        await attachConsole(client(), name, { history: Number(opts.history), linger: Number(opts.linger) });
        process.exit(0);
      }),
    );

  program
    .command('log')
    .description('print a domain\'s console log (--follow: keep printing new output)')
    .argument('<name>')
    .option('-f, --follow', 'keep printing new output until interrupted')
    .option('--bytes <n>', 'how much of the end of the log to print', '65536')
    .action(
      action(async (name: string, opts: { follow?: boolean; bytes: string }) => {
        const c = client();
        const bytes = Number(opts.bytes);
        if (!Number.isInteger(bytes) || bytes < 1) throw new CliError('--bytes wants a positive integer', 2);
        if (opts.follow) {
          await attachConsole(c, name, { history: bytes, readOnly: true });
          return;
        }
        process.stdout.write(await c.consoleLog(name, bytes));
      }),
    );
}
