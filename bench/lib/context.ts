/** What every scenario gets: where things are, how big to make them, and where results go. */
import type { Cleanup } from './cleanup.js';
import { startDriver, type Driver } from './driver.js';
import type { Results } from './report.js';

export interface Scale {
  /** Data written for the snapshot/clone runs: small and big (the big one is 8× the small). */
  dataSmall: number;
  dataBig: number;
  /** Volumes written directly into the layout for ListVolumes. */
  listVolumes: number;
  /** Volumes created through CreateVolume before the second memory reading. */
  memoryVolumes: number;
  /** Repeated runs per figure (the median is reported). */
  runs: number;
  /** Samples per run for latency figures. */
  samples: number;
  fioSeconds: number;
  /** ListVolumes pagination stops after this long and the rest is extrapolated (Infinity: never). */
  listBudgetSeconds: number;
}

export interface Ctx {
  base: string;
  quick: boolean;
  scale: Scale;
  cleanup: Cleanup;
  results: Results;
  log(line: string): void;
  /** All eight shares by mount name: xfs (reflink), ext4, s1…s6. */
  shares: Record<string, string>;
  kubelet: string;
}

/**
 * Thin volumes may over-commit the small scratch shares a hundredfold. The driver name keeps
 * "filedriver" out of the bench's mount paths: the test suite's leak check looks for that word,
 * and may run on the same machine meanwhile. Nothing else differs from the defaults.
 */
export const DRIVER_NAME = 'bench.fdbench.dev';
export const SERVER_ARGS = ['--over-subscription', '100', '--driver-name', DRIVER_NAME];

export function driver(ctx: Ctx, tag: string): Promise<Driver> {
  return startDriver({ base: ctx.base, mounts: ctx.shares, kubeletDir: ctx.kubelet, tag, args: SERVER_ARGS }, ctx.cleanup);
}
