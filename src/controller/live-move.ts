/**
 * Moving a qcow2 volume that a node serves to another mount while the pod
 * writes (storage/moving.ts has the steps). The controller prepares the new
 * top on the target, copies the source chain once the node has moved the
 * writes off it, and switches the records; the node does the two steps only
 * its qemu can (switch, repoint). Each call continues from what the files
 * say: ControllerModifyVolume answers ABORTED until the move is done, and the
 * resizer's retries carry it through. Callers hold the volume's lock.
 */
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { crashPoint } from '../domain/crash.js';
import { busy, internal } from '../domain/errors.js';
import { Layout } from '../storage/layout.js';
import type { Ledger } from '../storage/ledger.js';
import { createOverlayWhole } from '../storage/layering.js';
import { arrivalDir, arrivalImage, committed, readMove, removeMove, writeMove, type MoveIntent } from '../storage/moving.js';
import type { Mounts } from '../storage/mounts.js';
import { SCHEMA, uniqueSuffix, writeJsonAtomic, type VolumeRecord } from '../storage/records.js';
import type { SnapshotStore } from '../storage/snapshot-store.js';
import type { FoundVolume, VolumeStore } from '../storage/volume-store.js';
import type { QemuImg } from '../system/qemu-img.js';
import type { LayerEvents } from '../metrics.js';

export type MoveOutcome = 'done' | 'pending';

export class LiveMover {
  /** Told of each live move's steps (metrics). */
  report: LayerEvents = () => undefined;

  constructor(
    private readonly mounts: Mounts,
    private readonly store: VolumeStore,
    private readonly snapshots: SnapshotStore,
    private readonly ledger: Ledger,
    private readonly qemuImg: QemuImg,
  ) {}

  /** Starts moving `found` to mount `to`, or goes on with the move under way. */
  async move(found: FoundVolume, to: string, log: Logger): Promise<MoveOutcome> {
    const volumeId = found.record.id;
    const from = found.layout;
    let intent = await readMove(from, volumeId);
    if (intent !== undefined && intent.to !== to) {
      // A started move is finished before another is considered: the target may hold the newest writes.
      if ((await this.advance(found, log)) === 'pending') throw busy(`volume ${volumeId} is still moving to mount ${intent.to}; retry`);
      return 'done';
    }
    if (intent === undefined) {
      const target = await this.mounts.requireUsable(to);
      intent = { to, base: `moved-${createHash('sha256').update(volumeId).digest('hex').slice(0, 16)}-${uniqueSuffix()}` };
      await writeMove(from, volumeId, intent);
      await this.prepareArrival(found, target, intent);
      log.info({ volumeId, to, base: intent.base }, 'live move started: the node serving the volume moves its writes to the target');
    }
    return this.advance(found, log);
  }

  /**
   * Continues a move under way, if any; 'done' when none is left. Undoes one
   * that never took effect and failed; finishes any other as far as it can.
   */
  async advance(found: FoundVolume, log: Logger): Promise<MoveOutcome> {
    const volumeId = found.record.id;
    const from = found.layout;
    let intent = await readMove(from, volumeId);
    if (intent === undefined) return 'done';
    const to = await this.mounts.requireUsable(intent.to);
    if (intent.error !== undefined && !committed(intent)) {
      await rm(arrivalDir(to, volumeId), { recursive: true, force: true });
      await removeMove(from, volumeId);
      this.report('live_move', 'failed');
      throw internal(`moving volume ${volumeId} to mount ${intent.to} failed on its node: ${intent.error}`);
    }
    const served = ((await this.store.read(from, volumeId)) ?? found.record).publications.length > 0;
    if (!intent.switched) {
      // No node serves it any more: nothing writes the source, which is then as good as switched.
      if (served) return 'pending';
      if (await this.qemuImg.inUse(from.imagePath(volumeId, 'qcow2'), 'qcow2')) return 'pending';
      await this.prepareArrival(found, to, intent);
      intent = { ...intent, switching: true, switched: true };
      await writeMove(from, volumeId, intent);
    }
    if (!intent.based) {
      await this.copyBase(found, to, intent, log);
      intent = { ...intent, based: true };
      await writeMove(from, volumeId, intent);
      crashPoint('move:based');
    }
    if (!intent.repointed) {
      if (served) return 'pending';
      intent = { ...intent, repointed: true };
      await writeMove(from, volumeId, intent);
    }
    await this.arrive(found, to, intent, log);
    this.report('live_move', 'done');
    return 'done';
  }

