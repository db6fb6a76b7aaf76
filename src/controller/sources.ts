/**
 * Where a new volume's data comes from: a CSI snapshot, another volume, or the
 * StorageClass's golden image. Each resolves to an immutable base image on one
 * mount; a linked clone is a qcow2 overlay on it (O(1)), a full clone a copy.
 */
import { realpath, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join, sep } from 'node:path';
import type { Logger } from 'pino';
import { busy, invalid, notFound } from '../domain/errors.js';
import { checkId } from '../domain/ids.js';
import { isFormat, type Format, type VolumeParameters } from '../domain/parameters.js';
import { Layout, TREE } from '../storage/layout.js';
import type { Mounts } from '../storage/mounts.js';
import { SCHEMA, type SnapshotRecord } from '../storage/records.js';
import type { SnapshotStore } from '../storage/snapshot-store.js';
import type { VolumeStore } from '../storage/volume-store.js';
import type { QemuImg } from '../system/qemu-img.js';
import type { SnapshotService } from './snapshots.js';

export type ContentSource = { type: 'snapshot' | 'volume'; id: string };

/** An immutable image a new volume starts from. */
export interface Base {
  mount: string;
  layout: Layout;
  /** The snapshot (CSI, or the driver's own) holding the image. */
  snapshotId: string;
  image: string;
  format: Format;
  sizeBytes: bigint;
  /** The snapshot behind the base's own image, if it has one: a copy must then be flattened. */
  backing: string | null;
  /** A base the driver made for this request: it must go unless a linked clone now depends on it. */
  internal: boolean;
}

export class Sources {
  constructor(
    private readonly mounts: Mounts,
    private readonly volumes: VolumeStore,
    private readonly snapshots: SnapshotStore,
    private readonly snapshotService: SnapshotService,
    private readonly qemuImg: QemuImg,
  ) {}

  /** The base for a CreateVolume, or undefined for a blank volume. `newId` names driver-made bases. */
  async resolve(source: ContentSource | undefined, params: VolumeParameters, newId: string, log: Logger): Promise<Base | undefined> {
    if (source?.type === 'snapshot') return this.fromSnapshot(source.id);
    if (source?.type === 'volume') return this.fromVolume(source.id, newId, log);
    if (params.sourceImage !== undefined) return this.fromImage(params.sourceImage, log);
    return undefined;
  }

  private async fromSnapshot(id: string): Promise<Base> {
    const found = await this.snapshotService.require(id);
    const r = found.record;
    return {
      mount: found.mount,
      layout: found.layout,
      snapshotId: r.id,
      image: found.layout.snapshotImage(r.id, r.format),
      format: r.format,
      sizeBytes: BigInt(r.sizeBytes),
      backing: r.backing,
      internal: false,
    };
  }

  /** A clone of a live volume starts from a hidden snapshot of it, removed with the clone. */
  private async fromVolume(id: string, newId: string, log: Logger): Promise<Base> {
    checkId(id, 'volume_content_source.volume.volume_id');
    const source = await this.volumes.find(id);
    if (source === undefined) throw notFound(`source volume ${id} does not exist`);
    const layout = await this.mounts.requireUsable(source.mount);
    const baseId = cloneBaseId(id, newId);
    const existing = await this.snapshots.read(layout, baseId);
    if (existing === undefined || existing.pending === true) {
      const record =
        existing ?? internalSnapshot(baseId, `base of volume ${newId}, cloned from ${id}`, id, source.record.format, source.record.sizeBytes);
      // A qcow2 source in use is frozen as a layer by the node serving it: retry until it has switched.
      if ((await this.snapshotService.freeze(source, record, log)) === 'pending') {
        throw busy(`source volume ${id} is being frozen for the clone by the node that serves it; retry`);
      }
      log.info({ volumeId: newId, source: id, baseId }, 'made a base snapshot of the source volume');
    }
    const r = await this.snapshots.read(layout, baseId);
    if (r === undefined) throw notFound(`base snapshot ${baseId} of volume ${id} vanished`);
    return {
      mount: source.mount,
      layout,
      snapshotId: baseId,
      image: layout.snapshotImage(baseId, r.format),
      format: r.format,
      sizeBytes: BigInt(r.sizeBytes),
      backing: r.backing,
      internal: true,
    };
  }

