// One virtqueue as the back-end runs it: the front-end's settings (size,
// addresses, base, kick/call/err fds, enable), the split ring in guest
// memory, inflight tracking, dirty logging and batched notifications.
//
// Devices see only pop() / complete(): take a request, give it back.
import { closeQuiet, eventFdConsume, eventFdSignal, setNonBlocking, watchFd, type FdWatch } from '../sys/index.js';
import { DirtyLog, GuestMemory } from './memory.js';
import { InflightQueue } from './inflight.js';
import { SplitQueue, ringSizes, type DescriptorChain } from './virtqueue.js';
import { VHOST_VRING_F_LOG } from './protocol.js';

export interface VringAddrs {
  flags: number;
  desc: number;
  used: number;
  avail: number;
  log: number;
}

export interface VringHost {
  readonly memory: GuestMemory | null;
  readonly log: DirtyLog | null;
  readonly logging: boolean;
  readonly eventIdx: boolean;
  /** The device's hook: pop and process what the ring holds. */
  process(ring: Vring): void;
  warn(msg: string): void;
  /** Called when the last in-flight request of any ring completes. */
  onIdle(): void;
}

export interface VringStats {
  kicks: number;
  notifications: number;
  popped: number;
  completed: number;
  badChains: number;
  ringErrors: number;
  resubmitted: number;
}

export class Vring {
  num = 0;
  addrs: VringAddrs | null = null;
  base = 0;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  enabled = false;
  started = false;
  /** Ring is corrupt (avail index jumped, bad head): stop until restarted. */
  broken = false;
  inflight: InflightQueue | null = null;
  queue: SplitQueue | null = null;
  /** Requests popped and not yet completed. */
  inFlight = 0;
  readonly stats: VringStats = { kicks: 0, notifications: 0, popped: 0, completed: 0, badChains: 0, ringErrors: 0, resubmitted: 0 };
  private resubmit: number[] = [];
  private watch: FdWatch | null = null;
  private flushScheduled = false;
  private running = false;
  /** Bumped on stop: completions of requests popped in an older generation are dropped. */
  private generation = 0;
  private drainWaiters: (() => void)[] = [];
  /** Pop is refused while the memory table is being swapped. */
  paused = false;
  /**
   * Interrupt moderation: at most one interrupt per this many ms (0 = one
   * per event-loop turn, the default). The first interrupt after a quiet
   * spell goes at once; later ones wait out the interval, so a busy guest
   * takes several used buffers per interrupt (net RX sets it). Once
   * `notifyBatch` buffers wait, the interrupt goes at once anyway, so a
   * fast guest's ring never fills because of the interval.
   */
  notifyIntervalMs = 0;
  notifyBatch = 64;
  private lastNotify = -Infinity;
  private usedSinceNotify = 0;
  private flushTimer: NodeJS.Timeout | null = null;
  /**
   * SET_VRING_KICK came before any memory table (QEMU 7.2 reconnecting to a
   * restarted back-end while the guest is paused): the ring starts as soon
   * as memory arrives (memoryChanged()).
   */
  awaitingMemory = false;

  constructor(
    readonly index: number,
    private readonly host: VringHost,
  ) {}

  get memory(): GuestMemory {
    const m = this.host.memory;
    if (m === null) throw new Error('no guest memory');
    return m;
  }

  /** Build the split-queue views from the current addresses and memory. */
  private buildQueue(lastAvail: number): SplitQueue {
    const mem = this.host.memory;
    if (mem === null) throw new Error(`queue ${this.index}: started before SET_MEM_TABLE`);
    if (this.addrs === null) throw new Error(`queue ${this.index}: started before SET_VRING_ADDR`);
    if (this.num === 0) throw new Error(`queue ${this.index}: started before SET_VRING_NUM`);
    const s = ringSizes(this.num);
    const desc = mem.uvaSlice(this.addrs.desc, s.desc).buf;
    const avail = mem.uvaSlice(this.addrs.avail, s.avail).buf;
    const used = mem.uvaSlice(this.addrs.used, s.used);
    return new SplitQueue(mem, this.num, { desc, avail, used: used.buf, usedGpa: used.gpa }, { eventIdx: this.host.eventIdx, lastAvail });
  }

  /** Re-translate after a memory-table change or an address update while running. */
  refresh(): void {
    if (this.queue === null) return;
    const q = this.buildQueue(this.queue.lastAvail);
    this.queue = q;
  }