  /** The new top on the target: empty, its header naming the base-to-be (built later). */
  private async prepareArrival(found: FoundVolume, to: Layout, intent: MoveIntent): Promise<void> {
    const volumeId = found.record.id;
    if ((await stat(arrivalImage(to, volumeId)).catch(() => undefined)) !== undefined) return;
    // Not recursive: moving/ exists only on the real share (the health probe made it).
    await mkdir(arrivalDir(to, volumeId)).catch((e: unknown) => {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    });
    const size = (await this.qemuImg.info(found.layout.imagePath(volumeId, 'qcow2'), 'qcow2')).virtualSize;
    await createOverlayWhole(this.qemuImg, arrivalImage(to, volumeId), Layout.backingRef(intent.base, 'qcow2'), size);
  }

  /** The source chain, immutable since the switch, flattened into the hidden base on the target. */
  private async copyBase(found: FoundVolume, to: Layout, intent: MoveIntent, log: Logger): Promise<void> {
    const volumeId = found.record.id;
    if ((await this.snapshots.read(to, intent.base)) !== undefined) return;
    const source = found.layout.imagePath(volumeId, 'qcow2');
    const size = (await this.qemuImg.info(source, 'qcow2')).virtualSize;
    const record = {
      schema: SCHEMA,
      id: intent.base,
      name: `base of volume ${volumeId}, moved from mount ${found.mount}`,
      sourceVolumeId: volumeId,
      format: 'qcow2' as const,
      sizeBytes: size.toString(),
      createdAt: new Date().toISOString(),
      method: 'copy' as const,
      backing: null,
      // Hidden from birth: it lives as long as the volume reads through it, and is merged into it later.
      deleted: true,
      internal: true,
    };
    await this.snapshots.create(
      to,
      record,
      async (dir) => {
        const copy = join(dir, Layout.imageName('qcow2'));
        await this.qemuImg.convert(source, 'qcow2', copy, 'qcow2');
        if (!(await this.qemuImg.same(source, copy, { a: 'qcow2', b: 'qcow2' })))
          throw internal(`the copy of ${source} on mount ${intent.to} differs; retrying the move copies again`);
      },
      [volumeId],
    );
    log.info({ volumeId, to: intent.to, base: intent.base }, "the volume's old layers are copied to the target");
  }

  /** The volume appears on the target (naming its source until that is gone), then the source goes. */
  private async arrive(found: FoundVolume, to: Layout, intent: MoveIntent, log: Logger): Promise<void> {
    const volumeId = found.record.id;
    const source = (await this.store.read(found.layout, volumeId)) ?? found.record;
    const record: VolumeRecord = { ...source, backing: intent.base, movedFrom: found.mount };
    if ((await this.store.read(to, volumeId)) === undefined) {
      await writeJsonAtomic(join(arrivalDir(to, volumeId), 'volume.json'), record);
      await rename(arrivalDir(to, volumeId), to.volumeDir(volumeId));
      crashPoint('move:arrived');
    }
    this.ledger.note(intent.to, record);
    await this.leave({ ...found, record: source }, log);
    const { movedFrom: _gone, ...settled } = record;
    await this.store.update(to, settled);
    log.info({ volumeId, from: found.mount, to: intent.to }, 'volume moved while in use');
  }

  /** Removes the source copy of a moved volume, and releases what it depended on. */
  private async leave(source: FoundVolume, log: Logger): Promise<void> {
    const volumeId = source.record.id;
    await this.store.remove(source.layout, volumeId);
    this.ledger.forget(source.mount, volumeId);
    if (source.record.backing !== null) await this.snapshots.release(source.layout, source.record.backing, volumeId);
    log.debug({ volumeId, mount: source.mount }, 'source copy of a moved volume removed');
  }

  /**
   * A volume found on its target with `movedFrom` set: a move was
   * interrupted after its arrival. Removes the stale source copy.
   */
  async settleArrival(found: FoundVolume, log: Logger): Promise<FoundVolume> {
    const from = found.record.movedFrom;
    if (from === undefined) return found;
    const layout = await this.mounts.requireUsable(from);
    const stale = await this.store.read(layout, found.record.id);
    if (stale !== undefined) await this.leave({ ...found, mount: from, layout, record: stale }, log);
    const { movedFrom: _gone, ...record } = found.record;
    await this.store.update(found.layout, record);
    return { ...found, record };
  }
}
