// The typed client of xvmd's API: what the CLI uses, and what users import
// (`import { XvmClient } from 'xvm/api'`). HTTP over the daemon's unix socket.
import http from 'node:http';
import { createRequire } from 'node:module';
import type WebSocket from 'ws';
import { statePaths } from '../common/paths.js';
import type { PoolInfo, VolumeInfo, VolumeSummary, SnapshotResult, RollbackResult } from '../storage/pool.js';
import type { CdromInfo, InstallBody, InstallResult, VncInfo, VncToken } from './hvm-schema.js';
import type { CreateDomainBody, DaemonStopResult, DomainInfo, DumpCoreResult, GdbStubInfo, HostInfo, HostStats, ImageInfo, LogName, MemSetResult, SysrqResult, VcpuSetResult } from './schema.js';
import type { MigrateResult, RestoreResult, SaveProgress, SaveResult } from './schema.js';
import type { TokenSummary, WebSettings, WebStatus } from './web-types.js';
import type { NetworkDetails, NetworkSummary, VifSummary } from './net-types.js';
export type { NetworkDetails, NetworkPortInfo, NetworkSummary, VifSummary } from './net-types.js';
import type { SaveListing } from './saves-schema.js';

// ws is loaded on first use: most CLI verbs never open a websocket, and
// every module loaded is start-up time for a short-lived command.
const requireLazy = createRequire(import.meta.url);
function wsClass(): typeof WebSocket {
  return requireLazy('ws') as typeof WebSocket;
}


export class ApiError extends Error {
  readonly code: string;
  readonly status: number;
  readonly details?: unknown;
  constructor(code: string, status: number, message: string, details?: unknown) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
    this.details = details;
  }
}

export interface ClientOptions {
  /** The daemon's socket; default from XVM_HOME / the state root. */
  socketPath?: string;
  /** Called for every request (the CLI's --verbose). */
  onRequest?: (method: string, path: string, status: number, ms: number) => void;
}

export interface ImageProgressLine {
  step: string;
  done?: number;
  total?: number;
}

export class XvmClient {
  readonly socketPath: string;
  private readonly onRequest?: ClientOptions['onRequest'];

  constructor(opts: ClientOptions = {}) {
    this.socketPath = opts.socketPath ?? statePaths().apiSocket;
    this.onRequest = opts.onRequest;
  }

