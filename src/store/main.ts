// Standalone store: `node dist/src/store/main.js --socket PATH --data DIR`.
// Prints "store: listening on PATH" once the socket accepts connections;
// SIGTERM/SIGINT close it cleanly (kill -9 is safe too: see docs/store.md).
import path from 'node:path';
import { parseArgs } from 'node:util';
import { defaultStoreLocations } from './locations.js';
import { Store } from './store.js';
import { serveStore } from './server.js';

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        socket: { type: 'string' },
        data: { type: 'string' },
        'max-entries': { type: 'string' },
        'max-node-size': { type: 'string' },
        'max-watches': { type: 'string' },
        'max-transactions': { type: 'string' },
        'compact-bytes': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (e) {
    process.stderr.write(`store: ${(e as Error).message}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(
      'usage: store [--socket PATH] [--data DIR] [--max-entries N] [--max-node-size N] [--max-watches N] [--max-transactions N] [--compact-bytes N]\n',
    );
    return 0;
  }
  const defaults = defaultStoreLocations();
  const socketPath = path.resolve(args.socket ?? defaults.socketPath);
  const dataDir = path.resolve(args.data ?? defaults.dataDir);
  const quotas: Record<string, number> = {};
  for (const [opt, key] of [
    ['max-entries', 'maxEntries'],
    ['max-node-size', 'maxNodeSize'],
    ['max-watches', 'maxWatches'],
    ['max-transactions', 'maxTransactions'],
  ] as const) {
    const v = args[opt];
    if (v === undefined) continue;
    if (!/^\d+$/.test(v)) {
      process.stderr.write(`store: --${opt} wants a non-negative integer\n`);
      return 2;
    }
    quotas[key] = Number(v);
  }
  let compactBytes: number | undefined;
  if (args['compact-bytes'] !== undefined) {
    if (!/^\d+$/.test(args['compact-bytes'])) {
      process.stderr.write('store: --compact-bytes wants a non-negative integer\n');
      return 2;
    }
    compactBytes = Number(args['compact-bytes']);
  }
  const { mkdirSync } = await import('node:fs');
  mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o700 });
  const store = await Store.open({ dataDir, quotas, compactBytes });
  if (store.recoveryNote) process.stderr.write(`store: recovery: ${store.recoveryNote}\n`);
  const server = await serveStore(store, socketPath, { log: (l) => process.stderr.write(`${l}\n`) });
  process.stdout.write(`store: listening on ${socketPath} (data ${dataDir}, ${store.stats().nodes} nodes)\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await server.close();
  await store.close();
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`store: ${(e as Error).message}\n`);
    process.exitCode = 1;
  },
);
