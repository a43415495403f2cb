// Watch an fd for readability from Node's event loop (libuv uv_poll through
// koffi): no thread, no busy loop. Level-triggered: the callback fires again
// while the fd stays readable.
import { koffi } from './libc.js';

export interface FdWatch {
  /** Stop delivering callbacks (can be resumed). */
  pause(): void;
  resume(): void;
  /** Stop for good. Does not close the fd. */
  close(): void;
}

export function watchFd(fd: number, onReadable: () => void): FdWatch {
  const h = koffi.node.poll(fd, { readable: true, disconnect: true }, () => onReadable());
  let state: 'on' | 'paused' | 'closed' = 'on';
  return {
    pause() {
      if (state !== 'on') return;
      h.stop();
      state = 'paused';
    },
    resume() {
      if (state !== 'paused') return;
      h.start({ readable: true, disconnect: true }, () => onReadable());
      state = 'on';
    },
    close() {
      if (state === 'closed') return;
      state = 'closed';
      h.close();
    },
  };
}
