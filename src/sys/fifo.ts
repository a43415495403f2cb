// mkfifo(3): the console FIFOs of every domain start. A libc call instead of
// spawning the mkfifo program keeps process spawns off the domain start path.
import { koffi, check } from './libc.js';

let fn: ((path: string, mode: number) => number) | undefined;

export function mkfifo(path: string, mode = 0o600): void {
  fn ??= koffi.load('libc.so.6').func('int mkfifo(const char *path, uint32_t mode)') as (path: string, mode: number) => number;
  check(`mkfifo ${path}`, fn(path, mode));
}
