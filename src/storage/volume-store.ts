/**
 * Volumes on the mounts. A volume is `volumes/<id>/` holding its image and
 * volume.json; it is built whole in the mount's temp area and renamed into
 * place, and removed by renaming it out first, so a crash at any moment leaves
 * either a whole volume or none.
 */
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { unavailable } from '../domain/errors.js';
import { isValidId } from '../domain/ids.js';
import { Layout } from './layout.js';
import type { Mounts } from './mounts.js';
import { readRecord, uniqueSuffix, writeJsonAtomic, type VolumeRecord } from './records.js';

export interface FoundVolume {
  mount: string;
  layout: Layout;
  record: VolumeRecord;
  /** Whether the mount may be written (it may be mounted read-only). */
  writable: boolean;
  /** Why not, when it may not. */
  reason: string | undefined;
}

/** Temp entries are named host_pid_random so start-up can tell its own dead leftovers. */
const HOST = hostname();
const STALE_MS = 24 * 3600_000;

export class VolumeStore {
  constructor(
    private readonly mounts: Mounts,
    private readonly log: Logger,
  ) {}

  /**
   * Finds a volume by id on the mounted mounts: O(mounts) reads. When it is
   * not found while a mount is unreachable, the answer is UNAVAILABLE, never "gone".
   * `scope` limits that to the mounts the volume could be on (a StorageClass's).
   */
  async find(id: string, scope?: readonly string[]): Promise<FoundVolume | undefined> {
    const health = await this.mounts.all();
    const found = await Promise.all(
      health.map(async (h): Promise<FoundVolume | undefined> => {
        if (!h.mounted) return undefined;
        const layout = this.mounts.layout(h.name);
        const record = await readRecord(layout.metaPath(id));
        if (record === undefined) return undefined;
        return { mount: h.name, layout, record, writable: h.usable, reason: h.reason };
      }),
    );
    const hit = found.find((f) => f !== undefined);
    if (hit !== undefined) return hit;
    const down = health.filter((h) => !h.mounted && (scope === undefined || scope.includes(h.name)));
    if (down.length > 0) {
      throw unavailable(
        `volume ${id} is not on any reachable mount, and mount(s) ${down.map((h) => `${h.name} (${h.reason ?? 'unusable'})`).join(', ')} cannot be checked; retry when they are back`,
      );
    }
    return undefined;
  }

  /**
   * Builds a volume in the temp area and renames it into place. Returns false
   * when a volume with this id appeared meanwhile (nothing of ours is kept).
   */
  async create(layout: Layout, record: VolumeRecord, build: (dir: string) => Promise<void>): Promise<boolean> {
    const work = join(layout.tmp, `${HOST}_${process.pid}_${uniqueSuffix()}`);
    await mkdir(work, { recursive: true });
    try {
      await build(work);
      await writeJsonAtomic(join(work, 'volume.json'), record);
      await rename(work, layout.volumeDir(record.id));
      return true;
    } catch (e) {
      await rm(work, { recursive: true, force: true });
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') return false;
      throw e;
    }
  }

  async update(layout: Layout, record: VolumeRecord): Promise<void> {
    await writeJsonAtomic(layout.metaPath(record.id), record);
  }

  /** Renames the volume out of sight first, then deletes it. */
  async remove(layout: Layout, id: string): Promise<void> {
    const doomed = join(layout.tmp, `${HOST}_${process.pid}_${uniqueSuffix()}-deleting-${id}`);
    try {
      await rename(layout.volumeDir(id), doomed);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    await rm(doomed, { recursive: true, force: true });
  }

  /** Ids on one mount, sorted: ListVolumes pages over this order. */
  async ids(layout: Layout): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(layout.volumes);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    return names.filter(isValidId).sort();
  }

  async read(layout: Layout, id: string): Promise<VolumeRecord | undefined> {
    return readRecord(layout.metaPath(id));
  }

  /**
   * Removes leftovers of interrupted work: entries this host's dead processes
   * left, and anything a day old. Live work by another process is left alone.
   */
  async cleanTemp(layout: Layout): Promise<number> {
    let entries: string[];
    try {
      entries = await readdir(layout.tmp);
    } catch {
      return 0;
    }
    let removed = 0;
    for (const entry of entries) {
      if (entry.startsWith('.probe-')) continue;
      const [host, pid] = entry.split('_');
      const path = join(layout.tmp, entry);
      const mine = host === HOST && pid !== undefined && !isAlive(Number(pid));
      const old = !mine && Date.now() - (await stat(path).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs > STALE_MS;
      if (!mine && !old) continue;
      await rm(path, { recursive: true, force: true });
      removed++;
    }
    if (removed > 0) this.log.info({ tmp: layout.tmp, removed }, 'removed leftovers of interrupted work');
    return removed;
  }
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return false; // our own pid, from a previous life of this container
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
