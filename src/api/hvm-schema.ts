// API schemas of the HVM routes: graphics console (VNC address, noVNC
// websocket tokens), screenshots, CD-ROM insert/eject and `xvm install`.
// The routes live in src/daemon/hvm-routes.ts; openapi.ts lists HVM_ROUTES.
import { z } from 'zod';

const absPath = z
  .string()
  .min(1)
  .max(4096)
  .refine((s) => s.startsWith('/'), { message: 'must be an absolute path on the host' })
  .refine((s) => !/[\u0000-\u001f\u007f]/.test(s), { message: 'must not contain control characters' });
const vdev = z.string().regex(/^(hd[a-d]|sd[a-z]{1,2})$/, { message: 'is not a CD-ROM vdev (hda..hdd or sdX)' });

export const cdromInsertBody = z.strictObject({
  file: absPath.describe('the ISO image to insert (absolute path on the host)'),
  vdev: vdev.optional().describe('which CD-ROM drive (default: the first)'),
});
export const cdromEjectBody = z.strictObject({ vdev: vdev.optional() });

export const cdromInfoSchema = z.object({ vdev: z.string(), medium: z.string().nullable(), trayOpen: z.boolean() });

export const vncInfoSchema = z.object({
  domain: z.string(),
  listen: z.string(),
  port: z.int(),
  password: z.string(),
  display: z.int().nullable(),
  address: z.string(),
  websocket: z.string(),
});
export const vncTokenSchema = z.object({ token: z.string(), expiresAt: z.string(), path: z.string() });
export const vncWsQuery = z.strictObject({ token: z.string().min(1).max(200) });

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export const installBody = z.strictObject({
  name: z.string().regex(NAME_RE, { message: 'is not a domain name (A-Z a-z 0-9 _ . -, starting with a letter or digit)' }),
  type: z.enum(['hvm', 'pv']).default('hvm'),
  memory: z.int().min(32).max(1048576).default(512).describe('MiB'),
  vcpus: z.int().min(1).max(64).default(1),
  disk: z
    .union([
      z.strictObject({
        size: z.number().positive().max(65536).describe('GiB of a new volume'),
        pool: z.string().regex(NAME_RE).optional().describe('pool of the new volume (default: default)'),
        format: z.enum(['qcow2', 'raw']).optional(),
      }),
      z.strictObject({ vol: z.string().regex(/^([A-Za-z0-9][A-Za-z0-9_.-]{0,63}\/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/).describe('an existing volume, POOL/NAME') }),
    ])
    .optional()
    .describe('the disk to install onto: a new volume of size GiB, or an existing volume'),
  cdrom: absPath.optional().describe('an installation ISO (hvm)'),
  kernel: absPath.optional().describe('an installer kernel (direct kernel boot)'),
  initrd: absPath.optional(),
  extra: z.string().max(2048).refine((s) => !/[\u0000-\u001f\u007f]/.test(s), { message: 'must not contain control characters' }).optional().describe('kernel command line additions'),
  graphics: z.enum(['vnc', 'none']).optional().describe('default: vnc for hvm, none for pv'),
  network: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/).optional().describe('attach one NIC to this network'),
  vncpasswd: z.string().max(8).optional(),
  vnclisten: z.string().regex(/^[A-Za-z0-9.:[\]-]{1,255}$/).optional(),
  start: z.boolean().default(true),
});
export type InstallBody = z.input<typeof installBody>;

export const installResult = z.object({
  domain: z.unknown().describe('the domain (as GET /v1/domains/{name})'),
  volume: z.object({ pool: z.string(), name: z.string(), path: z.string(), created: z.boolean() }).nullable(),
  vnc: vncInfoSchema.nullable(),
  console: z.enum(['serial', 'vnc']).describe('the console to attach: the serial console, or the VNC screen'),
});

export type CdromInfo = z.infer<typeof cdromInfoSchema>;
export type VncInfo = z.infer<typeof vncInfoSchema>;
export type VncToken = z.infer<typeof vncTokenSchema>;
export type InstallResult = Omit<z.infer<typeof installResult>, 'domain'> & { domain: import('./schema.js').DomainInfo };

const domain = '/v1/domains/{name}';
export const HVM_ROUTES = [
  { method: 'get', path: `${domain}/vnc`, summary: "An HVM domain's VNC console: address, port, display and password", response: vncInfoSchema },
  { method: 'post', path: `${domain}/vnc/token`, summary: 'A single-use token (valid 60 s) for the noVNC websocket of the domain', response: vncTokenSchema },
  { method: 'get', path: `${domain}/vnc/ws`, summary: "Websocket for noVNC: the domain's RFB stream (binary frames); needs ?token= from POST vnc/token", query: vncWsQuery, produces: 'websocket' },
  { method: 'get', path: `${domain}/screenshot`, summary: "The guest's screen as PNG (QMP screendump)", produces: 'image/png' },
  { method: 'get', path: `${domain}/cdrom`, summary: 'CD-ROM drives of a running HVM domain and their media', response: z.array(cdromInfoSchema) },
  { method: 'post', path: `${domain}/cdrom/insert`, summary: 'Insert an ISO into a CD-ROM drive of a running domain (not persistent)', body: cdromInsertBody, response: z.array(cdromInfoSchema) },
  { method: 'post', path: `${domain}/cdrom/eject`, summary: 'Eject the medium of a CD-ROM drive', body: cdromEjectBody, response: z.array(cdromInfoSchema) },
  { method: 'post', path: '/v1/install', summary: 'virt-install: create the disk volume and the configuration of a new domain, start it, answer which console to attach', body: installBody, response: installResult },
] as const;
