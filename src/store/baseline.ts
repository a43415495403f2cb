// The benchmark's comparison point: a plain in-memory Map behind the very
// same socket server (framing, dispatch, reply queue), with no tree, no
// permissions, no transactions and no durability. READ, WRITE, WATCH and
// UNWATCH only; everything else answers ENOSYS.
import { StoreError } from './errors.js';
import type { WireBackend, WireSession } from './server.js';

export function mapBackend(): WireBackend {
  const map = new Map<string, Buffer>();
  const watches = new Map<string, { wpath: string; token: string; send: (p: string, t: string) => void }>();
  let nextId = 0;
  const fire = (p: string): void => {
    for (const w of watches.values()) {
      if (p === w.wpath || (p.startsWith(w.wpath) && p[w.wpath.length] === '/')) w.send(p, w.token);
    }
  };
  const nosys = (): never => {
    throw new StoreError('ENOSYS', 'not in the Map baseline');
  };
  return {
    open(): WireSession {
      const mine = new Set<string>();
      return {
        read(p) {
          const v = map.get(p);
          if (!v) throw new StoreError('ENOENT', p);
          return v;
        },
        write(p, v) {
          map.set(p, v);
          fire(p);
        },
        watch(p, token, send) {
          const key = `${nextId++}`;
          watches.set(key, { wpath: p, token, send });
          mine.add(key);
          queueMicrotask(() => send(p, token));
        },
        unwatch(p, token) {
          for (const k of mine) {
            const w = watches.get(k)!;
            if (w.wpath === p && w.token === token) {
              watches.delete(k);
              mine.delete(k);
              return;
            }
          }
          throw new StoreError('ENOENT', p);
        },
        resetWatches() {
          for (const k of mine) watches.delete(k);
          mine.clear();
        },
        close() {
          for (const k of mine) watches.delete(k);
        },
        mkdir: nosys,
        rm: nosys,
        directory: nosys,
        getPerms: nosys,
        setPerms: nosys,
        txStart: nosys,
        txEnd: nosys,
        introduce: nosys,
        release: nosys,
        resume: nosys,
        isIntroduced: nosys,
        getDomainPath: nosys,
      };
    },
  };
}