  /**
   * A golden image is adopted once into the driver tree as a hidden base (a
   * reflink or a flattened copy), keyed by its path, size and mtime: a changed
   * image gives a new base, and clones never depend on a file the admin may edit.
   */
  private async fromImage(src: { mount: string; path: string }, log: Logger): Promise<Base> {
    if (!this.mounts.has(src.mount)) throw invalid(`sourceImage names mount ${src.mount}, which is not configured`);
    const layout = await this.mounts.requireUsable(src.mount);
    const image = await insideMount(layout, src.path);
    const st = await stat(image);
    const info = await this.qemuImg.info(image);
    if (!isFormat(info.format)) throw invalid(`sourceImage ${src.mount}/${src.path} is a ${info.format} image; qcow2 or raw expected`);
    // An overlay or an external data file keeps references the driver does not own (relative to
    // the admin's directory, absolute, or on another mount): only a flattened copy is self-contained.
    const chain = await this.qemuImg.backingChain(image, info.format);
    const flatten = chain.length > 1 || chain.some((link) => link.dataFile !== undefined);
    const key = createHash('sha256').update(`${image}\0${st.size}\0${st.mtimeMs}`).digest('hex').slice(0, 24);
    const baseId = `image-${key}`;
    if ((await this.snapshots.read(layout, baseId)) === undefined) {
      const record = internalSnapshot(baseId, `golden image ${src.mount}/${src.path}`, '', info.format, info.virtualSize.toString());
      await this.snapshotService.copyInto(layout, record, image, null, { flatten });
      log.info({ sourceImage: `${src.mount}/${src.path}`, baseId }, 'adopted a golden image');
    }
    return {
      mount: src.mount,
      layout,
      snapshotId: baseId,
      image: layout.snapshotImage(baseId, info.format),
      format: info.format,
      sizeBytes: info.virtualSize,
      backing: null,
      internal: true,
    };
  }
}

/**
 * The hidden base of a PVC-to-PVC clone: readable while it fits in an id, else hashed, so two
 * long names can never truncate to the same base (a clone would get another clone's data).
 */
export function cloneBaseId(sourceId: string, newId: string): string {
  const plain = `clone-of-${sourceId}-for-${newId}`;
  if (plain.length <= 128) return plain;
  return `clone-of-${createHash('sha256').update(`${sourceId}\0${newId}`).digest('hex').slice(0, 40)}`;
}

function internalSnapshot(id: string, name: string, sourceVolumeId: string, format: Format, sizeBytes: string): SnapshotRecord {
  // Hidden and deleted from birth: it lives exactly as long as something depends on it.
  return {
    schema: SCHEMA,
    id,
    name,
    sourceVolumeId,
    format,
    sizeBytes,
    createdAt: new Date().toISOString(),
    method: 'copy',
    backing: null,
    deleted: true,
    internal: true,
  };
}

/** The real path of `relative` inside the mount (symlinks resolved), outside the driver's own tree. */
export async function insideMount(layout: Layout, relative: string): Promise<string> {
  const root = await realpath(layout.mountPath);
  let real: string;
  try {
    real = await realpath(join(root, relative));
  } catch {
    throw notFound(`image ${relative} does not exist on mount ${layout.mountPath}`);
  }
  if (!real.startsWith(root + sep)) throw invalid(`${relative} resolves to ${real}, outside the mount ${root}`);
  if (real.startsWith(join(root, TREE) + sep)) throw invalid(`${relative} is inside filedriver's own tree; import an image the admin placed`);
  return real;
}
