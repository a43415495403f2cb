// The tree layout xvmd keeps in the store, as Xen lays it out (docs/store.md):
//   /vm/<uuid>/…                 configuration of a known domain
//   /local/domain/<domid>/…      runtime state of a running domain (domid ≥ 1)
//   /local/domain/0/backend/…    backends' side of devices
import { StoreError } from './errors.js';
import type { Store } from './store.js';

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const NAME = /^[A-Za-z0-9_-]+$/;

function checkDomU(domid: number): void {
  if (!Number.isInteger(domid) || domid < 1 || domid > 65535) throw new StoreError('EINVAL', `bad guest domain id ${domid} (1…65535)`);
}

export const layout = {
  vm(uuid: string): string {
    if (!UUID.test(uuid)) throw new StoreError('EINVAL', `bad domain uuid ${JSON.stringify(uuid)}`);
    return `/vm/${uuid.toLowerCase()}`;
  },
  domain(domid: number): string {
    if (!Number.isInteger(domid) || domid < 0 || domid > 65535) throw new StoreError('EINVAL', `bad domain id ${domid}`);
    return `/local/domain/${domid}`;
  },
  /** The guest's view of a device: /local/domain/<domid>/device/<class>/<devid>. */
  frontend(domid: number, cls: string, devid: number | string): string {
    if (!NAME.test(cls) || !NAME.test(String(devid))) throw new StoreError('EINVAL', 'bad device class or id');
    return `${layout.domain(domid)}/device/${cls}/${devid}`;
  },
  /** The backend's view: /local/domain/0/backend/<class>/<domid>/<devid>. */
  backend(domid: number, cls: string, devid: number | string): string {
    if (!NAME.test(cls) || !NAME.test(String(devid))) throw new StoreError('EINVAL', 'bad device class or id');
    return `/local/domain/0/backend/${cls}/${domid}/${devid}`;
  },
};

export interface DomainEntry {
  domid: number;
  uuid: string;
  name: string;
  /** KiB, as /local/domain/<domid>/memory/target holds it. */
  memoryKiB?: number;
  vcpus?: number;
}

/**
 * Create /local/domain/<domid> for a starting domain, in one transaction, with
 * Xen's permissions: the subtree is domain 0's and readable by the domain;
 * device/, control/, data/ and memory/ belong to the domain. Then introduce it
 * (fires @introduceDomain). EEXIST if the domid is in use.
 */
export async function createDomainEntry(store: Store, e: DomainEntry): Promise<void> {
  checkDomU(e.domid);
  if (!NAME.test(e.name)) throw new StoreError('EINVAL', `bad domain name ${JSON.stringify(e.name)}`);
  const base = layout.domain(e.domid);
  const vm = layout.vm(e.uuid);
  await store.transaction((tx) => {
    if (tx.exists(base)) throw new StoreError('EEXIST', `${base} already exists`);
    tx.mkdir(base);
    tx.setPerms(base, ['n0', `r${e.domid}`]);
    tx.write(`${base}/vm`, vm);
    tx.write(`${base}/name`, e.name);
    tx.write(`${base}/domid`, String(e.domid));
    if (e.memoryKiB !== undefined) tx.write(`${base}/memory/target`, String(e.memoryKiB));
    for (let i = 0; i < (e.vcpus ?? 0); i++) tx.write(`${base}/cpu/${i}/availability`, 'online');
    for (const sub of ['device', 'control', 'data', 'memory']) {
      tx.mkdir(`${base}/${sub}`);
      tx.setPerms(`${base}/${sub}`, [`n${e.domid}`]);
    }
  });
  store.introduceDomain(e.domid);
}

/** Remove a stopped domain's runtime state and backends, and release it (fires @releaseDomain). */
export async function removeDomainEntry(store: Store, domid: number): Promise<void> {
  checkDomU(domid);
  await store.transaction((tx) => {
    tx.rm(layout.domain(domid));
    if (tx.exists('/local/domain/0/backend')) {
      for (const cls of tx.directory('/local/domain/0/backend')) tx.rm(`/local/domain/0/backend/${cls}/${domid}`);
    }
  });
  if (store.isDomainIntroduced(domid)) store.releaseDomain(domid);
}

/** The running domains: domid → name, from /local/domain. */
export function listDomains(store: Store): { domid: number; name: string; vm: string | undefined }[] {
  if (!store.exists('/local/domain')) return [];
  return store
    .directory('/local/domain')
    .filter((d) => /^\d+$/.test(d) && d !== '0')
    .map((d) => ({
      domid: Number(d),
      name: store.tryRead(`/local/domain/${d}/name`) ?? '',
      vm: store.tryRead(`/local/domain/${d}/vm`),
    }))
    .sort((a, b) => a.domid - b.domid);
}
