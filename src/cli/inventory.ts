/** Everything on the mounts, read once for `list` and `doctor`: volumes and snapshots per mount. */
import { stat } from 'node:fs/promises';
import { describe } from '../domain/errors.js';
import type { Layout } from '../storage/layout.js';
import { intentPath, mergePath, readIntent, readMerge } from '../storage/layering.js';
import { moveIntentPath, readMove } from '../storage/moving.js';
import type { MountHealth } from '../storage/mounts.js';
import { readNodes, type NodeEntry } from '../storage/nodes.js';
import type { SnapshotRecord, VolumeRecord } from '../storage/records.js';
import type { Context } from './context.js';

interface Entry<R> {
  id: string;
  /** Undefined when the metadata file is missing or unreadable (`error` says why). */
  record: R | undefined;
  error: string | undefined;
  image: string | undefined;
  /** Bytes the image occupies on the share (st_blocks × 512); undefined when it is missing. */
  allocatedBytes: bigint | undefined;
}

/** Work under way on a volume, from the files that carry it between controller and node. */
export interface Pending {
  kind: 'snapshot layer' | 'merge' | 'move';
  detail: string;
  /** When the file was last written. */
  sinceMs: number;
}

export type VolumeEntry = Entry<VolumeRecord> & { pending: Pending[] };
export type SnapshotEntry = Entry<SnapshotRecord> & { dependents: string[] };

export interface MountInventory {
  health: MountHealth;
  layout: Layout;
  volumes: VolumeEntry[];
  snapshots: SnapshotEntry[];
  /** Node registry records on the share (storage/nodes.ts). */
  nodes: NodeEntry[];
}

/** Mounts that are not mounted are listed with no entries: their directory is not the share's. */
export async function takeInventory(ctx: Context): Promise<MountInventory[]> {
  return Promise.all(
    (await ctx.mounts.all()).map(async (health) => {
      const layout = ctx.mounts.layout(health.name);
      if (!health.mounted) return { health, layout, volumes: [], snapshots: [], nodes: [] };
      const volumes = await Promise.all(
        (await ctx.store.ids(layout)).map(async (id) => ({
          ...(await entry(
            id,
            () => ctx.store.read(layout, id),
            (r) => layout.imagePath(id, r.format),
            'volume.json',
          )),
          pending: await pendingOf(layout, id),
        })),
      );
      const snapshots = await Promise.all(
        (await ctx.snapshots.ids(layout)).map(async (id) => ({
          ...(await entry(
            id,
            () => ctx.snapshots.read(layout, id),
            (r) => layout.snapshotImage(id, r.format),
            'snapshot.json',
          )),
          dependents: (await ctx.snapshots.dependents(layout, id)).sort(),
        })),
      );
      return { health, layout, volumes, snapshots, nodes: await readNodes(layout) };
    }),
  );
}

async function entry<R extends { format: VolumeRecord['format'] }>(
  id: string,
  read: () => Promise<R | undefined>,
  imageOf: (record: R) => string,
  file: string,
): Promise<Entry<R>> {
  let record: R | undefined;
  try {
    record = await read();
  } catch (e) {
    return { id, record: undefined, error: `${file} is unreadable: ${describe(e)}`, image: undefined, allocatedBytes: undefined };
  }
  if (record === undefined) return { id, record, error: `${file} is missing`, image: undefined, allocatedBytes: undefined };
  const image = imageOf(record);
  const st = await stat(image, { bigint: true }).catch(() => undefined);
  return { id, record, error: undefined, image, allocatedBytes: st === undefined ? undefined : st.blocks * 512n };
}

async function pendingOf(layout: Layout, id: string): Promise<Pending[]> {
  const since = async (path: string): Promise<number> => (await stat(path).catch(() => undefined))?.mtimeMs ?? Date.now();
  const found: Pending[] = [];
  const layer = await readIntent(layout, id).catch(() => undefined);
  if (layer !== undefined) {
    found.push({
      kind: 'snapshot layer',
      detail: `snapshot ${layer.snapshotId} waits for the switch${layer.error === undefined ? '' : ` (failed: ${layer.error})`}`,
      sinceMs: await since(intentPath(layout, id)),
    });
  }
  const merge = await readMerge(layout, id).catch(() => undefined);
  if (merge !== undefined) {
    found.push({
      kind: 'merge',
      detail: `layer ${merge.layer} into ${merge.into}, asked of the node${merge.error === undefined ? '' : ` (failed: ${merge.error})`}`,
      sinceMs: await since(mergePath(layout, id)),
    });
  }
  const move = await readMove(layout, id).catch(() => undefined);
  if (move !== undefined) {
    const step = move.repointed ? 'repointed' : move.based ? 'base copied' : move.switched ? 'switched' : move.switching ? 'switching' : 'prepared';
    found.push({
      kind: 'move',
      detail: `to mount ${move.to}, ${step}${move.error === undefined ? '' : ` (failed: ${move.error})`}`,
      sinceMs: await since(moveIntentPath(layout, id)),
    });
  }
  return found;
}
