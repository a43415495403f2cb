// The store: a hierarchical tree of nodes (value + permissions + children)
// with Xen's semantics, transactions, watches, per-domain quotas, and the
// write-ahead log underneath (see wal.ts).
//
// Every mutation runs in a View: an overlay over the live tree that records
// which live nodes it looked at (their generation). A plain write is a
// one-operation view committed at once; a transaction is a view kept open
// across requests. Commit = check that every node the view looked at still
// has the generation it had (else EAGAIN), turn the overlay into put/del ops,
// apply them to the live tree with the same code that replays the log at
// open, and append them to the log as one record. The caller's promise
// resolves (and watch events fire) once that record is on stable storage.
import fs from 'node:fs';
import path from 'node:path';
import { StoreError } from './errors.js';
import { Wal, encodeRecord, encodeSnapshot, type Op, type WalOptions } from './wal.js';
import {
  canonicalize,
  canonicalizeWatch,
  isSpecialPath,
  parentOf,
  baseName,
  joinPath,
  isChildOf,
  depth,
  domainPath,
} from './path.js';
import { accessFor, parsePerms, formatPerm, ACCESS_READ, ACCESS_WRITE, ACCESS_OWNER, DOMID_MAX, type Perm } from './perms.js';
import { processExists } from '../common/pid.js';

/** Largest payload of one xs_wire message, and so the largest value. */
export const PAYLOAD_MAX = 4096;

export interface Quotas {
  /** Nodes a domain other than 0 may own. */
  maxEntries: number;
  /** Largest value a domain other than 0 may store, in bytes. */
  maxNodeSize: number;
  /** Watches per connection. */
  maxWatches: number;
  /** Open transactions per connection. */
  maxTransactions: number;
}

export const DEFAULT_QUOTAS: Quotas = {
  maxEntries: 1000,
  maxNodeSize: 2048,
  maxWatches: 128,
  maxTransactions: 10,
};

export interface StoreOptions {
  dataDir: string;
  quotas?: Partial<Quotas>;
  /** Compact the log into a snapshot once it grows past this (default 8 MiB). */
  compactBytes?: number;
  /** Benchmark comparison only: skip fdatasync (NOT durable). */
  unsafeNoSync?: boolean;
}

export type WatchCallback = (path: string, token: string) => void;

export interface OpOptions {
  /** Run the operation inside this transaction. */
  tx?: Transaction;
}

interface Node {
  value: Buffer;
  perms: Perm[];
  children: Set<string>;
  /** Seq of the last change of value, permissions or child list. */
  gen: number;
  /** Seq of the node's creation or last permission change. */
  pgen: number;
}

interface ChangeEvent {
  path: string;
  /** A recursive removal: watches below `path` fire too (with their own path). */
  removed: boolean;
}

interface Watch {
  conn: StoreConnection;
  /** Absolute path, or a special '@…' name. */
  wpath: string;
  /** The path as the client gave it (returned with events when relative). */
  given: string;
  /** For relative watches: the prefix to strip from event paths ('/local/domain/N/'). */
  relBase: string | null;
  token: string;
  cb: WatchCallback;
}

const EMPTY = Buffer.alloc(0);

function toBuffer(v: string | Buffer): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
}

/**
 * An overlay over the live tree; see the header comment.
 *
 * Two kinds of looking are recorded. get() is a full look (value, perms,
 * children): commit needs the node's `gen` unchanged. peek() only needs the
 * node to exist (or not) with the same permissions — used for the ancestors
 * of a node being created and the parent of one being removed — so that
 * transactions creating siblings under the same parent do not conflict: the
 * parent's child list is not logged, applyOp derives it from the put/del ops.
 */
class View {
  readonly overlay = new Map<string, Node | null>();
  /** path → gen seen by a full look (-1: absent). */
  readonly observed = new Map<string, number>();
  /** path → pgen seen by a peek (-1: absent). */
  readonly observedMeta = new Map<string, number>();
  /** Overlay nodes whose value or permissions this view set (they become put ops). */
  readonly changed = new Set<string>();
  /** Overlay nodes copied only to track their child list in this view. */
  private readonly childCopies = new Set<string>();
  readonly ownerDelta = new Map<number, number>();
  readonly events: ChangeEvent[] = [];
  stale = false;
  constructor(
    private readonly nodes: Map<string, Node>,
    readonly startSeq: number,
  ) {}

  get(p: string): Node | undefined {
    const o = this.overlay.get(p);
    if (o !== undefined) {
      if (o && this.childCopies.has(p) && !this.observed.has(p)) this.observed.set(p, o.gen);
      return o ?? undefined;
    }
    const n = this.nodes.get(p);
    if (!this.observed.has(p)) this.observed.set(p, n ? n.gen : -1);
    if (n && n.gen > this.startSeq) this.stale = true;
    return n;
  }

