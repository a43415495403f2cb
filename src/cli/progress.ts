// Progress display for long work: a bar on a terminal, plain lines otherwise.
import cliProgress from 'cli-progress';

export interface Progress {
  update(step: string, done?: number, total?: number): void;
  stop(): void;
}

export function progress(title: string): Progress {
  if (!process.stderr.isTTY) {
    let last = '';
    return {
      update(step) {
        if (step !== last) process.stderr.write(`${title}: ${step}\n`);
        last = step;
      },
      stop() {},
    };
  }
  const bar = new cliProgress.SingleBar(
    { format: `${title} [{bar}] {percentage}% | {step}`, stream: process.stderr, hideCursor: true, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  let lastStep = '';
  let count = 0;
  return {
    update(step, done, total) {
      if (!started) {
        bar.start(100, 0, { step });
        started = true;
      }
      if (step !== lastStep) count++;
      lastStep = step;
      // Without byte counts, advance a little per step so the bar moves.
      const pct = done !== undefined && total ? Math.min(100, Math.round((done / total) * 100)) : Math.min(95, count * 12);
      bar.update(pct, { step });
    },
    stop() {
      if (started) {
        bar.update(100, { step: 'done' });
        bar.stop();
      }
    },
  };
}