  /** SET_VRING_KICK: start the ring (with inflight recovery) and watch the kick fd. */
  start(kickFd: number): void {
    this.stopWatch();
    if (this.kickFd >= 0 && this.kickFd !== kickFd) closeQuiet(this.kickFd);
    this.kickFd = kickFd;
    if (this.host.memory === null) {
      this.awaitingMemory = true;
      this.host.warn(`queue ${this.index}: kick fd before the memory table; the ring starts when memory arrives`);
      return;
    }
    this.awaitingMemory = false;
    const q = this.buildQueue(this.base);
    this.resubmit = [];
    if (this.inflight !== null) {
      const usedIdx = q.guestUsedIdx();
      this.resubmit = this.inflight.recover(usedIdx);
      q.lastAvail = (usedIdx + this.resubmit.length) & 0xffff;
      if (this.resubmit.length > 0) this.host.warn(`queue ${this.index}: resubmitting ${this.resubmit.length} in-flight request(s)`);
      if (q.lastAvail !== this.base) this.host.warn(`queue ${this.index}: resuming at available index ${q.lastAvail} (front-end said ${this.base}, used index ${usedIdx})`);
    }
    this.queue = q;
    this.broken = false;
    this.started = true;
    if (kickFd >= 0) {
      setNonBlocking(kickFd);
      this.watch = watchFd(kickFd, () => {
        eventFdConsume(kickFd);
        this.stats.kicks++;
        this.run();
      });
    }
    this.run();
  }

  /** The memory table arrived or changed: start a ring whose kick fd came first. */
  memoryChanged(): void {
    if (this.awaitingMemory) this.start(this.kickFd);
  }

  private stopWatch(): void {
    this.watch?.close();
    this.watch = null;
  }

  /**
   * GET_VRING_BASE / disconnect: stop taking requests. Returns the
   * available index to resume from. `drop` forgets requests in flight
   * (their completions will not touch the ring).
   */
  stop(drop: boolean): number {
    this.stopWatch();
    this.started = false;
    this.awaitingMemory = false;
    const base = this.queue?.lastAvail ?? this.base;
    if (drop) this.generation++;
    closeQuiet(this.kickFd);
    this.kickFd = -1;
    this.base = base;
    return base;
  }

