// Fault injection for tests: an image whose every read and write waits a
// while first, so a test can kill the backend with requests certainly in
// flight. Enabled only by XVM_BLK_FAULT_DELAY_MS in the backend program.
import type { BlockImage } from '../../../storage/image.js';

export function delayedImage(img: BlockImage, ms: number): BlockImage {
  const wait = () => new Promise<void>((r) => setTimeout(r, ms));
  return {
    get size() {
      return img.size;
    },
    get format() {
      return img.format;
    },
    get readOnly() {
      return img.readOnly;
    },
    read: async (b, o) => {
      await wait();
      return img.read(b, o);
    },
    write: async (b, o) => {
      await wait();
      return img.write(b, o);
    },
    flush: () => img.flush(),
    discard: (o, n) => img.discard(o, n),
    writeZeroes: (o, n, u) => img.writeZeroes(o, n, u),
    close: () => img.close(),
  };
}
