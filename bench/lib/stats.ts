/** Percentiles and medians: every reported figure is a median over repeated runs. */

/** Nearest-rank percentile (p in 0..100) of unsorted samples. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** p50/p95/max of one run's samples. */
export interface RunStats {
  n: number;
  p50: number;
  p95: number;
  max: number;
}

export function runStats(samples: readonly number[]): RunStats {
  return { n: samples.length, p50: percentile(samples, 50), p95: percentile(samples, 95), max: Math.max(...samples) };
}

/** The median, over runs, of each statistic. */
export function medianOfRuns(runs: readonly RunStats[]): RunStats {
  return {
    n: runs.reduce((s, r) => s + r.n, 0),
    p50: median(runs.map((r) => r.p50)),
    p95: median(runs.map((r) => r.p95)),
    max: median(runs.map((r) => r.max)),
  };
}
