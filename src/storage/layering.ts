/**
 * A qcow2 snapshot as a layer, on disk. The volume's current image becomes the
 * snapshot's immutable image and the volume goes on in a fresh overlay backed
 * by it: nothing is copied, on any filesystem. The steps, each leaving a state
 * that the next caller (controller or node, after any crash) can read back:
 *
 *   1. intent    volumes/<v>/layering.json names the snapshot and the volume's old backing
 *   2. frozen    snapshots/<s>/ appears whole, its image a hard link to the volume's image
 *                (the same inode: still written until the switch)
 *   3. overlay   volumes/<v>/.layer-<s>.qcow2, backed by ../../snapshots/<s>/disk.qcow2
 *   4. switch    the overlay is renamed over volumes/<v>/disk.qcow2. If a qemu export
 *                writes the image, it first moves its writes to the overlay
 *                (blockdev-snapshot); otherwise the rename alone is the switch.
 *   5. records   volume.json's backing becomes <s>, the snapshot stops being pending,
 *                the intent goes.
 *
 * The switch is visible in the files themselves: it has happened once the
 * volume's image is no longer the snapshot's inode. Before it, undoing is
 * removing what was made; after it, finishing is writing the records.
 */
import { link, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Format } from '../domain/parameters.js';
import { backingReference } from './image-header.js';
import { Layout } from './layout.js';
import type { QemuImg } from '../system/qemu-img.js';
import { readJsonFile, uniqueSuffix, writeJsonAtomic } from './records.js';

export interface LayerIntent {
  /** The snapshot the volume's current image becomes. */
  snapshotId: string;
  /** The volume's backing before the switch: the snapshot's backing after it. */
  backing: string | null;
  /** Set by a node that could not switch its export: the controller undoes the snapshot. */
  error?: string;
}

export type LayerPhase =
  /** Nothing frozen yet (the snapshot directory is missing): undo is removing the intent. */
  | 'intent'
  /** The snapshot shares the volume's inode, no overlay yet. */
  | 'frozen'
  /** The overlay is ready; the switch has not happened. */
  | 'ready'
  /** The volume's image is the overlay: only the records are left to write. */
  | 'switched';

export const intentPath = (layout: Layout, volumeId: string): string => join(layout.volumeDir(volumeId), 'layering.json');

export const overlayPath = (layout: Layout, volumeId: string, snapshotId: string): string =>
  join(layout.volumeDir(volumeId), `.layer-${snapshotId}.qcow2`);

export const readIntent = (layout: Layout, volumeId: string): Promise<LayerIntent | undefined> => readJsonFile(intentPath(layout, volumeId));

export async function writeIntent(layout: Layout, volumeId: string, intent: LayerIntent): Promise<void> {
  await writeJsonAtomic(intentPath(layout, volumeId), intent);
}

export async function removeIntent(layout: Layout, volumeId: string): Promise<void> {
  await rm(intentPath(layout, volumeId), { force: true });
}

const inode = async (path: string): Promise<bigint | undefined> => (await stat(path, { bigint: true }).catch(() => undefined))?.ino;

/** How far the layering of `volumeId` into `intent.snapshotId` got, read from the files. */
export async function phaseOf(layout: Layout, volumeId: string, intent: LayerIntent): Promise<LayerPhase> {
  const frozen = await inode(layout.snapshotImage(intent.snapshotId, 'qcow2'));
  if (frozen === undefined) return 'intent';
  if ((await inode(layout.imagePath(volumeId, 'qcow2'))) !== frozen) return 'switched';
  return (await inode(overlayPath(layout, volumeId, intent.snapshotId))) === undefined ? 'frozen' : 'ready';
}

/** Overlays half-made under a temporary name (a crash while creating one): removed when the layering ends. */
export async function removeOverlayWork(layout: Layout, volumeId: string, snapshotId: string): Promise<void> {
  const prefix = `.layer-${snapshotId}.qcow2.`;
  const names = await readdir(layout.volumeDir(volumeId)).catch(() => [] as string[]);
  await Promise.all(names.filter((n) => n.startsWith(prefix)).map((n) => rm(join(layout.volumeDir(volumeId), n), { force: true })));
}

