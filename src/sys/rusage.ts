// getrusage(RUSAGE_THREAD) for the storage layer: how often the calling
// thread went to sleep (voluntary context switches). A system call that
// took long because it blocked (dirty-page throttling, a journal commit)
// raises it; one that took long because a busy host preempted the thread
// does not. Owned by src/storage (io.ts).
import { c, check } from './libc.js';

const RUSAGE_THREAD = 1;
/** struct rusage: two timevals, then 14 longs; ru_nvcsw is the 13th. */
const RUSAGE_SIZE = 144;
const NVCSW_OFFSET = 32 + 12 * 8;
const usage = Buffer.alloc(RUSAGE_SIZE);

/** Voluntary context switches of the calling thread so far. */
export function threadVoluntarySwitches(): number {
  check('getrusage', c.getrusage(RUSAGE_THREAD, usage));
  return Number(usage.readBigInt64LE(NVCSW_OFFSET));
}
