/**
 * CSI snapshots: an immutable image on the same mount as its source. A reflink
 * copy where the filesystem can (O(1) in the data, and a point-in-time copy
 * of the file even while the volume is attached); otherwise a sparse
 * `qemu-img convert` copy.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { alreadyExists, busy, invalid, notFound, precondition } from '../domain/errors.js';
import { checkId, idFromName, isValidId } from '../domain/ids.js';
import { parseToken, tokenAfter } from '../domain/tokens.js';
import { Layout } from '../storage/layout.js';
import type { Mounts } from '../storage/mounts.js';
import { SCHEMA, type SnapshotRecord } from '../storage/records.js';
import type { FoundSnapshot, SnapshotStore } from '../storage/snapshot-store.js';
import type { FoundVolume, VolumeStore } from '../storage/volume-store.js';
import type { Layering, LayerOutcome } from './layering.js';
import { noSpace } from './no-space.js';
import { readMove } from '../storage/moving.js';
import type { Files } from '../system/files.js';
import type { QemuImg } from '../system/qemu-img.js';

export interface SnapshotView {
  id: string;
  sourceVolumeId: string;
  sizeBytes: bigint;
  createdAt: string;
  readyToUse: boolean;
}

export const view = (r: SnapshotRecord): SnapshotView => ({
  id: r.id,
  sourceVolumeId: r.sourceVolumeId,
  sizeBytes: BigInt(r.sizeBytes),
  createdAt: r.createdAt,
  readyToUse: r.pending !== true,
});

const K8S_PREFIX = 'csi.storage.k8s.io/';
/** Thrown inside a build to abandon it when a reflink is all that was asked for. */
const NO_REFLINK = new Error('no reflink');

export class SnapshotService {
  constructor(
    private readonly mounts: Mounts,
    private readonly volumes: VolumeStore,
    private readonly snapshots: SnapshotStore,
    private readonly qemuImg: QemuImg,
    private readonly files: Files,
    private readonly layering: Layering,
  ) {}

  async create(name: string, sourceVolumeId: string, parameters: Record<string, string>, log: Logger): Promise<SnapshotView> {
    if (name === '') throw invalid('name is required');
    checkId(sourceVolumeId, 'source_volume_id');
    const unknown = Object.keys(parameters).filter((k) => !k.startsWith(K8S_PREFIX));
    if (unknown.length > 0) throw invalid(`unknown VolumeSnapshotClass parameter ${unknown.join(', ')}; filedriver takes none`);
    const id = idFromName(name);
    const existing = await this.snapshots.find(id);
    if (existing !== undefined) {
      const done = this.reuse(existing, name, sourceVolumeId);
      if (existing.record.pending !== true) return done;
    }

    const source = await this.volumes.find(sourceVolumeId);
    if (source === undefined) throw notFound(`source volume ${sourceVolumeId} does not exist`);
    const layout = await this.mounts.requireUsable(source.mount);
    const record: SnapshotRecord = existing?.record ?? {
      schema: SCHEMA,
      id,
      name,
      sourceVolumeId,
      format: source.record.format,
      sizeBytes: source.record.sizeBytes,
      createdAt: new Date().toISOString(),
      method: 'reflink',
      backing: null,
      deleted: false,
      internal: false,
    };
    const outcome = await this.freeze(source, record, log).catch((e: unknown) => {
      throw noSpace(e, `snapshot ${name}`);
    });
    log.info(
      { snapshotId: id, sourceVolumeId, mount: source.mount, outcome },
      outcome === 'ready' ? 'snapshot created' : 'snapshot waits for the node to switch layers',
    );
    const made = await this.snapshots.read(layout, id);
    return view(made ?? record);
  }

  /**
   * Makes snapshot `record` of a volume: a reflink where the mount has them
   * (for either format); else a qcow2 volume's image becomes the snapshot as a
   * layer (O(1), also while a node serves it: 'pending' until that node
   * switched); a raw volume is copied, and only while detached.
   */
  async freeze(source: FoundVolume, record: SnapshotRecord, log: Logger): Promise<LayerOutcome> {
    const { layout } = source;
    const image = layout.imagePath(source.record.id, source.record.format);
    if (source.record.format === 'qcow2') {
      // Mid-move, the newest writes are on the target: the source image is no snapshot of the volume.
      const moving = await readMove(layout, source.record.id);
      if (moving !== undefined) throw busy(`volume ${source.record.id} is moving to mount ${moving.to}; snapshot it when the move is done`);
      // A pending layering (a crash, or another snapshot the node has yet to switch) comes first.
      const pending = await this.layering.advance(source, log);
      if (pending !== undefined && pending.snapshotId !== record.id) {
        throw busy(`volume ${source.record.id} is still being snapshotted as ${pending.snapshotId}; retry`);
      }
      if (pending === undefined && (await this.snapshots.read(layout, record.id)) === undefined) {
        const current = (await this.volumes.read(layout, source.record.id)) ?? source.record;
        if (await this.copyInto(layout, record, image, current.backing, { copy: false })) return 'ready';
      }
      return this.layering.take(source, record, log);
    }
    await this.copyInto(layout, record, image, source.record.backing, { attachedTo: source.record.publications.map((p) => p.node) });
    return 'ready';
  }

