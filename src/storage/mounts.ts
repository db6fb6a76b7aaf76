/**
 * The admin's pre-mounted shares and their health. A mount is usable only when
 * its path is a mount point (mountinfo, not "the directory exists") and a probe
 * file can be created and removed in the driver tree: an unmounted NFS
 * mountpoint is an empty local directory, and writing there fills the node's
 * root disk. Health is cached briefly so hot RPCs stay cheap.
 */
import { mkdir, realpath, stat, statfs, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { MountConfig } from '../config.js';
import { settleWithin } from '../domain/concurrency.js';
import { describe, unavailable } from '../domain/errors.js';
import { mountAt, readMountInfo, type MountEntry } from '../system/mountinfo.js';
import { Layout } from './layout.js';
import { sweepOrphans, workName } from './whole.js';

export interface MountHealth {
  name: string;
  path: string;
  /** The path is a mount point: its contents are the share's, safe to read. */
  mounted: boolean;
  /** Mounted and writable: the only state in which the driver writes there. */
  usable: boolean;
  reason: string | undefined;
  freeBytes: bigint;
  totalBytes: bigint;
}

export interface MountProbes {
  mountInfo(): Promise<MountEntry[]>;
  realpath(path: string): Promise<string>;
  /** Creates the driver tree and a probe file, then removes the probe. */
  writeProbe(layout: Layout): Promise<void>;
  space(path: string): Promise<{ freeBytes: bigint; totalBytes: bigint }>;
  /** Both paths are on one filesystem (st_dev). */
  sameFilesystem(a: string, b: string): Promise<boolean>;
}

export const linuxProbes: MountProbes = {
  mountInfo: () => readMountInfo(),
  realpath: (p) => realpath(p),
  async writeProbe(layout) {
    await mkdir(layout.volumes, { recursive: true });
    await mkdir(layout.snapshots, { recursive: true });
    await mkdir(layout.tmp, { recursive: true });
    await mkdir(layout.moving, { recursive: true });
    // Unique per check: two checks of one mount (another process, or a cache of 0 s) must not remove each other's probe.
    // Named like work entries (host_pid_random): a process killed between the write and the unlink leaves one that start-up removes.
    const probe = join(layout.tmp, `.probe-${workName()}`);
    await writeFile(probe, 'filedriver probe\n');
    await unlink(probe);
  },
  async sameFilesystem(a, b) {
    const [x, y] = await Promise.all([stat(a), stat(b)]);
    return x.dev === y.dev;
  },
  async space(path) {
    // statfs in-process: no `df` spawn on the hot path of GetCapacity.
    const s = await statfs(path, { bigint: true });
    return { freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize };
  },
};

/**
 * How long one health check may take. A hard-mounted NFS share whose server is gone blocks
 * every filesystem call on it: the mount is then reported unusable instead of stalling each
 * RPC, and while that check hangs no second one is started (each holds a libuv thread).
 */
export const HEALTH_TIMEOUT_MS = 5_000;

export class Mounts {
  private readonly cache = new Map<string, { at: number; health: Promise<MountHealth> }>();
  /** Checks still running (settled or not), so a hung share holds one libuv thread, not one per RPC. */
  private readonly running = new Map<string, Promise<MountHealth>>();
  private readonly byName: ReadonlyMap<string, MountConfig>;

  constructor(
    readonly configs: readonly MountConfig[],
    private readonly probes: MountProbes,
    private readonly cacheMs: number,
    private readonly log: Logger,
    private readonly timeoutMs = HEALTH_TIMEOUT_MS,
  ) {
    this.byName = new Map(configs.map((m) => [m.name, m]));
  }

  names(): string[] {
    return this.configs.map((m) => m.name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  layout(name: string): Layout {
    const m = this.byName.get(name);
    if (m === undefined) throw new Error(`unknown mount ${name}`);
    return new Layout(m.path);
  }

  async health(name: string): Promise<MountHealth> {
    const hit = this.cache.get(name);
    const now = Date.now();
    if (hit !== undefined && now - hit.at < this.cacheMs) return hit.health;
    const health = this.checkOnce(name);
    this.cache.set(name, { at: now, health });
    return health;
  }

  /** One check per mount at a time, bounded by the timeout. */
  private checkOnce(name: string): Promise<MountHealth> {
    const path = this.byName.get(name)?.path ?? '?';
    const stuck = (reason: string): MountHealth => {
      this.log.warn({ mount: name, path, reason }, 'mount unusable');
      return { name, path, mounted: false, usable: false, reason, freeBytes: 0n, totalBytes: 0n };
    };
    const inFlight = this.running.get(name);
    if (inFlight !== undefined) {
      // Callers at the same moment share it; after the timeout, the share is hung.
      return settleWithin(inFlight, this.timeoutMs, () =>
        stuck(`a health check of ${path} has not returned for ${this.timeoutMs / 1000} s: is the share hung?`),
      );
    }
    const check = this.check(name).finally(() => this.running.delete(name));
    this.running.set(name, check);
    return settleWithin(check, this.timeoutMs, () => stuck(`the health check of ${path} took over ${this.timeoutMs / 1000} s: is the share hung?`));
  }

  async all(): Promise<MountHealth[]> {
    return Promise.all(this.names().map((n) => this.health(n)));
  }

  async usable(): Promise<MountHealth[]> {
    return (await this.all()).filter((h) => h.usable);
  }

  /** The mount's layout, or UNAVAILABLE naming why it may not be used. */
  async requireUsable(name: string): Promise<Layout> {
    const h = await this.health(name);
    if (!h.usable) throw unavailable(`mount ${name} (${h.path}) is not usable: ${h.reason ?? 'unknown'}`);
    return this.layout(name);
  }

  /** Forget cached health, e.g. after a write failed, or after a delete freed space. */
  invalidate(name: string): void {
    this.cache.delete(name);
  }

  /** Health checked now, not from the cache: for answers that depend on a share being absent. */
  async fresh(name: string): Promise<MountHealth> {
    this.invalidate(name);
    return this.health(name);
  }

  private async check(name: string): Promise<MountHealth> {
    const config = this.byName.get(name);
    if (config === undefined) throw new Error(`unknown mount ${name}`);
    const down = (reason: string, mounted = false): MountHealth => {
      this.log.warn({ mount: name, path: config.path, reason }, 'mount unusable');
      return { name, path: config.path, mounted, usable: false, reason, freeBytes: 0n, totalBytes: 0n };
    };
    try {
      const real = await this.probes.realpath(config.path).catch(() => undefined);
      if (real === undefined) return down(`${config.path} does not exist`);
      if (mountAt(await this.probes.mountInfo(), real) === undefined) {
        return down(`${config.path} is not a mount point (is the share mounted?)`);
      }
      const layout = new Layout(config.path);
      try {
        await this.probes.writeProbe(layout);
      } catch (e) {
        return down(`cannot write to ${layout.root}: ${describe(e)}`, true);
      }
      // Unmounted while the probe ran? Then the probe wrote into the bare mountpoint: never use it.
      if (mountAt(await this.probes.mountInfo(), real) === undefined || !(await this.probes.sameFilesystem(real, layout.tmp))) {
        return down(`${config.path} stopped being a mount point during the health check`);
      }
      // Work this process could not remove while the share was away goes now, before space is read.
      await sweepOrphans(layout.tmp);
      const space = await this.probes.space(config.path);
      return { name, path: config.path, mounted: true, usable: true, reason: undefined, ...space };
    } catch (e) {
      return down(describe(e));
    }
  }
}
