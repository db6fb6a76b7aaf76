/**
 * Snapshots on the mounts: `snapshots/<id>/` with an immutable image,
 * snapshot.json and `refs/` (one empty file per dependent whose image it
 * backs). A snapshot that still backs something is never removed: deleting it
 * only hides it, and it goes with its last dependent.
 */
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Serial } from '../domain/concurrency.js';
import { isValidId } from '../domain/ids.js';
import { findOnMounts, type Found } from './find.js';
import type { Layout } from './layout.js';
import type { Mounts } from './mounts.js';
import { readSnapshot, writeJsonAtomic, type SnapshotRecord } from './records.js';
import { buildWhole, idsIn, removeWhole } from './whole.js';

export type FoundSnapshot = Found<SnapshotRecord>;

export class SnapshotStore {
  /** Ref changes and removals on one mount run one at a time, so a new dependent never races a removal. */
  private readonly queues = new Serial();

  /**
   * Told when a hidden snapshot is left with one dependent: it can be merged
   * into it (controller/merger.ts) and its space given back.
   */
  onLonely: (layout: Layout, id: string) => void = () => undefined;

  constructor(private readonly mounts: Mounts) {}

  /** Includes hidden (deleted) snapshots: callers decide what a hidden one means. */
  async find(id: string): Promise<FoundSnapshot | undefined> {
    return findOnMounts(this.mounts, `snapshot ${id}`, (layout) => readSnapshot(layout.snapshotMeta(id)));
  }

  /** `dependents`: refs the snapshot is born with (a layer backs its own volume from the start). */
  async create(layout: Layout, record: SnapshotRecord, build: (dir: string) => Promise<void>, dependents: readonly string[] = []): Promise<boolean> {
    return buildWhole(layout.tmp, layout.snapshotDir(record.id), async (dir) => {
      await build(dir);
      await mkdir(join(dir, 'refs'));
      for (const d of dependents) await writeFile(join(dir, 'refs', d), '');
      await writeJsonAtomic(join(dir, 'snapshot.json'), record);
    });
  }

  async read(layout: Layout, id: string): Promise<SnapshotRecord | undefined> {
    return readSnapshot(layout.snapshotMeta(id));
  }

  async update(layout: Layout, record: SnapshotRecord): Promise<void> {
    await writeJsonAtomic(layout.snapshotMeta(record.id), record);
  }

  async ids(layout: Layout): Promise<string[]> {
    return idsIn(layout.snapshots, isValidId);
  }

  async dependents(layout: Layout, id: string): Promise<string[]> {
    return readdir(layout.refsDir(id)).catch(() => [] as string[]);
  }

  /** Records that `dependent`'s image is backed by snapshot `id`. */
  async addRef(layout: Layout, id: string, dependent: string): Promise<void> {
    await this.serial(layout, async () => {
      const record = await this.read(layout, id);
      if (record === undefined) throw new Error(`snapshot ${id} vanished before ${dependent} could depend on it`);
      await writeFile(join(layout.refsDir(id), dependent), '');
    });
  }

  /**
   * `dependent` no longer needs snapshot `id`. A hidden snapshot left without
   * dependents is removed, and the release continues down its own backing.
   */
  async release(layout: Layout, id: string, dependent: string): Promise<void> {
    let next: string | null = id;
    let from = dependent;
    while (next !== null) {
      const current: string = next;
      const releasedBy = from;
      next = await this.serial(layout, async () => {
        await rm(join(layout.refsDir(current), releasedBy), { force: true });
        const record = await this.read(layout, current);
        if (record === undefined || !record.deleted) return null;
        const left = (await this.dependents(layout, current)).length;
        if (left === 1) this.onLonely(layout, current);
        if (left > 0) return null;
        await removeWhole(layout.tmp, layout.snapshotDir(current));
        return record.backing;
      });
      from = current;
    }
  }

  /** Layers below `backing`, counting it: how deep a chain a new layer would sit on. */
  async depth(layout: Layout, backing: string | null): Promise<number> {
    let n = 0;
    for (let id = backing; id !== null; n++) {
      if (n > 1000) throw new Error(`snapshot ${backing ?? ''} has a backing loop; run filedriver doctor`);
      id = (await this.read(layout, id))?.backing ?? null;
    }
    return n;
  }

  /** Removes a snapshot that never became one (an undone layer): no dependents, no release. */
  async discard(layout: Layout, id: string): Promise<void> {
    await this.serial(layout, () => removeWhole(layout.tmp, layout.snapshotDir(id)));
  }

  /** Removes a snapshot now, or hides it while something still depends on it. Returns what happened. */
  async delete(layout: Layout, id: string): Promise<'removed' | 'hidden'> {
    const outcome = await this.serial(layout, async () => {
      const record = await this.read(layout, id);
      if (record === undefined) return { done: 'removed' as const, backing: null };
      const dependents = (await this.dependents(layout, id)).length;
      if (dependents > 0) {
        if (!record.deleted) await writeJsonAtomic(layout.snapshotMeta(id), { ...record, deleted: true });
        if (dependents === 1) this.onLonely(layout, id);
        return { done: 'hidden' as const, backing: null };
      }
      await removeWhole(layout.tmp, layout.snapshotDir(id));
      return { done: 'removed' as const, backing: record.backing };
    });
    if (outcome.backing !== null) await this.release(layout, outcome.backing, id);
    return outcome.done;
  }

  private async serial<T>(layout: Layout, work: () => Promise<T>): Promise<T> {
    return this.queues.run(layout.root, work);
  }
}