  /**
   * Builds snapshot `record` from `image`. A reflink keeps the image's own
   * backing reference (relative, so still valid), and so depends on the same
   * base; a converted copy is flattened and depends on nothing.
   *
   * `attachedTo`: nodes the image is published to. A reflink is atomic, so it
   * is crash-consistent even while a node writes; a copy reads an image that
   * changes under it and may be torn (for qcow2, even its metadata), so it is
   * refused for an attached image. `flatten`: the image's backing chain is not
   * the driver's (an admin's golden image): only a flattened copy is safe.
   * `copy: false`: a reflink or nothing (returns false).
   */
  async copyInto(
    layout: Layout,
    record: SnapshotRecord,
    image: string,
    imageBacking: string | null,
    options: { attachedTo?: readonly string[]; flatten?: boolean; copy?: boolean } = {},
  ): Promise<boolean> {
    const attached = options.attachedTo ?? [];
    if (imageBacking !== null) await this.snapshots.addRef(layout, imageBacking, record.id);
    let backing: string | null = null;
    let created = false;
    try {
      created = await this.snapshots.create(layout, record, async (dir) => {
        const target = join(dir, Layout.imageName(record.format));
        if (options.flatten !== true && (await this.files.reflink(image, target))) {
          record.method = 'reflink';
          backing = imageBacking;
        } else if (options.copy === false) {
          throw NO_REFLINK;
        } else if (attached.length > 0) {
          throw precondition(
            `${image} is attached to node(s) ${attached.join(', ')} and mount ${layout.mountPath} cannot reflink it: ` +
              'a copy of an image in use would not be consistent; detach the volume first, or use a mount with reflinks (xfs reflink=1, NFS 4.2 CLONE)',
          );
        } else {
          record.method = 'copy';
          await this.qemuImg.convert(image, record.format, target, record.format);
        }
        record.backing = backing;
      });
    } catch (e) {
      if (e === NO_REFLINK) return false;
      throw e;
    } finally {
      // Drop the ref taken in advance when it turned out not to be needed, or nothing was made.
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- `backing` is set inside the create callback, which TS does not follow
      if (imageBacking !== null && (!created || backing === null)) await this.snapshots.release(layout, imageBacking, record.id);
    }
    if (!created) throw busy(`snapshot ${record.id} appeared while being created; retry`);
    return true;
  }

  private reuse(found: FoundSnapshot, name: string, sourceVolumeId: string): SnapshotView {
    const r = found.record;
    if (r.deleted || r.internal || r.sourceVolumeId !== sourceVolumeId || r.name !== name) {
      throw alreadyExists(`snapshot ${name} already exists for another source (${r.sourceVolumeId || 'an image'})`);
    }
    return view(r);
  }

  async delete(id: string, log: Logger): Promise<void> {
    checkId(id, 'snapshot_id');
    const found = await this.snapshots.find(id);
    if (found === undefined) return;
    const layout = await this.mounts.requireUsable(found.mount);
    const outcome = await this.snapshots.delete(layout, id);
    log.info(
      { snapshotId: id, mount: found.mount, outcome },
      outcome === 'hidden' ? 'snapshot hidden until its dependents are gone' : 'snapshot deleted',
    );
  }

  /** A visible snapshot by id, or NOT_FOUND. */
  async require(id: string): Promise<FoundSnapshot> {
    checkId(id, 'snapshot_id');
    const found = await this.snapshots.find(id);
    if (found === undefined || found.record.deleted || found.record.internal) throw notFound(`snapshot ${id} does not exist`);
    if (found.record.pending === true)
      throw precondition(`snapshot ${id} is not ready yet: the node serving its volume has yet to switch layers; retry`);
    return found;
  }

  /** Visible snapshots in id order, paged like ListVolumes, filtered by id or source volume. */
  async list(maxEntries: number, startingToken: string, filter: { snapshotId: string; sourceVolumeId: string }) {
    if (maxEntries < 0) throw invalid('max_entries must not be negative');
    const after = parseToken(startingToken);
    if (filter.snapshotId !== '') {
      if (!isValidId(filter.snapshotId)) return { entries: [], nextToken: '' };
      const one = await this.snapshots.find(filter.snapshotId);
      const visible = one !== undefined && !one.record.deleted && !one.record.internal;
      const matches = visible && (filter.sourceVolumeId === '' || one.record.sourceVolumeId === filter.sourceVolumeId);
      return { entries: matches ? [view(one.record)] : [], nextToken: '' };
    }
    const all: SnapshotRecord[] = [];
    for (const h of await this.mounts.all()) {
      if (!h.mounted) continue;
      const layout = this.mounts.layout(h.name);
      for (const id of await this.snapshots.ids(layout)) {
        if (id <= after) continue;
        const r = await this.snapshots.read(layout, id);
        if (r === undefined || r.deleted || r.internal) continue;
        if (filter.sourceVolumeId !== '' && r.sourceVolumeId !== filter.sourceVolumeId) continue;
        all.push(r);
      }
    }
    all.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const page = maxEntries === 0 ? all : all.slice(0, maxEntries);
    const last = page[page.length - 1];
    return { entries: page.map(view), nextToken: page.length < all.length && last !== undefined ? tokenAfter(last.id) : '' };
  }
}