/** Step 2's image: the volume's own inode under the snapshot's name. */
export async function linkImage(layout: Layout, volumeId: string, target: string): Promise<void> {
  await link(layout.imagePath(volumeId, 'qcow2'), target);
}

/**
 * Step 4 without qemu, or after qemu switched: the overlay becomes the
 * volume's image. Only when no process writes the old image any more — its
 * writes would land in the snapshot. Idempotent: a rename already done (by the
 * node or the controller) is recognised from the phase.
 */
export async function promoteOverlay(layout: Layout, volumeId: string, intent: LayerIntent): Promise<void> {
  try {
    await rename(overlayPath(layout, volumeId, intent.snapshotId), layout.imagePath(volumeId, 'qcow2'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && (await phaseOf(layout, volumeId, intent)) === 'switched') return;
    throw e;
  }
}

/** The overlay's backing reference: relative, valid wherever the mount is mounted. */
export const overlayBacking = (snapshotId: string): string => Layout.backingRef(snapshotId, 'qcow2');

/**
 * A qcow2 overlay at `path` reading through `backing` (`-u`: the backing may be locked by an
 * export, or not made yet), made under a temporary name beside it and renamed in: a node acts
 * as soon as the name exists, so it must never see a half-made image.
 */
export async function createOverlayWhole(qemuImg: Pick<QemuImg, 'createOverlay'>, path: string, backing: string, sizeBytes: bigint): Promise<void> {
  const work = `${path}.${uniqueSuffix()}`;
  try {
    await qemuImg.createOverlay(work, backing, 'qcow2', sizeBytes, { unsafe: true });
    await rename(work, path);
  } finally {
    await rm(work, { force: true });
  }
}

/** A layer under an image, as the image headers name it. */
export interface HeaderLayer {
  id: string;
  format: Format;
}

/**
 * The snapshots under qcow2 image `image`, nearest first, as the headers name
 * them: what qemu will read. The records may lag behind the files (a switch or
 * a merge the controller has yet to record); the headers never do.
 */
export async function headerChain(layout: Layout, image: string): Promise<HeaderLayer[]> {
  const chain: HeaderLayer[] = [];
  for (let path = image, ref = await backingReference(path); ref !== undefined;) {
    const layer = Layout.snapshotOfRef(ref);
    if (layer === undefined) throw new Error(`${path} reads through ${ref}, which is not a snapshot of mount ${layout.root}; run filedriver doctor`);
    if (chain.length > 1000) throw new Error(`${image} has a backing loop; run filedriver doctor`);
    chain.push(layer);
    path = layout.snapshotImage(layer.id, layer.format);
    ref = layer.format === 'qcow2' ? await backingReference(path) : undefined;
  }
  return chain;
}

/**
 * A merge the controller hands to the node serving volume `top`: stream
 * snapshot `layer` into `into` (the volume itself or a snapshot in its chain),
 * which then reads through `backing`. The dependent's header shows when it is
 * done; a node that fails says so in `error`.
 */
export interface MergeRequest {
  layer: string;
  into: string;
  backing: string | null;
  error?: string;
}

export const mergePath = (layout: Layout, volumeId: string): string => join(layout.volumeDir(volumeId), 'merging.json');
export const readMerge = (layout: Layout, volumeId: string): Promise<MergeRequest | undefined> => readJsonFile(mergePath(layout, volumeId));
export const writeMerge = (layout: Layout, volumeId: string, request: MergeRequest): Promise<void> =>
  writeJsonAtomic(mergePath(layout, volumeId), request);
export const removeMerge = (layout: Layout, volumeId: string): Promise<void> => rm(mergePath(layout, volumeId), { force: true });
