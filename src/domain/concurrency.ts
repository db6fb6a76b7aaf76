/**
 * `fn` over `items`, at most `limit` at a time, results in order. For many
 * small file reads: all at once would open thousands of files together (EMFILE)
 * and flood the libuv pool; one by one pays every round trip in turn.
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Small-file reads in flight at once: enough to hide NFS latency, well under fd limits. */
export const PARALLEL_READS = 32;

/** `p`, or `late()` if it has not settled after `ms` (the work itself goes on: a hung share holds it). */
export function settleWithin<T>(p: Promise<T>, ms: number, late: () => T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(late()), ms);
    timer.unref();
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Work run one at a time per key, in the order it arrived; a failure does not
 * stop the work queued behind it. For decisions that must not interleave
 * (placement, ref changes on one mount), within this process.
 */
export class Serial {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const run = previous.then(work, work);
    const tail = run.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return run;
  }
}
