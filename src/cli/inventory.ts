/** Everything on the mounts, read once for `list` and `doctor`: volumes and snapshots per mount. */
import { stat } from 'node:fs/promises';
import { describe } from '../domain/errors.js';
import type { Layout } from '../storage/layout.js';
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

export type VolumeEntry = Entry<VolumeRecord>;
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
        (await ctx.store.ids(layout)).map((id) =>
          entry(id, () => ctx.store.read(layout, id), (r) => layout.imagePath(id, r.format), 'volume.json'),
        ),
      );
      const snapshots = await Promise.all(
        (await ctx.snapshots.ids(layout)).map(async (id) => ({
          ...(await entry(id, () => ctx.snapshots.read(layout, id), (r) => layout.snapshotImage(id, r.format), 'snapshot.json')),
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
