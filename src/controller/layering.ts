/**
 * qcow2 snapshots as layers (storage/layering.ts has the on-disk steps): O(1)
 * in the data on every mount, and online — when a node's qemu export writes
 * the volume, the controller leaves the switch to that node and answers "not
 * ready yet" until the files show it happened (the snapshotter retries).
 *
 * Every call first continues whatever layering the volume has pending, so a
 * crash at any step is finished or undone by the next call on that volume.
 * Callers hold the volume's lock: no publish, expansion or move runs meanwhile.
 */
import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import { crashPoint } from '../domain/crash.js';
import { busy, internal, precondition } from '../domain/errors.js';
import { Layout } from '../storage/layout.js';
import {
  createOverlayWhole,
  linkImage,
  overlayBacking,
  overlayPath,
  phaseOf,
  promoteOverlay,
  readIntent,
  removeOverlayWork,
  removeIntent,
  writeIntent,
  type LayerIntent,
} from '../storage/layering.js';
import type { LayerEvents } from '../metrics.js';
import type { SnapshotRecord } from '../storage/records.js';
import type { SnapshotStore } from '../storage/snapshot-store.js';
import type { FoundVolume, VolumeStore } from '../storage/volume-store.js';
import type { QemuImg } from '../system/qemu-img.js';

/**
 * How many layers a volume's chain may have. Every read of a cluster the top
 * has not written walks down the chain, and qemu keeps metadata caches per
 * layer; deleted snapshots are merged away, so the depth is about the number
 * of snapshots kept. docs/BENCHMARKS.md has read latency against depth.
 */
export const MAX_CHAIN = 32;

export type LayerOutcome = 'ready' | 'pending';

/** How long CreateSnapshot waits for the node's switch before answering "not ready" (node/layers.ts polls each second). */
const SWITCH_WAIT_MS = 1_500;

export class Layering {
  /** Told of each layer switch the controller sees through (metrics). */
  report: LayerEvents = () => undefined;

  constructor(
    private readonly volumes: VolumeStore,
    private readonly snapshots: SnapshotStore,
    private readonly qemuImg: QemuImg,
  ) {}

  /**
   * Freezes the volume's image as snapshot `record` (or goes on doing so).
   * 'pending' while the node that serves the volume has yet to switch.
   */
  async take(found: FoundVolume, record: SnapshotRecord, log: Logger): Promise<LayerOutcome> {
    const { layout } = found;
    const volumeId = found.record.id;
    const pending = await this.advance(found, log);
    if (pending !== undefined) {
      if (pending.snapshotId === record.id) return this.awaitSwitch(found, pending, log);
      throw busy(`volume ${volumeId} is still being snapshotted as ${pending.snapshotId}; retry`);
    }
    const done = await this.snapshots.read(layout, record.id);
    if (done !== undefined) return done.pending === true ? 'pending' : 'ready';

    const current = (await this.volumes.read(layout, volumeId)) ?? found.record;
    const depth = await this.snapshots.depth(layout, current.backing);
    if (depth + 1 >= MAX_CHAIN) {
      throw precondition(`volume ${volumeId} already has ${depth} layers (at most ${MAX_CHAIN}); delete some of its snapshots first`);
    }
    const intent: LayerIntent = { snapshotId: record.id, backing: current.backing };
    await writeIntent(layout, volumeId, intent);
    crashPoint('layer:intent');
    // The frozen image keeps the volume's backing reference: the snapshot depends on it from now on.
    if (intent.backing !== null) await this.snapshots.addRef(layout, intent.backing, record.id);
    const made = await this.snapshots.create(
      layout,
      { ...record, format: 'qcow2', method: 'layer', backing: intent.backing, pending: true },
      (dir) => linkImage(layout, volumeId, `${dir}/${Layout.imageName('qcow2')}`),
      [volumeId],
    );
    if (!made) throw busy(`snapshot ${record.id} appeared while being created; retry`);
    crashPoint('layer:frozen');
    log.info({ volumeId, snapshotId: record.id }, 'volume image frozen as a snapshot layer');
    const waiting = await this.advance(found, log);
    return waiting === undefined ? 'ready' : this.awaitSwitch(found, waiting, log);
  }

  /**
   * The node serving the volume usually switches within a second: waiting
   * that long here (a stat every 50 ms) answers most snapshots ready in their
   * first call, instead of after the snapshotter's back-off.
   */
  private async awaitSwitch(found: FoundVolume, intent: LayerIntent, log: Logger): Promise<LayerOutcome> {
    for (const end = Date.now() + SWITCH_WAIT_MS; Date.now() < end;) {
      await new Promise((r) => setTimeout(r, 50));
      if ((await phaseOf(found.layout, found.record.id, intent)) === 'switched')
        return (await this.advance(found, log)) === undefined ? 'ready' : 'pending';
    }
    return 'pending';
  }

