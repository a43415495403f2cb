// xvmd: the daemon. Loads domain definitions, re-adopts running domains,
// serves the API on a unix socket, and leaves every guest running when it
// stops.
import fs from 'node:fs';
import { statePaths } from '../common/paths.js';
import { errorMessage } from '../common/errors.js';
import { pidAlive } from '../engine/process.js';
import { Store, serveStore, defaultStoreLocations, type StoreServer } from '../store/index.js';
import { DomainManager } from './domains.js';
import { storeDataDir } from './domain-store.js';
import { Logger, type Level } from './log.js';
import { buildServer, listenUnix } from './server.js';
import { VERSION } from './version.js';
import { openDeviceLog } from './device-log.js';
import { autostartDomains } from './autostart.js';
import { DiskProvider } from './disks.js';
import { HvmProvider } from './hvm.js';
import { restoreSaved, startRelocation } from '../migrate/service.js';
import { WebService } from './web.js';
import { NicProvider } from './nics.js';
import { NetworkManager } from './networks.js';

function usage(): never {
  process.stderr.write('usage: xvmd [--foreground] [--log-level debug|info|warn|error]\n');
  process.exit(2);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  let foreground = false;
  let level: Level = (process.env.XVM_LOG_LEVEL as Level) || 'info';
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--foreground' || a === '-f') foreground = true;
    else if (a === '--log-level') level = (args[++i] as Level) ?? usage();
    else if (a === '--help' || a === '-h') usage();
    else {
      process.stderr.write(`xvmd: unknown argument '${a}'\n`);
      usage();
    }
  }
  const paths = statePaths();
  for (const dir of [paths.lib, paths.run, paths.log]) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });

  // One daemon per state root.
  try {
    const other = Number(fs.readFileSync(paths.daemonPid, 'utf8').trim());
    if (other && other !== process.pid && pidAlive(other)) {
      process.stderr.write(`xvmd: already running (pid ${other}) for ${paths.run}\n`);
      process.exit(1);
    }
  } catch {
    /* no pidfile */
  }
  fs.writeFileSync(paths.daemonPid, `${process.pid}\n`);

  const log = new Logger({ file: `${paths.log}/xvmd.log`, level, stderr: foreground || Boolean(process.env.INVOCATION_ID) });
  // Under systemd (INVOCATION_ID set) the log also goes to stderr: the journal.
  openDeviceLog(`${paths.log}/devices.log`);
  log.info('xvmd starting', { version: VERSION, pid: process.pid, lib: paths.lib, run: paths.run });
  // The store (xenstored) lives in this process: the source of truth for
  // definitions and runtime state, served over xs_wire for xenstore-utils and
  // 'xvm store'.
  const storeSocket = defaultStoreLocations().socketPath;
  let store: Store;
  let storeServer: StoreServer;
  try {
    store = await Store.open({ dataDir: storeDataDir(paths.lib) });
  } catch (e) {
    throw new Error(`cannot open the store in ${storeDataDir(paths.lib)}: ${errorMessage(e)}`);
  }
  if (store.recoveryNote) log.warn('store recovered after a crash', { note: store.recoveryNote });
  try {
    storeServer = await serveStore(store, storeSocket, { log: (line) => log.warn(line) });
  } catch (e) {
    await store.close();
    throw new Error(`cannot serve the store on ${storeSocket}: ${errorMessage(e)}`);
  }
  log.info('store open', { data: store.dataDir, socket: storeSocket, nodes: store.stats().nodes });
  const domains = new DomainManager(paths, log, store);
  domains.addProvider(new DiskProvider({ paths, log }));
  domains.addProvider(new HvmProvider({ paths, log }));
  const networks = new NetworkManager(paths, log);
  networks.adoptAll();
  domains.addProvider(new NicProvider(networks));
  await domains.load();
  // The relocation service (incoming live migrations): only when configured.
  const relocation = await startRelocation(domains, paths, log);

  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    log.info('xvmd stopping; domains keep running', { why });
    domains.close();
    relocation?.close();
    // Bounded: a console client that does not answer the websocket close
    // handshake must not hold xvmd (and a host shutdown) for ws's 30 s.
    const bounded = (p: Promise<unknown>) => Promise.race([p.catch(() => undefined), new Promise((r) => setTimeout(r, 3000).unref())]);
    await bounded(web.close());
    await bounded(app.close());
    fs.rmSync(paths.apiSocket, { force: true });
    await domains.flushStore().catch(() => undefined);
    await storeServer.close().catch(() => undefined);
    await store.close().catch((e) => log.error('closing the store failed', { error: errorMessage(e) }));
    try {
      if (Number(fs.readFileSync(paths.daemonPid, 'utf8').trim()) === process.pid) fs.rmSync(paths.daemonPid);
    } catch {
      /* gone */
    }
    process.exit(0);
  };
  // The web manager: HTTPS listener only when <lib>/xvmd.json enables it (xvm web enable).
  const web = new WebService({ paths, log });
  const serverDeps = { paths, domains, log, startedAt: new Date(), storeSocket, onStop: () => void stop('API request'), web };
  const app = await buildServer(serverDeps);
  // An answer goes out only once the store writes it caused are durable.
  app.addHook('onSend', async () => {
    await domains.flushStore();
  });
  await listenUnix(app, paths.apiSocket);
  log.info('xvmd ready', { socket: paths.apiSocket });
  await web.start(serverDeps);
  // The domains service: restore the domains saved by 'daemon stop --domains=save',
  // then autostart domains that are not running (re-adopted/restored ones are).
  void restoreSaved(domains, paths, log).then(() => autostartDomains(domains, log));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGHUP', () => undefined);
  process.on('uncaughtException', (e) => {
    log.error('uncaught exception', { error: errorMessage(e), stack: (e as Error).stack });
  });
  process.on('unhandledRejection', (e) => {
    log.error('unhandled rejection', { error: errorMessage(e) });
  });
}

main().catch((e) => {
  process.stderr.write(`xvmd: ${errorMessage(e)}\n`);
  process.exit(1);
});
