/**
 * Volumes on the mounts: `volumes/<id>/` holding the image and volume.json,
 * appearing and disappearing whole (storage/whole.ts).
 */
import { join } from 'node:path';
import { isValidId } from '../domain/ids.js';
import { findOnMounts, type Found } from './find.js';
import type { Layout } from './layout.js';
import type { Mounts } from './mounts.js';
import { readRecord, writeJsonAtomic, type VolumeRecord } from './records.js';
import { buildWhole, idsIn, removeWhole } from './whole.js';

export type FoundVolume = Found<VolumeRecord>;

export class VolumeStore {
  constructor(private readonly mounts: Mounts) {}

  /** `scope` limits UNAVAILABLE to the mounts the volume could be on (a StorageClass's). */
  async find(id: string, scope?: readonly string[]): Promise<FoundVolume | undefined> {
    return findOnMounts(this.mounts, `volume ${id}`, (layout) => readRecord(layout.metaPath(id)), scope, arrived);
  }

  /** Builds the volume in the temp area; false when one with this id appeared meanwhile. */
  async create(layout: Layout, record: VolumeRecord, build: (dir: string) => Promise<void>): Promise<boolean> {
    return buildWhole(layout.tmp, layout.volumeDir(record.id), async (dir) => {
      await build(dir);
      await writeJsonAtomic(join(dir, 'volume.json'), record);
    });
  }

  async update(layout: Layout, record: VolumeRecord): Promise<void> {
    await writeJsonAtomic(layout.metaPath(record.id), record);
  }

  async remove(layout: Layout, id: string): Promise<void> {
    await removeWhole(layout.tmp, layout.volumeDir(id));
  }

  /** Ids on one mount, sorted: ListVolumes pages over this order. */
  async ids(layout: Layout): Promise<string[]> {
    return idsIn(layout.volumes, isValidId);
  }

  async read(layout: Layout, id: string): Promise<VolumeRecord | undefined> {
    return readRecord(layout.metaPath(id));
  }
}

/**
 * A volume on two mounts is one whose live move was interrupted between its
 * arrival and the removal of the source: the arrived copy (it names the other
 * as movedFrom) is the truth — the source lacks the writes made since.
 */
function arrived(hits: FoundVolume[]): FoundVolume | undefined {
  return hits.find((h) => h.record.movedFrom !== undefined && hits.some((o) => o.mount === h.record.movedFrom)) ?? hits[0];
}
