// The default guest image as the daemon sees it. Verifying checksums (and
// asking apt whether the kernel changed) costs seconds under load, so domain
// starts use the cached answer until the image files change on disk;
// `xvm image fetch` is where apt is asked.
import fs from 'node:fs';
import path from 'node:path';
import { ensureDefaultImage, readDefaultImage, type GuestImage, type ImageProgress } from '../image/index.js';

export class DefaultImageCache {
  readonly dir: string;
  private cached: { key: string; image: GuestImage } | undefined;

  constructor(imagesRoot: string) {
    this.dir = path.join(imagesRoot, 'default');
  }

  /** Size and mtime of the manifest and both files: changes whenever the image is rebuilt. */
  private key(): string | undefined {
    try {
      return ['manifest.json', 'vmlinuz', 'initrd.img']
        .map((f) => {
          const st = fs.statSync(path.join(this.dir, f));
          return `${st.size}:${st.mtimeMs}`;
        })
        .join('/');
    } catch {
      return undefined;
    }
  }

  /** The verified image, or null if none is built. */
  async get(): Promise<GuestImage | null> {
    const key = this.key();
    if (!key) return null;
    if (this.cached?.key === key) return this.cached.image;
    const image = await readDefaultImage(this.dir);
    this.cached = image ? { key, image } : undefined;
    return image;
  }

  /** The image, built first if there is none. */
  async getOrBuild(): Promise<GuestImage> {
    return (await this.get()) ?? this.fetch({});
  }

  /** Builds or re-checks against apt (xvm image fetch). */
  async fetch(opts: { force?: boolean; onProgress?: (p: ImageProgress) => void }): Promise<GuestImage> {
    const image = await ensureDefaultImage({ dir: this.dir, ...opts });
    this.cached = undefined;
    return image;
  }
}