  private unavailable(err: NodeJS.ErrnoException): ApiError {
    if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
      return new ApiError('unavailable', 0, `xvmd is not running (no daemon at ${this.socketPath}); start it with 'xvm daemon start'`);
    }
    if (err.code === 'EACCES') {
      return new ApiError('unavailable', 0, `permission denied on ${this.socketPath}: the API socket belongs to the user that runs xvmd`);
    }
    return new ApiError('unavailable', 0, `cannot reach xvmd at ${this.socketPath}: ${err.message}`);
  }

  /** Raw request; resolves with status, headers and body text. */
  rawRequest(method: string, path: string, body?: unknown, onChunk?: (chunk: string) => void): Promise<{ status: number; body: string }> {
    const started = Date.now();
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = http.request(
        {
          socketPath: this.socketPath,
          method,
          path,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            text += c;
            onChunk?.(c);
          });
          res.on('end', () => {
            this.onRequest?.(method, path, res.statusCode ?? 0, Date.now() - started);
            resolve({ status: res.statusCode ?? 0, body: text });
          });
          res.on('error', reject);
        },
      );
      req.on('error', (e) => reject(this.unavailable(e as NodeJS.ErrnoException)));
      if (payload) req.write(payload);
      req.end();
    });
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.rawRequest(method, path, body);
    let parsed: unknown;
    try {
      parsed = res.body ? JSON.parse(res.body) : undefined;
    } catch {
      if (res.status >= 400) throw new ApiError('internal', res.status, res.body);
      return res.body as unknown as T;
    }
    if (res.status >= 400) {
      const e = (parsed as { error?: { code?: string; message?: string; details?: unknown } })?.error;
      throw new ApiError(e?.code ?? 'internal', res.status, e?.message ?? `HTTP ${res.status}`, e?.details);
    }
    return parsed as T;
  }

  private d(name: string): string {
    return `/v1/domains/${encodeURIComponent(name)}`;
  }

  host(): Promise<HostInfo> {
    return this.request('GET', '/v1/host');
  }
  openapi(): Promise<Record<string, unknown>> {
    return this.request('GET', '/v1/openapi.json');
  }
  listDomains(): Promise<DomainInfo[]> {
    return this.request('GET', '/v1/domains');
  }
  getDomain(name: string): Promise<DomainInfo> {
    return this.request('GET', this.d(name));
  }
  createDomain(body: CreateDomainBody): Promise<DomainInfo> {
    return this.request('POST', '/v1/domains', body);
  }
  undefineDomain(name: string): Promise<{ undefined: string }> {
    return this.request('DELETE', this.d(name));
  }
  start(name: string, opts: { paused?: boolean } = {}): Promise<DomainInfo> {
    return this.request('POST', `${this.d(name)}/start`, opts);
  }
  shutdown(name: string, opts: { wait?: boolean; timeout?: number } = {}): Promise<DomainInfo> {
    return this.request('POST', `${this.d(name)}/shutdown`, opts);
  }
  reboot(name: string, opts: { force?: boolean; wait?: boolean; timeout?: number } = {}): Promise<DomainInfo> {
    return this.request('POST', `${this.d(name)}/reboot`, opts);
  }
  destroy(name: string): Promise<DomainInfo> {
    return this.request('POST', `${this.d(name)}/destroy`, {});
  }
  pause(name: string): Promise<DomainInfo> {
    return this.request('POST', `${this.d(name)}/pause`, {});
  }
  unpause(name: string): Promise<DomainInfo> {
    return this.request('POST', `${this.d(name)}/unpause`, {});
  }
  consoleLog(name: string, bytes = 65536): Promise<string> {
    return this.request('GET', `${this.d(name)}/log?bytes=${bytes}`);
  }
  /** Stops xvmd; with domains='shutdown' it first shuts running domains down (bounded by timeout seconds). */
  stopDaemon(opts: { domains?: 'keep' | 'shutdown' | 'save'; timeout?: number } = {}): Promise<DaemonStopResult> {
    return this.request('POST', '/v1/daemon/stop', opts);
  }

  // ---- operations and debugging ----

  sysrq(name: string, key: string): Promise<SysrqResult> {
    return this.request('POST', `${this.d(name)}/sysrq`, { key });
  }
  /** Opens QEMU's gdbstub on a unix socket; the answer says how to attach gdb. */
  gdbStart(name: string): Promise<GdbStubInfo> {
    return this.request('POST', `${this.d(name)}/gdbstub`, {});
  }
  gdbStop(name: string): Promise<GdbStubInfo> {
    return this.request('DELETE', `${this.d(name)}/gdbstub`);
  }
  setAutostart(name: string, on: boolean): Promise<DomainInfo> {
    return this.request('POST', `${this.d(name)}/autostart`, { on });
  }
  /** Sets a running domain's memory target (xl mem-set); `wait` seconds for the guest to reach it. */
  memSet(name: string, mib: number, wait = 0): Promise<MemSetResult> {
    return this.request('POST', `${this.d(name)}/memory`, { mib, wait });
  }
  /** Plugs / unplugs vCPUs of a running domain (xl vcpu-set). */
  vcpuSet(name: string, vcpus: number, wait = 15): Promise<VcpuSetResult> {
    return this.request('POST', `${this.d(name)}/vcpus`, { vcpus, wait });
  }
  stats(): Promise<HostStats> {
    return this.request('GET', '/v1/stats');
  }
  /** The Prometheus text of GET /metrics. */
  async metrics(): Promise<string> {
    const res = await this.rawRequest('GET', '/metrics');
    if (res.status >= 400) throw new ApiError('internal', res.status, res.body);
    return res.body;
  }
  /** The last `lines` lines of xvmd's log or the device log, as raw JSON lines. */
  async daemonLog(log: LogName, lines = 200): Promise<string[]> {
    const res = await this.rawRequest('GET', `/v1/logs/${log}?lines=${lines}`);
    if (res.status >= 400) throw this.errorOf(res);
    return res.body.split('\n').filter((l) => l.trim());
  }
  /** Follows a log: calls onLine for the last `lines` lines, then for each new one, until the connection ends. */
  async followDaemonLog(log: LogName, lines: number, onLine: (line: string) => void): Promise<void> {
    let pending = '';
    const res = await this.rawRequest('GET', `/v1/logs/${log}?lines=${lines}&follow=true`, undefined, (chunk) => {
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (line.trim()) onLine(line);
      }
    });
    if (res.status >= 400) throw this.errorOf(res);
  }

  private errorOf(res: { status: number; body: string }): ApiError {
    try {
      const e = (JSON.parse(res.body) as { error?: { code?: string; message?: string } }).error;
      return new ApiError(e?.code ?? 'internal', res.status, e?.message ?? `HTTP ${res.status}`);
    } catch {
      return new ApiError('internal', res.status, res.body || `HTTP ${res.status}`);
    }
  }

  /** A POST answered with NDJSON progress lines, then {done:true,result} or {error}. */
  private async ndjsonPost<T, P = SaveProgress>(path: string, body: unknown, what: string, onProgress?: (p: P) => void): Promise<T> {
    let pending = '';
    let result: T | undefined;
    let error: ApiError | undefined;
    const onLine = (line: string) => {
      if (!line.trim()) return;
      let msg: { progress?: P; done?: boolean; result?: T; error?: { code: string; message: string } };
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (msg.progress) onProgress?.(msg.progress);
      if (msg.done && msg.result) result = msg.result;
      if (msg.error) error = new ApiError(msg.error.code, msg.error.code === 'not_found' ? 404 : msg.error.code === 'conflict' ? 409 : msg.error.code === 'invalid' ? 400 : 500, msg.error.message);
    };
    const res = await this.rawRequest('POST', path, body, (chunk) => {
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        onLine(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    });
    if (res.status >= 400) throw this.errorOf(res);
    onLine(pending);
    if (error) throw error;
    if (!result) throw new ApiError('internal', res.status, `${what} ended without a result`);
    return result;
  }

  /** Saves a domain into `file` (absolute, on the daemon's host); checkpoint=true leaves it running. */
  saveDomain(name: string, file: string, opts: { checkpoint?: boolean } = {}, onProgress?: (p: SaveProgress) => void): Promise<SaveResult> {
    return this.ndjsonPost(`${this.d(name)}/save`, { file, ...opts }, 'save', onProgress);
  }

  /** Restores a saved domain from `file`; name=NEW restores a copy as a new domain. */
  restoreDomain(file: string, opts: { name?: string; paused?: boolean } = {}, onProgress?: (p: SaveProgress) => void): Promise<RestoreResult> {
    return this.ndjsonPost('/v1/restore', { file, ...opts }, 'restore', onProgress);
  }

  /** The save files in <lib>/saves that can be restored (and that folder). */
  listSaves(): Promise<SaveListing> {
    return this.request('GET', '/v1/saves');
  }

  /** Moves a running domain to the xvmd whose relocation service is at `target` (HOST[:PORT]). */
  migrateDomain(name: string, target: string, opts: { live?: boolean; copyStorage?: boolean } = {}, onProgress?: (p: SaveProgress) => void): Promise<MigrateResult> {
    return this.ndjsonPost(`${this.d(name)}/migrate`, { target, ...opts }, 'migrate', onProgress);
  }

  /** What a save file holds (its header), after checking it whole. */
  inspectSaveFile(file: string): Promise<Record<string, unknown>> {
    return this.request('GET', `/v1/save-file?file=${encodeURIComponent(file)}`);
  }

  /** Writes an ELF core of the guest's memory to `file` (absolute, on the daemon's host), reporting progress. */
  dumpCore(name: string, file: string, onProgress?: (p: { status: string; completed: number; total: number }) => void): Promise<DumpCoreResult> {
    return this.ndjsonPost(`${this.d(name)}/dump-core`, { file }, 'dump-core', onProgress);
  }

  async imageInfo(): Promise<ImageInfo | null> {
    try {
      return await this.request<ImageInfo>('GET', '/v1/images/default');
    } catch (e) {
      if (e instanceof ApiError && e.code === 'not_found') return null;
      throw e;
    }
  }

  /** Builds the default guest image in the daemon, reporting progress lines as they come. */
  async fetchImage(opts: { force?: boolean; onProgress?: (p: ImageProgressLine) => void } = {}): Promise<ImageInfo> {
    let pending = '';
    let result: ImageInfo | undefined;
    let error: ApiError | undefined;
    const onLine = (line: string) => {
      if (!line.trim()) return;
      const msg = JSON.parse(line) as { progress?: ImageProgressLine; done?: boolean; image?: ImageInfo; error?: { code: string; message: string } };
      if (msg.progress) opts.onProgress?.(msg.progress);
      if (msg.done && msg.image) result = msg.image;
      if (msg.error) error = new ApiError(msg.error.code, 500, msg.error.message);
    };
    const res = await this.rawRequest('POST', `/v1/images/default?force=${opts.force ? 'true' : 'false'}`, undefined, (chunk) => {
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        onLine(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    });
    onLine(pending);
    if (res.status >= 400) throw new ApiError('internal', res.status, res.body);
    if (error) throw error;
    if (!result) throw new ApiError('internal', res.status, 'image build ended without a result');
    return result;
  }

  // ---- the web manager (docs/web.md): listener and access tokens
  webStatus(): Promise<WebStatus> {
    return this.request('GET', '/v1/web');
  }
  webConfigure(settings: WebSettings): Promise<WebStatus> {
    return this.request('PUT', '/v1/web', settings);
  }
  webTokens(): Promise<TokenSummary[]> {
    return this.request('GET', '/v1/web/tokens');
  }
  webCreateToken(name: string): Promise<{ token: string; entry: TokenSummary }> {
    return this.request('POST', '/v1/web/tokens', { name });
  }
  webRevokeToken(name: string): Promise<{ revoked: TokenSummary }> {
    return this.request('DELETE', `/v1/web/tokens/${encodeURIComponent(name)}`);
  }

  // ---- storage (pools, volumes), disk hot plug, domain clone

  private p(pool: string): string {
    return `/v1/pools/${encodeURIComponent(pool)}`;
  }
  private v(pool: string, vol: string): string {
    return `${this.p(pool)}/volumes/${encodeURIComponent(vol)}`;
  }
  listPools(): Promise<PoolInfo[]> {
    return this.request('GET', '/v1/pools');
  }
  createPool(name: string, opts: { path?: string } = {}): Promise<PoolInfo> {
    return this.request('POST', '/v1/pools', { name, ...opts });
  }
  poolInfo(pool: string): Promise<PoolInfo> {
    return this.request('GET', this.p(pool));
  }
  deletePool(pool: string): Promise<{ deleted: string }> {
    return this.request('DELETE', this.p(pool));
  }
  listVolumes(pool: string): Promise<VolumeSummary[]> {
    return this.request('GET', `${this.p(pool)}/volumes`);
  }
  createVolume(pool: string, name: string, opts: { size: string | number; format?: 'raw' | 'qcow2' }): Promise<VolumeInfo> {
    return this.request('POST', `${this.p(pool)}/volumes`, { name, ...opts });
  }
  volumeInfo(pool: string, vol: string): Promise<VolumeInfo & { usedBy: { domain: string; vdev: string; readOnly: boolean }[] }> {
    return this.request('GET', this.v(pool, vol));
  }
  deleteVolume(pool: string, vol: string): Promise<{ deleted: string }> {
    return this.request('DELETE', this.v(pool, vol));
  }
  resizeVolume(pool: string, vol: string, size: string | number, opts: { shrink?: boolean } = {}): Promise<VolumeInfo> {
    return this.request('POST', `${this.v(pool, vol)}/resize`, { size, shrink: opts.shrink ?? false });
  }
  cloneVolume(pool: string, vol: string, name: string): Promise<VolumeInfo> {
    return this.request('POST', `${this.v(pool, vol)}/clone`, { name });
  }
  snapshotVolume(pool: string, vol: string, snapshot: string): Promise<SnapshotResult> {
    return this.request('POST', `${this.v(pool, vol)}/snapshot`, { snapshot });
  }
  rollbackVolume(pool: string, vol: string, snapshot: string, opts: { force?: boolean } = {}): Promise<RollbackResult> {
    return this.request('POST', `${this.v(pool, vol)}/rollback`, { snapshot, force: opts.force ?? false });
  }
  /** Copies an image file (absolute path on the daemon's host) into a new volume, reporting progress. */
  async importVolume(pool: string, name: string, source: string, opts: { format?: 'raw' | 'qcow2'; onProgress?: (done: number, total: number) => void } = {}): Promise<VolumeInfo> {
    let pending = '';
    let result: VolumeInfo | undefined;
    let error: ApiError | undefined;
    const onLine = (line: string) => {
      if (!line.trim()) return;
      let msg: { progress?: { done: number; total: number }; done?: boolean; volume?: VolumeInfo; error?: { code: string; message: string } };
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (msg.progress) opts.onProgress?.(msg.progress.done, msg.progress.total);
      if (msg.done && msg.volume) result = msg.volume;
      if (msg.error) error = new ApiError(msg.error.code, 500, msg.error.message);
    };
    const res = await this.rawRequest('POST', `${this.p(pool)}/import`, { name, source, ...(opts.format ? { format: opts.format } : {}) }, (c) => {
      pending += c;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        onLine(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    });
    if (res.status >= 400) {
      let e: { code?: string; message?: string } | undefined;
      try {
        e = (JSON.parse(res.body) as { error?: { code?: string; message?: string } }).error;
      } catch {
        /* not JSON */
      }
      throw new ApiError(e?.code ?? 'internal', res.status, e?.message ?? res.body);
    }
    onLine(pending);
    if (error) throw error;
    if (!result) throw new ApiError('internal', res.status, 'import ended without a result');
    return result;
  }
  /** Hot-plugs a disk: target is vol=POOL/NAME or an absolute path (not persistent). */
  blockAttach(name: string, target: string, vdev: string, access: 'ro' | 'rw' = 'rw'): Promise<{ domain: string; vdev: string; devid: number; image: string; format: string; readOnly: boolean }> {
    return this.request('POST', `${this.d(name)}/disks`, { target, vdev, access });
  }
  blockDetach(name: string, vdev: string): Promise<{ domain: string; vdev: string }> {
    return this.request('DELETE', `${this.d(name)}/disks/${encodeURIComponent(vdev)}`);
  }
  /** The disks a running domain has (backends), including hot-plugged ones. */
  listDisks(name: string): Promise<{ vdev: string; image: string; format: string; readOnly: boolean; vol?: string; hotplug?: boolean; socket: string }[]> {
    return this.request('GET', `${this.d(name)}/disks`);
  }
  /** Clones a stopped domain: new name and UUID, vol= disks cloned as qcow2 overlays. */
  cloneDomain(name: string, newName: string): Promise<DomainInfo> {
    return this.request('POST', `${this.d(name)}/clone`, { name: newName });
  }

  /** The websocket URL of an API path on the unix socket. */
  wsUrl(path: string): string {
    return `ws+unix://${this.socketPath}:${path}`;
  }

  /**
   * Opens a domain's serial console: binary messages are console output,
   * send Buffers to type. `history` bytes of the log are replayed first.
   */
  openConsole(name: string, opts: { history?: number } = {}): WebSocket {
    return new (wsClass())(this.wsUrl(`${this.d(name)}/console?history=${opts.history ?? 0}`));
  }

  /**
   * Resolves with the domain once `until` holds for it, watching the events
   * websocket (no polling); rejects after `timeoutMs`, or if the domain goes away.
   */
  async waitForDomain(name: string, until: (d: DomainInfo) => boolean, timeoutMs: number): Promise<DomainInfo> {
    const ws = this.events();
    try {
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      // Subscribed first, then looked: no change can slip between the two.
      const now = await this.getDomain(name);
      if (until(now)) return now;
      return await new Promise<DomainInfo>((resolve, reject) => {
        const timer = setTimeout(() => reject(new ApiError('timeout', 0, `domain '${name}': condition not met within ${timeoutMs / 1000} s`)), timeoutMs);
        ws.on('message', (data: Buffer) => {
          const msg = JSON.parse(data.toString()) as { type: string; domain?: DomainInfo; name?: string };
          if (msg.type === 'removed' && msg.name === name) {
            clearTimeout(timer);
            reject(new ApiError('not_found', 404, `domain '${name}' was undefined`));
          } else if (msg.type === 'domain' && msg.domain?.name === name && until(msg.domain)) {
            clearTimeout(timer);
            resolve(msg.domain);
          }
        });
        ws.once('close', () => {
          clearTimeout(timer);
          reject(new ApiError('unavailable', 0, 'xvmd closed the event stream'));
        });
      });
    } finally {
      ws.removeAllListeners('close');
      ws.close();
    }
  }

  /** Domain state changes as they happen. */
  events(): WebSocket {
    return new (wsClass())(this.wsUrl('/v1/events'));
  }

  // ---- HVM guests: graphics console, screenshots, CD-ROM, install (src/daemon/hvm-routes.ts)

  vncInfo(name: string): Promise<VncInfo> {
    return this.request('GET', `${this.d(name)}/vnc`);
  }
  /** A single-use, 60-second token; `path` is the noVNC websocket route with it. */
  vncToken(name: string): Promise<VncToken> {
    return this.request('POST', `${this.d(name)}/vnc/token`, {});
  }
  /** The noVNC websocket (RFB stream in binary frames) with a token from vncToken(). */
  openVnc(name: string, token: string): WebSocket {
    return new (wsClass())(this.wsUrl(`${this.d(name)}/vnc/ws?token=${encodeURIComponent(token)}`));
  }
  /** The guest's screen as PNG bytes. */
  screenshot(name: string): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: this.socketPath, method: 'GET', path: `${this.d(name)}/screenshot` }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          if ((res.statusCode ?? 0) < 400) return resolve(body);
          let e: { code?: string; message?: string } | undefined;
          try {
            e = (JSON.parse(body.toString('utf8')) as { error?: { code?: string; message?: string } }).error;
          } catch {
            /* not JSON */
          }
          reject(new ApiError(e?.code ?? 'internal', res.statusCode ?? 0, e?.message ?? `HTTP ${res.statusCode}`));
        });
        res.on('error', reject);
      });
      req.on('error', (e) => reject(this.unavailable(e as NodeJS.ErrnoException)));
      req.end();
    });
  }
  cdroms(name: string): Promise<CdromInfo[]> {
    return this.request('GET', `${this.d(name)}/cdrom`);
  }
  cdromInsert(name: string, file: string, vdev?: string): Promise<CdromInfo[]> {
    return this.request('POST', `${this.d(name)}/cdrom/insert`, { file, ...(vdev ? { vdev } : {}) });
  }
  cdromEject(name: string, vdev?: string): Promise<CdromInfo[]> {
    return this.request('POST', `${this.d(name)}/cdrom/eject`, vdev ? { vdev } : {});
  }
  /** virt-install: volume + configuration + start; says which console to attach. */
  install(body: InstallBody): Promise<InstallResult> {
    return this.request('POST', '/v1/install', body);
  }
  // ---- networks (virtual switches) and NIC hot plug
  private n(net: string): string {
    return `/v1/networks/${encodeURIComponent(net)}`;
  }
  listNetworks(): Promise<NetworkSummary[]> {
    return this.request('GET', '/v1/networks');
  }
  createNetwork(name: string, opts: { subnet?: string; vlan?: number; nat?: boolean } = {}): Promise<NetworkSummary> {
    return this.request('POST', '/v1/networks', { name, ...opts });
  }
  networkInfo(net: string): Promise<NetworkDetails> {
    return this.request('GET', this.n(net));
  }
  deleteNetwork(net: string): Promise<{ deleted: string }> {
    return this.request('DELETE', this.n(net));
  }
  listVifs(domain: string): Promise<VifSummary[]> {
    return this.request('GET', `${this.d(domain)}/vifs`);
  }
  networkAttach(domain: string, nic: { network?: string; mac?: string; vlan?: number; ip?: string; model?: 'virtio' | 'e1000' | 'rtl8139' } = {}): Promise<VifSummary & { domain: string }> {
    return this.request('POST', `${this.d(domain)}/vifs`, nic);
  }
  networkDetach(domain: string, vif: string | number): Promise<{ domain: string; detached: string; network: string }> {
    return this.request('DELETE', `${this.d(domain)}/vifs/${encodeURIComponent(String(vif))}`);
  }
  /**
   * Capture frames as a pcap byte stream: `target` is a network name or
   * DOMAIN/vifN. Ends after `count` frames / `duration` seconds, or when destroyed.
   */
  capture(target: string, opts: { count?: number; duration?: number } = {}): Promise<http.IncomingMessage> {
    const q = new URLSearchParams();
    if (opts.count) q.set('count', String(opts.count));
    if (opts.duration) q.set('duration', String(opts.duration));
    const slash = target.indexOf('/');
    const p = slash < 0 ? `${this.n(target)}/capture` : `${this.d(target.slice(0, slash))}/vifs/${encodeURIComponent(target.slice(slash + 1))}/capture`;
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: this.socketPath, method: 'GET', path: `${p}?${q.toString()}` }, (res) => {
        if ((res.statusCode ?? 0) < 400) return resolve(res);
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          let e: { code?: string; message?: string } | undefined;
          try {
            e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
          } catch {
            /* not JSON */
          }
          reject(new ApiError(e?.code ?? 'internal', res.statusCode ?? 0, e?.message ?? text));
        });
      });
      req.on('error', (e) => reject(this.unavailable(e as NodeJS.ErrnoException)));
      req.end();
    });
  }
}
