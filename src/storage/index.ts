// Public surface of the storage layer.
export { type BlockImage, ImageError } from './image.js';
export { RawImage } from './raw.js';
export { Qcow2Image, type Qcow2CreateOptions, type Qcow2OpenOptions } from './qcow2.js';
export { openImage, probeFormat, type ImageFormat, type OpenImageOptions } from './open.js';
export { parseSize, formatSize } from './size.js';
export * from './pool.js';
