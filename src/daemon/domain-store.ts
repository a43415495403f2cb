// Persistence of domain definitions and their last known status, and of the
// running domains' runtime entries, in the store (src/store), laid out as Xen
// does (docs/store.md, "How xvmd uses the store"):
//
//   /vm/<uuid>/{name,uuid,type,memory,maxmem,vcpus,maxvcpus,on_poweroff,on_reboot,on_crash,accel,autostart}
//   /vm/<uuid>/image/{ostype,kernel,ramdisk,cmdline,root,extra}
//   /vm/<uuid>/device/{vbd,vif}/<n>/<field>       the configured devices, one node per field
//   /vm/<uuid>/xvm/config                         the whole normalized configuration as JSON
//                                                 (split into config/0, config/1, … past 4096 bytes)
//   /vm/<uuid>/xvm/{state,created_at,last_exit/{reason,at}}
//   /local/domain/<domid>/…                       runtime state of a running domain
//   /local/domain/0/{name,domid}                  the control domain ("Domain-0")
//   /tool/xvm/next-domid                          the next domain id to hand out
//
// Every change is one store transaction applied to the in-memory tree at once
// (so reads right after see it) and durable when the promise it returns
// resolves; flush() waits for every change made so far. xvmd answers API
// requests only after flush() (see main.ts), so an acknowledged definition
// survives kill -9.
import fs from 'node:fs';
import path from 'node:path';
import type { DomainConfig } from '../config/index.js';
import { Store, StoreError, layout, type Transaction } from '../store/index.js';

export type DomainState = 'defined' | 'running' | 'paused' | 'shutdown' | 'crashed';
const STATES: readonly DomainState[] = ['defined', 'running', 'paused', 'shutdown', 'crashed'];

export interface DomainStatus {
  state: DomainState;
  /** Why the domain last stopped, in words a user understands. */
  lastExit?: { reason: string; at: string };
}

export interface DomainRecord {
  config: DomainConfig & { uuid: string };
  createdAt: string;
  status: DomainStatus;
}

/** What goes into /local/domain/<domid> besides what the definition says. */
export interface RuntimeExtras {
  /** The console log file (console/log). */
  consoleLog?: string;
  /** The balloon target set by mem-set, MiB (memory/target; default: the config's memory). */
  memoryTargetMiB?: number;
  /** vCPUs online after vcpu-set (cpu/N/availability; default: the config's vcpus). */
  vcpusOnline?: number;
}