  /** Resolve when nothing popped from this ring is still in flight. */
  drain(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Process what is available (a kick, an enable, a start). */
  run(): void {
    if (this.running) return; // re-entrancy from a completion
    if (!this.started || !this.enabled || this.broken || this.paused || this.queue === null) return;
    this.running = true;
    try {
      for (let guard = 0; guard < 1024; guard++) {
        this.host.process(this);
        if (this.broken || this.paused) break;
        const q = this.queue;
        if (q === null || !this.armNotification(q)) break;
      }
    } catch (e) {
      this.fail(`queue ${this.index}: ${(e as Error).message}`);
    } finally {
      this.running = false;
    }
  }

  private armNotification(q: SplitQueue): boolean {
    const more = q.armNotification();
    if (q.eventIdx) this.logUsed(q.availEventOffset, 2);
    return more;
  }

  private fail(msg: string): void {
    this.broken = true;
    this.stats.ringErrors++;
    this.host.warn(msg);
    if (this.errFd >= 0) {
      try {
        eventFdSignal(this.errFd);
      } catch {
        /* ignore */
      }
    }
  }

  /** Next request, or null when the ring is empty / stopped. */
  pop(): DescriptorChain | null {
    const q = this.queue;
    if (q === null || !this.started || this.broken || this.paused) return null;
    let head: number | null;
    let resubmitted = false;
    if (this.resubmit.length > 0) {
      head = this.resubmit.shift()!;
      resubmitted = true;
    } else {
      try {
        head = q.popHead();
      } catch (e) {
        this.fail(`queue ${this.index}: ${(e as Error).message}`);
        return null;
      }
      if (head === null) return null;
      if (head >= q.size) {
        // Nothing sensible can go back in the used ring for this entry.
        this.fail(`queue ${this.index}: available ring holds head ${head} ≥ queue size ${q.size}`);
        return null;
      }
    }
    if (!resubmitted) this.inflight?.begin(head);
    else this.stats.resubmitted++;
    const chain = q.chain(head);
    if (chain.error !== undefined) {
      this.stats.badChains++;
      this.host.warn(`queue ${this.index}: bad descriptor chain at head ${head}: ${chain.error}`);
    }
    this.stats.popped++;
    this.inFlight++;
    (chain as DescriptorChain & { gen?: number }).gen = this.generation;
    if (resubmitted) (chain as DescriptorChain & { resubmitted?: boolean }).resubmitted = true;
    return chain;
  }

  /** Whether the driver has made buffers available that pop() would return. */
  hasAvailable(): boolean {
    const q = this.queue;
    if (q === null || !this.started || this.broken || this.paused) return false;
    if (this.resubmit.length > 0) return true;
    try {
      return q.pending() > 0;
    } catch {
      return false;
    }
  }

  /**
   * Put back the chain returned by the latest pop() (e.g. a received packet
   * did not fit): the next pop() returns it again. Only for the most recent
   * pop, before it was completed.
   */
  unpop(chain: DescriptorChain): void {
    const c = chain as DescriptorChain & { gen?: number; resubmitted?: boolean };
    if (c.gen !== this.generation || this.queue === null) return;
    this.inFlight--;
    this.stats.popped--;
    if (c.resubmitted) {
      this.resubmit.unshift(chain.head);
      this.stats.resubmitted--;
      return;
    }
    this.queue.lastAvail = (this.queue.lastAvail - 1) & 0xffff;
    this.inflight?.cancel(chain.head);
  }

  /**
   * Give a request back to the driver with `len` bytes written into its
   * device-writable buffers. Interrupts are batched per event-loop turn.
   */
  complete(chain: DescriptorChain, len: number): void {
    this.inFlight--;
    const gen = (chain as DescriptorChain & { gen?: number }).gen;
    const q = this.queue;
    if (gen === this.generation && q !== null) {
      if (this.host.logging && this.host.log !== null) {
        let left = len;
        for (const s of chain.writable) {
          if (left <= 0) break;
          const n = Math.min(left, s.byteLength);
          this.host.log.mark(s.gpa, n);
          left -= n;
        }
      }
      this.inflight?.preComplete(chain.head);
      const off = q.pushUsed(chain.head, len);
      this.inflight?.postComplete(chain.head, q.usedIdx);
      this.logUsed(off, 8);
      this.logUsed(q.usedIdxOffset, 2);
      this.stats.completed++;
      this.usedSinceNotify++;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        const wait = this.notifyIntervalMs > 0 ? this.lastNotify + this.notifyIntervalMs - performance.now() : 0;
        if (wait >= 0.5) this.flushTimer = setTimeout(() => this.flush(), Math.ceil(wait));
        else setImmediate(() => this.flush());
      } else if (this.flushTimer !== null && this.usedSinceNotify >= this.notifyBatch) {
        clearTimeout(this.flushTimer);
        this.flushTimer = null;
        setImmediate(() => this.flush());
      }
    }
    if (this.inFlight === 0) {
      const w = this.drainWaiters;
      this.drainWaiters = [];
      for (const f of w) f();
      this.host.onIdle();
    }
  }

  private logUsed(offset: number, len: number): void {
    if (!this.host.logging || this.host.log === null || this.addrs === null) return;
    if (!(this.addrs.flags & VHOST_VRING_F_LOG)) return;
    this.host.log.mark(this.addrs.log + offset, len);
  }

  /** Send one interrupt for everything completed since the last flush (if the driver wants it). */
  flush(): void {
    this.flushScheduled = false;
    if (this.flushTimer !== null) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    this.usedSinceNotify = 0;
    const q = this.queue;
    if (q === null || this.callFd < 0) return;
    if (q.needsNotify()) {
      this.stats.notifications++;
      if (this.notifyIntervalMs > 0) this.lastNotify = performance.now();
      try {
        eventFdSignal(this.callFd);
      } catch (e) {
        this.host.warn(`queue ${this.index}: call: ${(e as Error).message}`);
      }
    }
  }

  /** Forget everything (disconnect / RESET_OWNER); closes our fds. */
  reset(): void {
    this.stop(true);
    closeQuiet(this.callFd);
    closeQuiet(this.errFd);
    this.callFd = -1;
    this.errFd = -1;
    this.queue = null;
    this.addrs = null;
    this.num = 0;
    this.base = 0;
    this.enabled = false;
    this.broken = false;
    this.inflight = null;
    this.resubmit = [];
  }
}