  /** For calls that change the image: any layering finished first; ABORTED while a node has yet to switch. */
  async settle(found: FoundVolume, log: Logger, action: string): Promise<void> {
    if (found.record.format !== 'qcow2') return;
    const pending = await this.advance(found, log);
    if (pending !== undefined) {
      throw busy(`volume ${found.record.id} cannot ${action} while its snapshot ${pending.snapshotId} waits for the node serving it; retry`);
    }
  }

  /**
   * Continues the volume's pending layering: undoes one that froze nothing or
   * that its node could not switch, makes the overlay, switches it when no
   * process writes the image, writes the records. Returns the intent still
   * waiting for a node, or undefined when none is left.
   */
  async advance(found: FoundVolume, log: Logger): Promise<LayerIntent | undefined> {
    const { layout } = found;
    const volumeId = found.record.id;
    const intent = await readIntent(layout, volumeId);
    if (intent === undefined) return undefined;
    let phase = await phaseOf(layout, volumeId, intent);
    if (phase === 'intent' || (intent.error !== undefined && phase !== 'switched')) {
      await this.undo(found, intent, phase !== 'intent');
      if (intent.error !== undefined) {
        this.report('snapshot_layer', 'failed');
        throw internal(`the node serving volume ${volumeId} could not switch it to a new layer: ${intent.error}`);
      }
      return undefined;
    }
    if (phase === 'frozen') {
      const image = layout.imagePath(volumeId, 'qcow2');
      const size = (await this.qemuImg.info(image, 'qcow2')).virtualSize;
      await createOverlayWhole(this.qemuImg, overlayPath(layout, volumeId, intent.snapshotId), overlayBacking(intent.snapshotId), size);
      phase = 'ready';
      crashPoint('layer:overlay');
    }
    if (phase === 'ready') {
      const record = (await this.volumes.read(layout, volumeId)) ?? found.record;
      const holders = record.publications.map((p) => p.node);
      // A published volume is (or is about to be) served by its node's qemu: only that qemu may switch.
      if (holders.length > 0) {
        log.info({ volumeId, snapshotId: intent.snapshotId, nodes: holders }, 'waiting for the node to switch the volume to its new layer');
        return intent;
      }
      if (await this.qemuImg.inUse(layout.imagePath(volumeId, 'qcow2'), 'qcow2')) {
        log.warn({ volumeId, snapshotId: intent.snapshotId }, 'image is written by a process the controller does not know of; waiting');
        return intent;
      }
      await promoteOverlay(layout, volumeId, intent);
      crashPoint('layer:switched');
    }
    await this.finish(found, intent);
    this.report('snapshot_layer', 'done');
    log.info({ volumeId, snapshotId: intent.snapshotId }, 'volume continues in a new layer; snapshot ready');
    return undefined;
  }

  /** After the switch: the volume is backed by the snapshot, which is ready. Idempotent. */
  private async finish(found: FoundVolume, intent: LayerIntent): Promise<void> {
    const { layout } = found;
    const volumeId = found.record.id;
    const record = (await this.volumes.read(layout, volumeId)) ?? found.record;
    if (record.backing !== intent.snapshotId) {
      await this.volumes.update(layout, { ...record, backing: intent.snapshotId });
      // The volume's old backing now backs the snapshot (ref taken before freezing), not the volume.
      if (intent.backing !== null) await this.snapshots.release(layout, intent.backing, volumeId);
      crashPoint('layer:recorded');
    }
    const snap = await this.snapshots.read(layout, intent.snapshotId);
    if (snap?.pending === true) await this.snapshots.update(layout, { ...snap, pending: false, createdAt: new Date().toISOString() });
    await removeOverlayWork(layout, volumeId, intent.snapshotId);
    await removeIntent(layout, volumeId);
  }

  /** Before the switch: removes the overlay, the frozen name and the refs taken for them. */
  private async undo(found: FoundVolume, intent: LayerIntent, frozen: boolean): Promise<void> {
    const { layout } = found;
    const volumeId = found.record.id;
    if (frozen) await this.snapshots.discard(layout, intent.snapshotId);
    await rm(overlayPath(layout, volumeId, intent.snapshotId), { force: true });
    await removeOverlayWork(layout, volumeId, intent.snapshotId);
    if (intent.backing !== null) await this.snapshots.release(layout, intent.backing, intent.snapshotId);
    await removeIntent(layout, volumeId);
  }
}