  peek(p: string): Node | undefined {
    const o = this.overlay.get(p);
    if (o !== undefined) return o ?? undefined;
    const n = this.nodes.get(p);
    if (!this.observed.has(p) && !this.observedMeta.has(p)) this.observedMeta.set(p, n ? n.pgen : -1);
    if (n && n.pgen > this.startSeq) this.stale = true;
    return n;
  }

  private copy(p: string, cur: Node): Node {
    const c: Node = { value: cur.value, perms: cur.perms, children: new Set(cur.children), gen: cur.gen, pgen: cur.pgen };
    this.overlay.set(p, c);
    return c;
  }

  /** The node, to change its value or permissions in this view. */
  own(p: string): Node {
    const cur = this.get(p);
    if (!cur) throw new StoreError('ENOENT', p);
    const n = this.overlay.get(p) === cur ? cur : this.copy(p, cur);
    this.changed.add(p);
    return n;
  }

  /** The node, to change only its child list in this view. */
  ownChildren(p: string): Node {
    const o = this.overlay.get(p);
    if (o) return o;
    const cur = this.peek(p);
    if (!cur) throw new StoreError('ENOENT', p);
    this.childCopies.add(p);
    return this.copy(p, cur);
  }

  put(p: string, node: Node): void {
    const prev = this.get(p);
    if (prev) this.bump(prev.perms[0].domid, -1);
    this.bump(node.perms[0].domid, 1);
    this.overlay.set(p, node);
    this.childCopies.delete(p);
    this.changed.add(p);
  }

  del(p: string): void {
    const prev = this.get(p);
    if (prev) this.bump(prev.perms[0].domid, -1);
    this.overlay.set(p, null);
    this.childCopies.delete(p);
    this.changed.delete(p);
  }

  bump(domid: number, by: number): void {
    this.ownerDelta.set(domid, (this.ownerDelta.get(domid) ?? 0) + by);
  }

  setPermsOf(p: string, perms: Perm[]): void {
    const n = this.own(p);
    this.bump(n.perms[0].domid, -1);
    this.bump(perms[0].domid, 1);
    n.perms = perms;
  }
}

/**
 * A transaction. Reads and writes are synchronous and see the transaction's
 * own changes; nothing is visible to others until commit(). Use
 * StoreConnection.transaction() for automatic retries on EAGAIN.
 */
export class Transaction {
  private done = false;
  /** @internal */
  constructor(
    readonly id: number,
    /** @internal */ readonly conn: StoreConnection,
    /** @internal */ readonly view: View,
  ) {}

  get finished(): boolean {
    return this.done;
  }

  read(p: string): string {
    return this.conn.read(p, { tx: this });
  }
  readBuffer(p: string): Buffer {
    return this.conn.readBuffer(p, { tx: this });
  }
  tryRead(p: string): string | undefined {
    return this.conn.tryRead(p, { tx: this });
  }
  exists(p: string): boolean {
    return this.conn.exists(p, { tx: this });
  }
  directory(p: string): string[] {
    return this.conn.directory(p, { tx: this });
  }
  getPerms(p: string): Perm[] {
    return this.conn.getPerms(p, { tx: this });
  }
  write(p: string, value: string | Buffer): void {
    this.conn.store._write(this.conn, this.conn.store._txView(this.conn, this), p, toBuffer(value));
  }
  mkdir(p: string): void {
    this.conn.store._mkdir(this.conn, this.conn.store._txView(this.conn, this), p);
  }
  rm(p: string): void {
    this.conn.store._rm(this.conn, this.conn.store._txView(this.conn, this), p);
  }
  setPerms(p: string, perms: readonly (Perm | string)[]): void {
    this.conn.store._setPerms(this.conn, this.conn.store._txView(this.conn, this), p, perms);
  }

