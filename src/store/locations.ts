import path from 'node:path';
import { statePaths } from '../common/paths.js';

/** Where the store lives when nobody says otherwise (xvmd and the CLI use the same). */
export function defaultStoreLocations(env: NodeJS.ProcessEnv = process.env): { socketPath: string; dataDir: string } {
  const p = statePaths(env);
  return { socketPath: path.join(p.run, 'xenstored.sock'), dataDir: path.join(p.lib, 'store') };
}