/** Where xvmd keeps its own counters in the store. */
export const XVM_TOOL_PATH = '/tool/xvm';
export const NEXT_DOMID_PATH = '/tool/xvm/next-domid';
/** Domain ids handed out: 1 … 0x7fef (Xen reserves 0x7ff0 and up); then they wrap, skipping ids in use. */
export const DOMID_LAST = 0x7fef;
const VALUE_MAX = 4096;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function writeFileAtomic(file: string, data: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

interface StoreLog {
  info(msg: string, f?: Record<string, unknown>): void;
  error(msg: string, f?: Record<string, unknown>): void;
}

/** A value cut to what one store node holds (4096 bytes), at a character boundary. */
function fit(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length <= VALUE_MAX) return b;
  let end = VALUE_MAX;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

/** The /vm/<uuid> subtree of a record: relative path → value. */
export function vmNodes(rec: DomainRecord): Map<string, Buffer> {
  const c = rec.config;
  const out = new Map<string, Buffer>();
  const put = (k: string, v: string | number | boolean | undefined) => {
    if (v === undefined) return;
    out.set(k, fit(typeof v === 'boolean' ? (v ? '1' : '0') : String(v)));
  };
  put('name', c.name);
  put('uuid', c.uuid);
  put('type', c.type);
  put('memory', c.memory);
  put('maxmem', c.maxmem);
  put('vcpus', c.vcpus);
  put('maxvcpus', c.maxvcpus);
  put('on_poweroff', c.on_poweroff);
  put('on_reboot', c.on_reboot);
  put('on_crash', c.on_crash);
  put('accel', c.accel);
  put('autostart', c.autostart);
  put('image/ostype', c.type === 'hvm' ? 'hvm' : 'linux');
  put('image/kernel', c.kernel);
  put('image/ramdisk', c.ramdisk);
  put('image/cmdline', c.cmdline);
  put('image/root', c.root);
  put('image/extra', c.extra);
  const devices = (cls: string, list: readonly object[] | undefined) => {
    (list ?? []).forEach((dev, i) => {
      for (const [k, v] of Object.entries(dev)) {
        if (!/^[A-Za-z0-9_-]+$/.test(k)) continue;
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') put(`device/${cls}/${i}/${k}`, v);
      }
    });
  };
  devices('vbd', c.disk);
  devices('vif', c.vif);
  const json = Buffer.from(JSON.stringify(c), 'utf8');
  if (json.length <= VALUE_MAX) {
    out.set('xvm/config', json);
  } else {
    out.set('xvm/config', Buffer.alloc(0));
    for (let i = 0, off = 0; off < json.length; i++, off += VALUE_MAX) out.set(`xvm/config/${i}`, json.subarray(off, off + VALUE_MAX));
  }
  put('xvm/state', rec.status.state);
  put('xvm/created_at', rec.createdAt);
  if (rec.status.lastExit) {
    put('xvm/last_exit/reason', rec.status.lastExit.reason);
    put('xvm/last_exit/at', rec.status.lastExit.at);
  }
  return out;
}

/** Parses and checks one record read from a JSON file of the old layout (lib/domains/<uuid>.json). */
function checkRecord(v: unknown, where: string): DomainRecord {
  const r = v as Partial<DomainRecord> | null;
  const bad = (what: string) => new Error(`${where}: ${what}`);
  if (!r || typeof r !== 'object' || Array.isArray(r)) throw bad('not a JSON object');
  const c = r.config as Partial<DomainRecord['config']> | undefined;
  if (!c || typeof c !== 'object' || Array.isArray(c)) throw bad('"config" is missing or not an object');
  if (typeof c.name !== 'string' || c.name === '') throw bad('"config.name" is missing');
  if (typeof c.uuid !== 'string' || !UUID_RE.test(c.uuid)) throw bad(`"config.uuid" ${JSON.stringify(c.uuid)} is not a lower-case UUID`);
  if (typeof c.memory !== 'number' || typeof c.vcpus !== 'number') throw bad('"config.memory" / "config.vcpus" are missing');
  const st = r.status?.state;
  if (!STATES.includes(st as DomainState)) throw bad(`"status.state" ${JSON.stringify(st)} is not one of ${STATES.join(', ')}`);
  const le = r.status?.lastExit;
  return {
    config: c as DomainRecord['config'],
    createdAt: typeof r.createdAt === 'string' ? r.createdAt : new Date(0).toISOString(),
    status: {
      state: st as DomainState,
      ...(le && typeof le.reason === 'string' && typeof le.at === 'string' ? { lastExit: { reason: le.reason, at: le.at } } : {}),
    },
  };
}

export class DomainStore {
  private pending = new Set<Promise<void>>();
  /** Orders introductions and releases of domains after their entries are durable. */
  private domainQueue: Promise<void> = Promise.resolve();

  constructor(
    readonly store: Store,
    private readonly libDir: string,
    private readonly log?: StoreLog,
  ) {}

  // ---- plumbing -------------------------------------------------------

  /**
   * Runs `fn` in a transaction and commits it synchronously: the change is in
   * the tree when this returns (no other commit can interleave), and durable
   * when the returned promise resolves (also awaited by flush()).
   */
  private commit(what: string, fn: (tx: Transaction) => void): Promise<void> {
    const tx = this.store.startTransaction();
    try {
      fn(tx);
    } catch (e) {
      tx.abort();
      throw e;
    }
    const durable = tx.commit();
    const tracked = durable.catch((e) => {
      this.log?.error('store write failed', { what, error: (e as Error).message });
    });
    this.pending.add(tracked);
    void tracked.finally(() => this.pending.delete(tracked));
    return durable;
  }

  /** commit() for runtime bookkeeping: a failure is logged, never thrown at the lifecycle code. */
  private safely(what: string, fn: (tx: Transaction) => void): void {
    try {
      void this.commit(what, fn).catch(() => undefined);
    } catch (e) {
      this.log?.error('store write failed', { what, error: (e as Error).message });
    }
  }

  /**
   * Resolves once every change made so far is durable and the domain
   * introductions/releases queued so far are done (failures are logged, not
   * thrown). Later changes are not waited for, so a busy daemon never stalls it.
   */
  async flush(): Promise<void> {
    const queue = this.domainQueue;
    await Promise.all([...this.pending]);
    await queue;
  }

  private readJoined(p: string): Buffer {
    const v = this.store.readBuffer(p);
    if (v.length > 0) return v;
    const parts = this.store
      .directory(p)
      .filter((c) => /^\d+$/.test(c))
      .sort((a, b) => Number(a) - Number(b));
    return Buffer.concat(parts.map((c) => this.store.readBuffer(`${p}/${c}`)));
  }

  // ---- definitions ----------------------------------------------------

  /**
   * Prepares the tree (Domain-0, /vm, /tool/xvm), imports the JSON files of
   * the old layout on first start, and returns every definition in the store.
   */
  async loadAll(): Promise<{ records: DomainRecord[]; errors: string[] }> {
    const errors: string[] = [];
    this.commit('control domain entry', (tx) => {
      const set = (p: string, v: string) => {
        if (tx.tryRead(p) !== v) tx.write(p, v);
      };
      set('/local/domain/0/name', 'Domain-0');
      set('/local/domain/0/domid', '0');
      if (!tx.exists('/vm')) tx.mkdir('/vm');
      if (!tx.exists(XVM_TOOL_PATH)) tx.mkdir(XVM_TOOL_PATH);
    });
    await this.migrate(errors);
    await this.flush();
    const records: DomainRecord[] = [];
    for (const uuid of this.store.directory('/vm').sort()) {
      try {
        records.push(this.readRecord(uuid));
      } catch (e) {
        errors.push(`/vm/${uuid}: ${(e as Error).message}`);
      }
    }
    return { records, errors };
  }

  /** The record of `uuid` as the store holds it; throws if it is missing or malformed. */
  readRecord(uuid: string): DomainRecord {
    const base = `/vm/${uuid}`;
    let config: DomainRecord['config'];
    try {
      config = JSON.parse(this.readJoined(`${base}/xvm/config`).toString('utf8')) as DomainRecord['config'];
    } catch (e) {
      throw new Error(`${base}/xvm/config: ${e instanceof StoreError ? e.message : `not valid JSON (${(e as Error).message})`}`);
    }
    if (!config || typeof config !== 'object' || config.uuid !== uuid || typeof config.name !== 'string') {
      throw new Error(`${base}/xvm/config does not describe domain ${uuid}`);
    }
    const state = this.store.tryRead(`${base}/xvm/state`) ?? 'defined';
    if (!STATES.includes(state as DomainState)) throw new Error(`${base}/xvm/state: ${JSON.stringify(state)} is not one of ${STATES.join(', ')}`);
    const reason = this.store.tryRead(`${base}/xvm/last_exit/reason`);
    const at = this.store.tryRead(`${base}/xvm/last_exit/at`);
    return {
      config,
      createdAt: this.store.tryRead(`${base}/xvm/created_at`) ?? new Date(0).toISOString(),
      status: { state: state as DomainState, ...(reason !== undefined && at !== undefined ? { lastExit: { reason, at } } : {}) },
    };
  }

  /** The record of `uuid`, or undefined when the store has none (or a malformed one). */
  get(uuid: string): DomainRecord | undefined {
    if (!UUID_RE.test(uuid) || !this.store.exists(`/vm/${uuid}`)) return undefined;
    try {
      return this.readRecord(uuid);
    } catch {
      return undefined;
    }
  }

  /** Every well-formed definition in the store, by uuid. */
  list(): Map<string, DomainRecord> {
    const out = new Map<string, DomainRecord>();
    if (!this.store.exists('/vm')) return out;
    for (const uuid of this.store.directory('/vm')) {
      const r = this.get(uuid);
      if (r) out.set(uuid, r);
    }
    return out;
  }

  /** Writes the record under /vm/<uuid> (only the nodes that changed; nodes it no longer has go). */
  save(rec: DomainRecord): void {
    const base = layout.vm(rec.config.uuid);
    const want = vmNodes(rec);
    const keep = new Set<string>();
    for (const k of want.keys()) {
      const parts = k.split('/');
      for (let i = 1; i <= parts.length; i++) keep.add(parts.slice(0, i).join('/'));
    }
    this.commit(`definition of ${rec.config.name}`, (tx) => {
      const prune = (rel: string) => {
        const abs = rel ? `${base}/${rel}` : base;
        for (const child of tx.directory(abs)) {
          const r = rel ? `${rel}/${child}` : child;
          if (!keep.has(r)) tx.rm(`${base}/${r}`);
          else prune(r);
        }
      };
      if (tx.exists(base)) prune('');
      for (const [k, v] of want) {
        const p = `${base}/${k}`;
        const cur = tx.exists(p) ? tx.readBuffer(p) : undefined;
        if (!cur || !cur.equals(v)) tx.write(p, v);
      }
    });
  }

  remove(uuid: string): void {
    const base = layout.vm(uuid);
    this.commit(`removal of ${uuid}`, (tx) => {
      if (tx.exists(base)) tx.rm(base);
    });
  }

  /** Domain ids grow from 1 (0 is the control domain); an id in use under /local/domain is skipped. */
  nextDomid(): number {
    let n = Number(this.store.tryRead(NEXT_DOMID_PATH));
    if (!Number.isInteger(n) || n < 1 || n > DOMID_LAST) n = 1;
    for (let tries = 0; this.store.exists(`/local/domain/${n}`); tries++) {
      if (tries > DOMID_LAST) throw new StoreError('ENOSPC', 'every domain id is in use');
      n = n >= DOMID_LAST ? 1 : n + 1;
    }
    const next = n >= DOMID_LAST ? 1 : n + 1;
    this.commit('domain id counter', (tx) => tx.write(NEXT_DOMID_PATH, String(next)));
    return n;
  }

  // ---- runtime entries ------------------------------------------------

  /**
   * A domain is running as `domid`: (re)writes /local/domain/<domid> as Xen
   * lays it out (a fresh entry gets Xen's permissions: the subtree is domain
   * 0's and readable by the domain; device/, control/, data/, memory/ are the
   * domain's), then introduces the domain once that is durable (fires
   * @introduceDomain). An entry left by another domain at that id is replaced.
   */
  domainUp(rec: DomainRecord, domid: number, extras: RuntimeExtras = {}): void {
    const c = rec.config;
    if (!Number.isInteger(domid) || domid < 1 || domid > 65535 || !UUID_RE.test(c.uuid)) {
      this.log?.error('not writing a runtime entry: bad domain id or uuid', { domain: c.name, domid, uuid: c.uuid });
      return;
    }
    const base = layout.domain(domid);
    const vm = layout.vm(c.uuid);
    this.safely(`runtime entry of ${c.name} (domain ${domid})`, (tx) => {
      if (tx.exists(base) && tx.tryRead(`${base}/vm`) !== vm) tx.rm(base);
      const fresh = !tx.exists(base);
      const set = (rel: string, v: string) => {
        const p = `${base}/${rel}`;
        const b = fit(v);
        if (!tx.exists(p) || !tx.readBuffer(p).equals(b)) tx.write(p, b);
      };
      if (fresh) {
        tx.mkdir(base);
        tx.setPerms(base, ['n0', `r${domid}`]);
      }
      set('vm', vm);
      set('name', c.name);
      set('domid', String(domid));
      set('memory/target', String((extras.memoryTargetMiB ?? c.memory) * 1024));
      if (c.maxmem !== undefined) set('memory/static-max', String(c.maxmem * 1024));
      const maxv = Math.max(c.vcpus, c.maxvcpus ?? 0);
      const online = extras.vcpusOnline ?? c.vcpus;
      for (let i = 0; i < maxv; i++) set(`cpu/${i}/availability`, i < online ? 'online' : 'offline');
      set('console/type', 'serial');
      if (extras.consoleLog) set('console/log', extras.consoleLog);
      if (fresh) {
        for (const sub of ['device', 'control', 'data', 'memory']) {
          tx.mkdir(`${base}/${sub}`);
          tx.setPerms(`${base}/${sub}`, [`n${domid}`]);
        }
      }
      // Ids handed out before a crash may not have reached the counter: never hand this one out again.
      const counter = Number(tx.tryRead(NEXT_DOMID_PATH));
      if (!Number.isInteger(counter) || counter <= domid) tx.write(NEXT_DOMID_PATH, String(domid >= DOMID_LAST ? 1 : domid + 1));
    });
    this.afterDurable(() => {
      if (this.store.exists(`${base}/vm`) && !this.store.isDomainIntroduced(domid)) this.store.introduceDomain(domid);
    });
  }

  /**
   * A paravirtual device of a running domain, laid out as Xen's toolstack
   * does: the frontend at /local/domain/<domid>/device/<cls>/<devid> (the
   * domain's, readable by domain 0) and the backend at
   * /local/domain/0/backend/<cls>/<domid>/<devid> (domain 0's, readable by
   * the domain), each naming the other. domainDown() removes both.
   */
  deviceUp(domid: number, cls: string, devid: number, frontend: Record<string, string>, backend: Record<string, string>): void {
    const fe = layout.frontend(domid, cls, devid);
    const be = layout.backend(domid, cls, devid);
    this.safely(`${cls} ${devid} of domain ${domid}`, (tx) => {
      if (!tx.exists(layout.domain(domid))) return; // the domain went away meanwhile
      const entries: [string, string[], Record<string, string>][] = [
        [fe, [`n${domid}`, 'r0'], { backend: be, 'backend-id': '0', ...frontend }],
        [be, ['n0', `r${domid}`], { frontend: fe, 'frontend-id': String(domid), ...backend }],
      ];
      for (const [p, perms, values] of entries) {
        if (tx.exists(p)) tx.rm(p);
        tx.mkdir(p);
        tx.setPerms(p, perms);
        for (const [k, v] of Object.entries(values)) tx.write(`${p}/${k}`, v);
      }
    });
  }

  /** A device went away from a running domain (hot unplug): removes both entries. */
  deviceDown(domid: number, cls: string, devid: number): void {
    this.safely(`removal of ${cls} ${devid} of domain ${domid}`, (tx) => {
      for (const p of [layout.frontend(domid, cls, devid), layout.backend(domid, cls, devid)]) if (tx.exists(p)) tx.rm(p);
    });
  }

  /** A domain stopped: removes /local/domain/<domid> and its backend entries, then releases it (fires @releaseDomain). */
  domainDown(domid: number): void {
    if (!Number.isInteger(domid) || domid < 1 || domid > 65535) return;
    const base = layout.domain(domid);
    this.safely(`removal of domain ${domid}`, (tx) => {
      if (tx.exists(base)) tx.rm(base);
      const backends = '/local/domain/0/backend';
      if (tx.exists(backends)) {
        for (const cls of tx.directory(backends)) if (tx.exists(`${backends}/${cls}/${domid}`)) tx.rm(`${backends}/${cls}/${domid}`);
      }
    });
    this.afterDurable(() => {
      if (!this.store.exists(base) && this.store.isDomainIntroduced(domid)) this.store.releaseDomain(domid);
    });
  }

  /** After a restart: removes the runtime entries of domains that are not running any more. */
  pruneRuntime(live: Iterable<number>): void {
    const keep = new Set(live);
    if (!this.store.exists('/local/domain')) return;
    for (const d of this.store.directory('/local/domain')) {
      if (!/^\d+$/.test(d) || d === '0' || keep.has(Number(d))) continue;
      const domid = Number(d);
      if (domid > 65535) continue;
      this.log?.info('removing the runtime entry of a domain that is gone', { domid, name: this.store.tryRead(`/local/domain/${d}/name`) });
      this.domainDown(domid);
    }
  }

  private afterDurable(fn: () => void): void {
    const durable = Promise.all([...this.pending]).then(() => undefined);
    this.domainQueue = this.domainQueue
      .then(() => durable)
      .then(fn)
      .catch((e) => this.log?.error('store domain introduction failed', { error: (e as Error).message }));
  }

  // ---- migration from the JSON files of earlier versions ---------------

  /** lib/domains/*.json and lib/next-domid → the store, then the folder becomes lib/domains.migrated. */
  private async migrate(errors: string[]): Promise<void> {
    const dir = path.join(this.libDir, 'domains');
    let st: fs.Stats;
    try {
      st = fs.statSync(dir);
    } catch {
      return;
    }
    if (!st.isDirectory()) return;
    let imported = 0;
    for (const name of fs.readdirSync(dir).sort()) {
      if (!name.endsWith('.json')) continue;
      const file = path.join(dir, name);
      try {
        const rec = checkRecord(JSON.parse(fs.readFileSync(file, 'utf8')), file);
        if (this.store.exists(layout.vm(rec.config.uuid))) continue; // imported before a crash
        this.save(rec);
        imported++;
      } catch (e) {
        errors.push(`${file} (not imported, kept in domains.migrated): ${(e as Error).message}`);
      }
    }
    const counterFile = path.join(this.libDir, 'next-domid');
    try {
      const n = Number(fs.readFileSync(counterFile, 'utf8').trim());
      const cur = Number(this.store.tryRead(NEXT_DOMID_PATH));
      if (Number.isInteger(n) && n >= 1 && n <= DOMID_LAST && !(Number.isInteger(cur) && cur >= n)) {
        this.commit('domain id counter', (tx) => tx.write(NEXT_DOMID_PATH, String(n)));
      }
    } catch {
      /* no counter file */
    }
    await this.flush();
    let dest = path.join(this.libDir, 'domains.migrated');
    if (fs.existsSync(dest)) dest = `${dest}.${Date.now()}`;
    fs.renameSync(dir, dest);
    if (fs.existsSync(counterFile)) fs.renameSync(counterFile, `${counterFile}.migrated`);
    this.log?.info('domain definitions imported into the store', { imported, from: dir, movedTo: dest });
  }
}

/** Opens the store of a state root (data under <lib>/store) without serving it. */
export function storeDataDir(libDir: string): string {
  return path.join(libDir, 'store');
}
