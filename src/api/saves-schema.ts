// GET /v1/saves (src/daemon/saves-routes.ts): the restorable save files.
import { z } from 'zod';

export const saveListEntrySchema = z.object({
  /** Absolute path: what POST /v1/restore {file} takes. */
  file: z.string(),
  name: z.string(),
  bytes: z.number(),
  modified: z.string(),
  domain: z.string().nullable(),
  uuid: z.string().nullable(),
  state: z.enum(['running', 'paused']).nullable(),
  checkpoint: z.boolean().nullable(),
  createdAt: z.string().nullable(),
  memoryMiB: z.number().nullable(),
  /** Why the file cannot be restored (bad header, truncated…); null when its header reads fine. */
  error: z.string().nullable(),
});
export const saveListingSchema = z.object({
  /** <lib>/saves: where saves meant for restoring go (the web manager writes there; so does `xvm save NAME` without a file). */
  dir: z.string(),
  files: z.array(saveListEntrySchema),
});
export type SaveListEntry = z.infer<typeof saveListEntrySchema>;
export type SaveListing = z.infer<typeof saveListingSchema>;

export const SAVES_ROUTES = [{ method: 'get', path: '/v1/saves', summary: 'Save files in <lib>/saves that can be restored: domain, state, checkpoint, size, time (headers only; a broken file is listed with its error)', response: saveListingSchema }] as const;