  /** Commit atomically; rejects with EAGAIN when something it looked at changed meanwhile. */
  commit(): Promise<void> {
    if (this.done) return Promise.reject(new StoreError('ENOENT', `transaction ${this.id} is already finished`));
    this.finish();
    try {
      return this.conn.store._commit(this.conn, this.view);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  abort(): void {
    if (!this.done) this.finish();
  }

  private finish(): void {
    this.done = true;
    this.conn.store._endTx(this);
  }
}

/**
 * A connection acting as one domain. Domain 0 is the control domain with
 * full privilege; other domains are subject to node permissions and quotas.
 * Reads are synchronous (the tree lives in memory); mutations resolve once
 * durable.
 */
export class StoreConnection {
  /** @internal */ readonly watches = new Map<string, Watch>();
  /** @internal */ readonly txs = new Map<number, Transaction>();
  private closedFlag = false;
  /** Called when the store closes this connection (its domain was released). */
  onClose: (() => void) | null = null;

  /** @internal */
  constructor(
    readonly store: Store,
    readonly domid: number,
  ) {}

  get closed(): boolean {
    return this.closedFlag;
  }

  private check(): void {
    if (this.closedFlag) throw new StoreError('EINVAL', `connection of domain ${this.domid} is closed`);
  }

  /** Absolute form of a path for this connection (relative paths are under /local/domain/<domid>). */
  resolve(p: string): string {
    return canonicalize(p, this.domid);
  }

  readBuffer(p: string, opts?: OpOptions): Buffer {
    this.check();
    return this.store._read(this, p, opts?.tx).value;
  }
  read(p: string, opts?: OpOptions): string {
    return this.readBuffer(p, opts).toString('utf8');
  }
  tryRead(p: string, opts?: OpOptions): string | undefined {
    try {
      return this.read(p, opts);
    } catch (e) {
      if (e instanceof StoreError && e.errno === 'ENOENT') return undefined;
      throw e;
    }
  }
  exists(p: string, opts?: OpOptions): boolean {
    this.check();
    return this.store._exists(this, p, opts?.tx);
  }
  directory(p: string, opts?: OpOptions): string[] {
    this.check();
    return [...this.store._read(this, p, opts?.tx).children];
  }
  /** Children plus the node's generation (for DIRECTORY_PART). */
  directoryWithGen(p: string, opts?: OpOptions): { gen: number; children: string[] } {
    this.check();
    const n = this.store._read(this, p, opts?.tx);
    return { gen: n.gen, children: [...n.children] };
  }
  getPerms(p: string, opts?: OpOptions): Perm[] {
    this.check();
    return this.store._read(this, p, opts?.tx).perms.map((x) => ({ ...x }));
  }

  write(p: string, value: string | Buffer, opts?: OpOptions): Promise<void> {
    return this.mutate(opts, (v) => this.store._write(this, v, p, toBuffer(value)));
  }
  mkdir(p: string, opts?: OpOptions): Promise<void> {
    return this.mutate(opts, (v) => this.store._mkdir(this, v, p));
  }
  rm(p: string, opts?: OpOptions): Promise<void> {
    return this.mutate(opts, (v) => this.store._rm(this, v, p));
  }
  setPerms(p: string, perms: readonly (Perm | string)[], opts?: OpOptions): Promise<void> {
    return this.mutate(opts, (v) => this.store._setPerms(this, v, p, perms));
  }

  private mutate(opts: OpOptions | undefined, fn: (v: View) => void): Promise<void> {
    try {
      this.check();
      if (opts?.tx) {
        fn(this.store._txView(this, opts.tx));
        return Promise.resolve();
      }
      const v = this.store._view();
      fn(v);
      return this.store._commit(this, v);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Watch `p` (a path, or '@introduceDomain' / '@releaseDomain') and its
   * children. As in Xen, the watch fires once right away with `p` itself.
   */
  watch(p: string, token: string, cb: WatchCallback, opts: { initial?: boolean } = {}): void {
    this.check();
    this.store._watch(this, p, token, cb, opts.initial ?? true);
  }
  unwatch(p: string, token: string): void {
    this.check();
    this.store._unwatch(this, p, token);
  }
  /** Drop every watch and open transaction of this connection. */
  resetWatches(): void {
    this.check();
    for (const w of [...this.watches.values()]) this.store._removeWatch(w);
    for (const tx of [...this.txs.values()]) tx.abort();
  }

  startTransaction(): Transaction {
    this.check();
    return this.store._startTx(this);
  }
  /** Look up an open transaction of this connection by id (ENOENT if none). */
  transactionById(id: number): Transaction {
    const tx = this.txs.get(id);
    if (!tx) throw new StoreError('ENOENT', `no open transaction ${id} on this connection`);
    return tx;
  }

  /**
   * Run `fn` in a transaction and commit it; on EAGAIN run it again (up to
   * `maxAttempts`, default 20). `fn` must not have side effects outside `tx`.
   */
  async transaction<T>(fn: (tx: Transaction) => T | Promise<T>, opts: { maxAttempts?: number } = {}): Promise<T> {
    const max = opts.maxAttempts ?? 20;
    for (let attempt = 1; ; attempt++) {
      const tx = this.startTransaction();
      let result: T;
      try {
        result = await fn(tx);
      } catch (e) {
        tx.abort();
        throw e;
      }
      try {
        await tx.commit();
        return result;
      } catch (e) {
        if (!(e instanceof StoreError && e.errno === 'EAGAIN') || attempt >= max) throw e;
        await new Promise((r) => setTimeout(r, Math.min(50, attempt * attempt)));
      }
    }
  }

  introduceDomain(domid: number): void {
    this.check();
    this.store._introduce(this, domid);
  }
  releaseDomain(domid: number): void {
    this.check();
    this.store._release(this, domid);
  }
  isDomainIntroduced(domid: number): boolean {
    this.check();
    return this.store.isDomainIntroduced(domid);
  }
  getDomainPath(domid: number): string {
    checkDomid(domid, true);
    return domainPath(domid);
  }

  close(): void {
    if (this.closedFlag) return;
    for (const w of [...this.watches.values()]) this.store._removeWatch(w);
    for (const tx of [...this.txs.values()]) tx.abort();
    this.closedFlag = true;
    this.store._forget(this);
    this.onClose?.();
  }
}

function samePerms(a: readonly Perm[], b: readonly Perm[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i].domid !== b[i].domid || a[i].perm !== b[i].perm) return false;
  return true;
}

function checkDomid(domid: number, allowZero: boolean): void {
  if (!Number.isInteger(domid) || domid < (allowZero ? 0 : 1) || domid > DOMID_MAX) {
    throw new StoreError('EINVAL', `bad domain id ${domid}`);
  }
}

function ownerPerms(parent: Perm[], creator: number): Perm[] {
  // New nodes inherit their parent's permissions; a node created by a
  // domain other than 0 is owned by that domain.
  if (creator === 0 || parent[0].domid === creator) return parent;
  return [{ domid: creator, perm: parent[0].perm }, ...parent.slice(1).filter((p) => p.domid !== creator)];
}

export class Store {
  /** @internal */ readonly nodes = new Map<string, Node>();
  private seq = 0;
  private readonly owners = new Map<number, number>();
  private readonly watchIndex = new Map<string, Set<Watch>>();
  private readonly conns = new Set<StoreConnection>();
  private readonly introduced = new Set<number>();
  private nextTxId = 1;
  private openTxs = 0;
  private closing = false;
  readonly quotas: Quotas;
  /** The control domain's connection; the Store's own methods act through it. */
  readonly dom0: StoreConnection;

  private constructor(
    private readonly wal: Wal,
    readonly dataDir: string,
    quotas: Quotas,
    private readonly lockPath: string,
  ) {
    this.quotas = quotas;
    this.dom0 = new StoreConnection(this, 0);
    this.conns.add(this.dom0);
  }

  /** Open (or create) the store in `dataDir`, replaying its log. */
  static async open(opts: StoreOptions): Promise<Store> {
    const dir = path.resolve(opts.dataDir);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const lockPath = path.join(dir, 'lock');
    takeLock(lockPath);
    try {
      const walOpts: WalOptions = { compactBytes: opts.compactBytes, noSync: opts.unsafeNoSync };
      const { wal, recovered } = await Wal.open(dir, walOpts);
      const quotas = { ...DEFAULT_QUOTAS, ...(opts.quotas ?? {}) };
      for (const [k, v] of Object.entries(quotas)) {
        if (!Number.isInteger(v) || v < 0) throw new StoreError('EINVAL', `quota ${k} must be a non-negative integer`);
      }
      const store = new Store(wal, dir, quotas, lockPath);
      store.nodes.set('/', { value: EMPTY, perms: [{ domid: 0, perm: 'n' }], children: new Set(), gen: 0, pgen: 0 });
      store.countOwner(0, 1);
      try {
        if (recovered.snapshot) {
          for (const op of recovered.snapshot) store.applyOp(op, 0);
        }
        for (const c of recovered.commits) for (const op of c.ops) store.applyOp(op, c.seq);
      } catch (e) {
        throw new StoreError('EIO', `store data in ${dir} does not replay: ${(e as Error).message}`);
      }
      store.seq = recovered.seq;
      store.recoveryNote =
        recovered.truncatedBytes > 0 ? `cut ${recovered.truncatedBytes} unacknowledged bytes from the log tail (${recovered.note})` : null;
      wal.setSnapshotSource({ snapshot: () => store.serialize() });
      return store;
    } catch (e) {
      releaseLock(lockPath);
      throw e;
    }
  }

  /** What recovery had to do at open (null when the log ended cleanly). */
  recoveryNote: string | null = null;

  /** A connection acting as domain `domid` (0, or an introduced domain). */
  connect(domid: number): StoreConnection {
    checkDomid(domid, true);
    if (this.closing) throw new StoreError('EINVAL', 'store is closing');
    if (domid !== 0 && !this.introduced.has(domid)) throw new StoreError('ENOENT', `domain ${domid} is not introduced`);
    const c = new StoreConnection(this, domid);
    this.conns.add(c);
    return c;
  }

  // ---- the control domain's API (delegates to dom0) ----------------------

  read(p: string, opts?: OpOptions): string {
    return this.dom0.read(p, opts);
  }
  readBuffer(p: string, opts?: OpOptions): Buffer {
    return this.dom0.readBuffer(p, opts);
  }
  tryRead(p: string, opts?: OpOptions): string | undefined {
    return this.dom0.tryRead(p, opts);
  }
  exists(p: string, opts?: OpOptions): boolean {
    return this.dom0.exists(p, opts);
  }
  write(p: string, value: string | Buffer, opts?: OpOptions): Promise<void> {
    return this.dom0.write(p, value, opts);
  }
  mkdir(p: string, opts?: OpOptions): Promise<void> {
    return this.dom0.mkdir(p, opts);
  }
  rm(p: string, opts?: OpOptions): Promise<void> {
    return this.dom0.rm(p, opts);
  }
  directory(p: string, opts?: OpOptions): string[] {
    return this.dom0.directory(p, opts);
  }
  getPerms(p: string, opts?: OpOptions): Perm[] {
    return this.dom0.getPerms(p, opts);
  }
  setPerms(p: string, perms: readonly (Perm | string)[], opts?: OpOptions): Promise<void> {
    return this.dom0.setPerms(p, perms, opts);
  }
  watch(p: string, token: string, cb: WatchCallback, opts?: { initial?: boolean }): void {
    this.dom0.watch(p, token, cb, opts);
  }
  unwatch(p: string, token: string): void {
    this.dom0.unwatch(p, token);
  }
  transaction<T>(fn: (tx: Transaction) => T | Promise<T>, opts?: { maxAttempts?: number }): Promise<T> {
    return this.dom0.transaction(fn, opts);
  }
  startTransaction(): Transaction {
    return this.dom0.startTransaction();
  }
  introduceDomain(domid: number): void {
    this.dom0.introduceDomain(domid);
  }
  releaseDomain(domid: number): void {
    this.dom0.releaseDomain(domid);
  }
  isDomainIntroduced(domid: number): boolean {
    checkDomid(domid, true);
    return domid === 0 || this.introduced.has(domid);
  }
  getDomainPath(domid: number): string {
    return this.dom0.getDomainPath(domid);
  }

  /** Counters: nodes, watches, open transactions, log sizes. */
  stats(): { nodes: number; watches: number; transactions: number; connections: number; seq: number; walBytes: number; snapBytes: number; syncs: number; compactions: number } {
    let watches = 0;
    for (const s of this.watchIndex.values()) watches += s.size;
    return {
      nodes: this.nodes.size,
      watches,
      transactions: this.openTxs,
      connections: this.conns.size,
      seq: this.seq,
      ...this.wal.sizes,
      syncs: this.wal.stats.syncs,
      compactions: this.wal.stats.compactions,
    };
  }

  /** Write a snapshot now and empty the log. */
  compact(): Promise<void> {
    return this.wal.compactNow();
  }

  /** Wait for pending writes, close every connection, release the data directory. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    for (const c of [...this.conns]) c.close();
    await this.wal.close();
    releaseLock(this.lockPath);
  }

  // ---- internals (used by StoreConnection / Transaction) -----------------

  /** @internal */ _view(): View {
    return new View(this.nodes, this.seq);
  }

  /** @internal */ _txView(conn: StoreConnection, tx: Transaction): View {
    if (tx.conn !== conn || tx.finished) throw new StoreError('ENOENT', `transaction ${tx.id} is not open on this connection`);
    return tx.view;
  }

  private lookup(conn: StoreConnection, p: string, tx: Transaction | undefined): Node | undefined {
    const abs = canonicalize(p, conn.domid);
    return tx ? this._txView(conn, tx).get(abs) : this.nodes.get(abs);
  }

  /** @internal */ _read(conn: StoreConnection, p: string, tx: Transaction | undefined): Node {
    const n = this.lookup(conn, p, tx);
    if (!n) throw new StoreError('ENOENT', `no such node ${p.slice(0, 200)}`);
    if (!(accessFor(conn.domid, n.perms) & ACCESS_READ)) throw new StoreError('EACCES', `domain ${conn.domid} may not read ${p.slice(0, 200)}`);
    return n;
  }

  /** @internal */ _exists(conn: StoreConnection, p: string, tx: Transaction | undefined): boolean {
    const n = this.lookup(conn, p, tx);
    return n !== undefined && (accessFor(conn.domid, n.perms) & ACCESS_READ) !== 0;
  }

  private checkValue(conn: StoreConnection, value: Buffer): void {
    if (value.length > PAYLOAD_MAX) throw new StoreError('E2BIG', `value of ${value.length} bytes is larger than ${PAYLOAD_MAX}`);
    if (conn.domid !== 0 && value.length > this.quotas.maxNodeSize) {
      throw new StoreError('EQUOTA', `value of ${value.length} bytes is over domain ${conn.domid}'s node size quota of ${this.quotas.maxNodeSize}`);
    }
  }

  /** Create `abs` (and missing parents) in the view; returns the new node. */
  private create(conn: StoreConnection, v: View, abs: string, value: Buffer): void {
    const missing: string[] = [];
    let p = abs;
    let anc: Node | undefined;
    for (;;) {
      missing.push(p);
      p = parentOf(p);
      anc = v.peek(p);
      if (anc) break;
    }
    if (!(accessFor(conn.domid, anc.perms) & ACCESS_WRITE)) {
      throw new StoreError('EACCES', `domain ${conn.domid} may not create nodes under ${p}`);
    }
    if (conn.domid !== 0) {
      const have = this.ownedBy(conn.domid) + (v.ownerDelta.get(conn.domid) ?? 0);
      if (have + missing.length > this.quotas.maxEntries) {
        throw new StoreError('EQUOTA', `domain ${conn.domid} would own more than ${this.quotas.maxEntries} nodes (entries quota)`);
      }
    }
    let parentPath = p;
    let perms = anc.perms;
    for (let i = missing.length - 1; i >= 0; i--) {
      const mp = missing[i];
      v.ownChildren(parentPath).children.add(baseName(mp));
      perms = ownerPerms(perms, conn.domid);
      v.put(mp, { value: i === 0 ? value : EMPTY, perms, children: new Set(), gen: 0, pgen: 0 });
      parentPath = mp;
    }
  }

  /** @internal */ _write(conn: StoreConnection, v: View, p: string, value: Buffer): void {
    const abs = canonicalize(p, conn.domid);
    this.checkValue(conn, value);
    const n = v.get(abs);
    if (n) {
      if (!(accessFor(conn.domid, n.perms) & ACCESS_WRITE)) throw new StoreError('EACCES', `domain ${conn.domid} may not write ${p.slice(0, 200)}`);
      v.own(abs).value = value;
    } else {
      this.create(conn, v, abs, value);
    }
    v.events.push({ path: abs, removed: false });
  }

  /** @internal */ _mkdir(conn: StoreConnection, v: View, p: string): void {
    const abs = canonicalize(p, conn.domid);
    if (v.get(abs)) return;
    this.create(conn, v, abs, EMPTY);
    v.events.push({ path: abs, removed: false });
  }

  /** @internal */ _rm(conn: StoreConnection, v: View, p: string): void {
    const abs = canonicalize(p, conn.domid);
    if (abs === '/') throw new StoreError('EINVAL', 'the root cannot be removed');
    const n = v.get(abs);
    const parent = parentOf(abs);
    if (!n) {
      if (!v.peek(parent)) throw new StoreError('ENOENT', `parent of ${p.slice(0, 200)} does not exist`);
      return;
    }
    if (!(accessFor(conn.domid, n.perms) & ACCESS_WRITE)) throw new StoreError('EACCES', `domain ${conn.domid} may not remove ${p.slice(0, 200)}`);
    const drop = (q: string, node: Node): void => {
      for (const c of node.children) {
        const cp = joinPath(q, c);
        const cn = v.get(cp);
        if (cn) drop(cp, cn);
      }
      v.del(q);
    };
    drop(abs, n);
    v.ownChildren(parent).children.delete(baseName(abs));
    v.events.push({ path: abs, removed: true });
  }

  /** @internal */ _setPerms(conn: StoreConnection, v: View, p: string, list: readonly (Perm | string)[]): void {
    const abs = canonicalize(p, conn.domid);
    const perms = parsePerms(list.map((x) => (typeof x === 'string' ? x : formatPerm(x))));
    const n = v.get(abs);
    if (!n) throw new StoreError('ENOENT', `no such node ${p.slice(0, 200)}`);
    if (!(accessFor(conn.domid, n.perms) & ACCESS_OWNER)) throw new StoreError('EACCES', `only the owner may change permissions of ${p.slice(0, 200)}`);
    if (conn.domid !== 0 && perms[0].domid !== n.perms[0].domid) throw new StoreError('EPERM', 'only domain 0 may change the owner of a node');
    v.setPermsOf(abs, perms);
    v.events.push({ path: abs, removed: false });
  }

  /** @internal */ _startTx(conn: StoreConnection): Transaction {
    if (conn.txs.size >= this.quotas.maxTransactions) {
      throw new StoreError('EQUOTA', `connection already has ${conn.txs.size} open transactions (quota ${this.quotas.maxTransactions})`);
    }
    let id = this.nextTxId;
    this.nextTxId = id >= 0xfffffffe ? 1 : id + 1;
    while (conn.txs.has(id)) id++;
    const tx = new Transaction(id, conn, this._view());
    conn.txs.set(id, tx);
    this.openTxs++;
    return tx;
  }

  /** @internal */ _endTx(tx: Transaction): void {
    if (tx.conn.txs.delete(tx.id)) this.openTxs--;
  }

  /** @internal */ _commit(conn: StoreConnection, v: View): Promise<void> {
    if (this.closing) throw new StoreError('EIO', 'store is closing');
    if (v.stale) throw new StoreError('EAGAIN', 'a node this transaction read changed after it started');
    for (const [p, g] of v.observed) {
      const n = this.nodes.get(p);
      if ((n ? n.gen : -1) !== g) throw new StoreError('EAGAIN', `node ${p} changed during the transaction`);
    }
    for (const [p, g] of v.observedMeta) {
      const n = this.nodes.get(p);
      if ((n ? n.pgen : -1) !== g) throw new StoreError('EAGAIN', `node ${p} was created, removed or re-permissioned during the transaction`);
    }
    if (conn.domid !== 0) {
      const d = v.ownerDelta.get(conn.domid) ?? 0;
      if (d > 0 && this.ownedBy(conn.domid) + d > this.quotas.maxEntries) {
        throw new StoreError('EQUOTA', `domain ${conn.domid} would own more than ${this.quotas.maxEntries} nodes (entries quota)`);
      }
    }
    const dels: string[] = [];
    const puts: string[] = [];
    for (const [p, n] of v.overlay) {
      if (!n) dels.push(p);
      else if (v.changed.has(p)) puts.push(p);
    }
    dels.sort((a, b) => depth(b) - depth(a));
    puts.sort((a, b) => depth(a) - depth(b));
    const ops: Op[] = [];
    for (const p of dels) if (this.nodes.has(p)) ops.push({ kind: 'del', path: p });
    for (const p of puts) {
      const n = v.overlay.get(p)!;
      ops.push({ kind: 'put', path: p, value: n.value, perms: n.perms });
    }
    // Nothing to change (mkdir of an existing node, rm of a missing one, a
    // read-only transaction): still acknowledge only once what it saw is durable.
    if (ops.length === 0) return this.wal.barrier();
    const seq = ++this.seq;
    for (const op of ops) this.applyOp(op, seq);
    const durable = this.wal.append(encodeRecord({ seq, ops }));
    const events = v.events;
    return durable.then(() => {
      for (const e of events) this.fire(e);
    });
  }

  /** Apply one logged op to the live tree (also used for replay at open). */
  private applyOp(op: Op, seq: number): void {
    if (op.kind === 'put') {
      const n = this.nodes.get(op.path);
      if (n) {
        this.countOwner(n.perms[0].domid, -1);
        if (!samePerms(n.perms, op.perms)) n.pgen = seq;
        n.value = op.value;
        n.perms = op.perms;
        n.gen = seq;
      } else {
        const parent = this.nodes.get(parentOf(op.path));
        if (!parent) throw new Error(`put of ${op.path} without its parent`);
        parent.children.add(baseName(op.path));
        parent.gen = seq;
        this.nodes.set(op.path, { value: op.value, perms: op.perms, children: new Set(), gen: seq, pgen: seq });
      }
      this.countOwner(op.perms[0].domid, 1);
    } else {
      const n = this.nodes.get(op.path);
      if (!n) return;
      if (op.path === '/') throw new Error('del of the root');
      const drop = (p: string, node: Node): void => {
        for (const c of node.children) {
          const cp = joinPath(p, c);
          const cn = this.nodes.get(cp);
          if (cn) drop(cp, cn);
        }
        this.countOwner(node.perms[0].domid, -1);
        this.nodes.delete(p);
      };
      drop(op.path, n);
      const parent = this.nodes.get(parentOf(op.path));
      if (parent) {
        parent.children.delete(baseName(op.path));
        parent.gen = seq;
      }
    }
  }

  private countOwner(domid: number, by: number): void {
    const v = (this.owners.get(domid) ?? 0) + by;
    if (v === 0) this.owners.delete(domid);
    else this.owners.set(domid, v);
  }

  private ownedBy(domid: number): number {
    return this.owners.get(domid) ?? 0;
  }

  /** The whole tree, parents first, as a snapshot file image. */
  private serialize(): { seq: number; data: Buffer } {
    const nodes = this.nodes;
    function* walk(p: string): Generator<Extract<Op, { kind: 'put' }>> {
      const n = nodes.get(p)!;
      if (p !== '/') yield { kind: 'put', path: p, value: n.value, perms: n.perms };
      for (const c of n.children) yield* walk(joinPath(p, c));
    }
    // The root's own permissions/value can change too: emit it first.
    const root = nodes.get('/')!;
    const all = function* (): Generator<Extract<Op, { kind: 'put' }>> {
      yield { kind: 'put', path: '/', value: root.value, perms: root.perms };
      yield* walk('/');
    };
    return { seq: this.seq, data: encodeSnapshot(this.seq, all()) };
  }

  // ---- watches -----------------------------------------------------------

  /** @internal */ _watch(conn: StoreConnection, p: string, token: string, cb: WatchCallback, initial: boolean): void {
    const wpath = canonicalizeWatch(p, conn.domid);
    if (token.length > 2048) throw new StoreError('EINVAL', 'watch token too long');
    const key = `${wpath}\0${token}`;
    if (conn.watches.has(key)) throw new StoreError('EEXIST', `watch on ${p.slice(0, 200)} with that token already exists`);
    if (conn.watches.size >= this.quotas.maxWatches) {
      throw new StoreError('EQUOTA', `connection already has ${conn.watches.size} watches (quota ${this.quotas.maxWatches})`);
    }
    const relBase = !isSpecialPath(p) && p[0] !== '/' ? `${domainPath(conn.domid)}/` : null;
    const w: Watch = { conn, wpath, given: p, relBase, token, cb };
    conn.watches.set(key, w);
    let set = this.watchIndex.get(wpath);
    if (!set) this.watchIndex.set(wpath, (set = new Set()));
    set.add(w);
    if (initial) queueMicrotask(() => this.deliver(w, wpath));
  }

  /** @internal */ _unwatch(conn: StoreConnection, p: string, token: string): void {
    const wpath = canonicalizeWatch(p, conn.domid);
    const w = conn.watches.get(`${wpath}\0${token}`);
    if (!w) throw new StoreError('ENOENT', `no watch on ${p.slice(0, 200)} with that token`);
    this._removeWatch(w);
  }

  /** @internal */ _removeWatch(w: Watch): void {
    w.conn.watches.delete(`${w.wpath}\0${w.token}`);
    const set = this.watchIndex.get(w.wpath);
    if (set) {
      set.delete(w);
      if (set.size === 0) this.watchIndex.delete(w.wpath);
    }
  }

  private deliver(w: Watch, epath: string): void {
    if (w.conn.closed || !w.conn.watches.has(`${w.wpath}\0${w.token}`)) return;
    let out = epath;
    if (w.relBase && epath.startsWith(w.relBase)) out = epath.slice(w.relBase.length);
    try {
      w.cb(out, w.token);
    } catch {
      // A watcher's callback must not break the store or other watchers.
    }
  }

  private fire(e: ChangeEvent): void {
    // Watches on the node itself and on every parent.
    let p = e.path;
    for (;;) {
      const set = this.watchIndex.get(p);
      if (set) for (const w of [...set]) if (this.maysee(w.conn, e.path)) this.deliver(w, e.path);
      if (p === '/') break;
      p = parentOf(p);
    }
    // A recursive removal also fires watches set below the removed node.
    if (e.removed) {
      for (const [wpath, set] of this.watchIndex) {
        if (wpath !== e.path && !isSpecialPath(wpath) && isChildOf(wpath, e.path)) {
          for (const w of [...set]) this.deliver(w, wpath);
        }
      }
    }
  }

  /** Events go to a domain only for nodes it can read (or that are gone). */
  private maysee(conn: StoreConnection, p: string): boolean {
    if (conn.domid === 0) return true;
    const n = this.nodes.get(p);
    return !n || (accessFor(conn.domid, n.perms) & ACCESS_READ) !== 0;
  }

  // ---- domains -----------------------------------------------------------

  /** @internal */ _introduce(conn: StoreConnection, domid: number): void {
    if (conn.domid !== 0) throw new StoreError('EACCES', 'only domain 0 may introduce domains');
    checkDomid(domid, false);
    this.introduced.add(domid);
    this.fireSpecial('@introduceDomain');
  }

  /** @internal */ _release(conn: StoreConnection, domid: number): void {
    if (conn.domid !== 0) throw new StoreError('EACCES', 'only domain 0 may release domains');
    checkDomid(domid, false);
    if (!this.introduced.delete(domid)) throw new StoreError('ENOENT', `domain ${domid} is not introduced`);
    for (const c of [...this.conns]) if (c.domid === domid) c.close();
    this.fireSpecial('@releaseDomain');
  }

  private fireSpecial(name: string): void {
    const set = this.watchIndex.get(name);
    if (set) for (const w of [...set]) this.deliver(w, name);
  }

  /** @internal */ _forget(conn: StoreConnection): void {
    this.conns.delete(conn);
  }
}

// One process per data directory: a lock file holding the owner's pid and
// its start time (from /proc), so a stale lock whose pid was reused by an
// unrelated process after a reboot is still recognised as stale.
function procStart(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function takeLock(lockPath: string): void {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = fs.openSync(lockPath, 'wx', 0o600);
      fs.writeSync(fd, `${process.pid} ${procStart(process.pid) ?? '-'}\n`);
      fs.closeSync(fd);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const [pidStr, start] = fs.readFileSync(lockPath, 'utf8').trim().split(' ');
      const pid = Number.parseInt(pidStr, 10);
      if (pid === process.pid) throw new StoreError('EBUSY', `store data directory ${path.dirname(lockPath)} is already open in this process`);
      if (Number.isInteger(pid) && pid > 0 && processExists(pid)) {
        const now = procStart(pid);
        if (!start || start === '-' || now === null || now === start) {
          throw new StoreError('EBUSY', `store data directory ${path.dirname(lockPath)} is in use by process ${pid}`);
        }
      }
      fs.rmSync(lockPath, { force: true }); // stale: its process is gone
    }
  }
  throw new StoreError('EBUSY', `cannot take the lock ${lockPath}`);
}


function releaseLock(lockPath: string): void {
  try {
    const pid = Number.parseInt(fs.readFileSync(lockPath, 'utf8'), 10);
    if (pid === process.pid) fs.rmSync(lockPath, { force: true });
  } catch {
    // already gone
  }
}
