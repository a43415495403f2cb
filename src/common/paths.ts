// Where xvm keeps its state. One place decides, everyone else asks.
//
//   XVM_HOME=DIR  -> DIR/lib, DIR/run, DIR/log (tests, non-root users)
//   root          -> /var/lib/xvm, /run/xvm, /var/log/xvm
//   other users   -> ~/.xvm/{lib,run,log}
import os from 'node:os';
import path from 'node:path';

export interface StatePaths {
  /** Persistent state: domain definitions, images, pools. */
  lib: string;
  /** Runtime state: sockets, pidfiles, FIFOs. */
  run: string;
  /** Logs: daemon log, per-domain console logs. */
  log: string;
  /** The daemon's API socket. */
  apiSocket: string;
  /** The daemon's pidfile. */
  daemonPid: string;
  /** Default guest image cache (XVM_IMAGE_DIR overrides). */
  images: string;
}

export function statePaths(env: NodeJS.ProcessEnv = process.env): StatePaths {
  let lib: string, run: string, log: string;
  if (env.XVM_HOME) {
    const home = path.resolve(env.XVM_HOME);
    lib = path.join(home, 'lib');
    run = path.join(home, 'run');
    log = path.join(home, 'log');
  } else if (process.getuid?.() === 0) {
    lib = '/var/lib/xvm';
    run = '/run/xvm';
    log = '/var/log/xvm';
  } else {
    const home = path.join(os.homedir(), '.xvm');
    lib = path.join(home, 'lib');
    run = path.join(home, 'run');
    log = path.join(home, 'log');
  }
  return {
    lib,
    run,
    log,
    apiSocket: path.join(run, 'xvmd.sock'),
    daemonPid: path.join(run, 'xvmd.pid'),
    images: env.XVM_IMAGE_DIR ? path.resolve(env.XVM_IMAGE_DIR) : path.join(lib, 'images'),
  };
}
