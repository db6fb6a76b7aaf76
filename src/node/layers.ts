/**
 * The node's half of qcow2 snapshots as layers (storage/layering.ts). While a
 * node's qemu export writes a volume, only that qemu can move the writes to a
 * new layer: the controller prepares the snapshot and the overlay on the share
 * and waits. The node polls the directories of the volumes it serves (NFS has
 * no inotify) for an intent whose overlay is ready, switches its export onto
 * the overlay, and renames the overlay into place. That rename is the answer
 * the controller reads; a failure is written into the intent for it to undo.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { KeyedLocks } from '../domain/locks.js';
import type { LayerEvents } from '../metrics.js';
import { crashPoint } from '../domain/crash.js';
import { busy, describe } from '../domain/errors.js';
import { backingReference } from '../storage/image-header.js';
import { Layout } from '../storage/layout.js';
import { headerChain, overlayPath, phaseOf, promoteOverlay, readIntent, readMerge, writeIntent, writeMerge } from '../storage/layering.js';
import { readRecord, readSnapshot } from '../storage/records.js';
import type { Mounts } from '../storage/mounts.js';
import type { ChainLayer, ExportHandle, QemuExports } from '../system/qemu-export.js';
import { arrivalImage, committed, readMove, writeMove } from '../storage/moving.js';
import { hostname } from 'node:os';
import { volumeTag, type StageRecord, type StageState } from './state.js';

/**
 * The lock key of a volume on the node (its RPCs and this poll). Its own key space: in one process
 * serving both services (--mode all) a controller call on a volume must not hold up the node's work
 * on it, as it cannot when they run apart.
 */
export const nodeVolumeKey = (volumeId: string): string => `node-volume:${volumeId}`;

/** How often staged volumes are looked at for requests: a few reads each. */
export const POLL_MS = 1_000;
/**
 * How often while one is open: the snapshotter asks again 1 s after "not
 * ready", then 2 s later; a switch seen just after its first retry would wait
 * for the second (docs/BENCHMARKS.md measured a 3.3 s snapshot so).
 */
export const BUSY_POLL_MS = 200;

const hashed = (id: string): string => createHash('sha256').update(id).digest('hex').slice(0, 12);
/*
 * qemu node names: a letter, the volume's tag (one data plane serves every volume of the node, and
 * two volumes may read the same snapshot), 12 more hex digits; 30 characters with a file node's 'f'.
 */
/** The overlay that goes on after snapshot `id`. */
export const layerNode = (volumeId: string, snapshotId: string): string => `l${volumeTag(volumeId)}${hashed(snapshotId)}`;
/** The node of snapshot `id`'s image when a stage opens the chain. */
export const baseNode = (volumeId: string, snapshotId: string): string => `s${volumeTag(volumeId)}${hashed(snapshotId)}`;
/** The new top on the target mount of a live move (named by its base: each move has its own). */
export const moveNode = (volumeId: string, base: string): string => `v${volumeTag(volumeId)}${hashed(base)}`;

export class NodeLayering {
  /** Told of each step this node takes for the controller (metrics). */
  report: LayerEvents = () => undefined;

  constructor(
    private readonly mounts: Mounts,
    private readonly state: StageState,
    private readonly exports: QemuExports,
    private readonly locks: KeyedLocks,
    private readonly log: Logger,
  ) {}

  /** Online merges started per volume/layer: a job that keeps failing is reported, not restarted forever. */
  private readonly attempts = new Map<string, number>();

  /**
   * Before a stage opens the image: a switch that no qemu has to make (the
   * volume is not served yet) is the rename alone, so the new export starts on
   * the overlay and never writes into the snapshot.
   */
  async beforeOpen(mount: string, volumeId: string): Promise<void> {
    const layout = this.mounts.layout(mount);
    const moving = await readMove(layout, volumeId);
    // Once its node switched, the newest writes are on the target: the source must not be opened.
    if (moving !== undefined) throw busy(`volume ${volumeId} is moving to mount ${moving.to}; it can be staged once the move is done (retry)`);
    const intent = await readIntent(layout, volumeId);
    if (intent === undefined || intent.error !== undefined) return;
    if ((await phaseOf(layout, volumeId, intent)) === 'ready') await promoteOverlay(layout, volumeId, intent);
  }

  /**
   * The layers under the volume's image as the export opens them: nearest
   * first, with our node names (merges address them by name). Read from the
   * image headers, not volume.json: after a switch or a merge the controller
   * has yet to record, only the headers say what is under the image.
   */
  async chain(mount: string, volumeId: string): Promise<(ChainLayer & { id: string })[]> {
    const layout = this.mounts.layout(mount);
    const chain = await headerChain(layout, layout.imagePath(volumeId, 'qcow2'));
    return chain.map((r) => ({ id: r.id, node: baseNode(volumeId, r.id), image: layout.snapshotImage(r.id, r.format), format: r.format }));
  }

  /**
   * One look at every staged qcow2 volume. The volume's lock is taken only
   * when there is work (so kubelet's calls are not answered ABORTED for a
   * mere look); a volume busy with an RPC waits for the next poll.
   */
  async poll(): Promise<boolean> {
    let asking = false;
    for (const rec of await this.state.list()) {
      if (rec.format !== 'qcow2') continue;
      const layout = this.mounts.layout(rec.mount);
      const asked =
        (await readIntent(layout, rec.volumeId).catch(() => undefined)) ??
        (await readMerge(layout, rec.volumeId).catch(() => undefined)) ??
        (await readMove(layout, rec.volumeId).catch(() => undefined));
      // Gone from its mount: a live move finished, and the record must follow it.
      const moved = asked === undefined && (await stat(rec.image).catch(() => undefined)) === undefined;
      if (asked === undefined && !moved) continue;
      asking = true;
      let release: () => void;
      try {
        release = this.locks.acquire([nodeVolumeKey(rec.volumeId)]);
      } catch {
        continue;
      }
      try {
        // Read again under the lock: an unstage may have finished meanwhile.
        const current = await this.state.read(rec.volumeId);
        if (current !== undefined) await this.serve(current);
      } catch (e) {
        this.log.warn({ volumeId: rec.volumeId, err: describe(e) }, 'could not look at the volume for a snapshot layer');
      } finally {
        release();
      }
    }
    return asking;
  }

  private async serve(found: StageRecord): Promise<void> {
    const rec = await this.follow(found);
    const layout = this.mounts.layout(rec.mount);
    await this.switchLayer(rec, layout);
    await this.merge(rec, layout);
    await this.move(rec, layout);
  }

  /**
   * A stage whose image is gone from its mount while its export still serves
   * it: a live move arrived elsewhere (the node's part ended before the
   * controller's). The record follows the volume to the mount that now has it.
   */
  private async follow(rec: StageRecord): Promise<StageRecord> {
    if ((await stat(rec.image).catch(() => undefined)) !== undefined) return rec;
    for (const mount of this.mounts.names()) {
      const layout = this.mounts.layout(mount);
      const image = layout.imagePath(rec.volumeId, 'qcow2');
      if (mount === rec.mount || (await readRecord(layout.metaPath(rec.volumeId)).catch(() => undefined)) === undefined) continue;
      if ((await stat(image).catch(() => undefined)) === undefined) continue;
      const moved: StageRecord = { ...rec, mount, image };
      await this.state.write(moved);
      this.log.info({ volumeId: rec.volumeId, from: rec.mount, to: mount }, 'the volume moved while staged here; its stage record follows');
      return moved;
    }
    return rec;
  }

  /** The writable export of a staged volume, if it runs. */
  private async writer(rec: StageRecord): Promise<ExportHandle | undefined> {
    return rec.export !== undefined && !rec.export.readOnly && (await this.exports.isAlive(rec.export)) ? rec.export : undefined;
  }

  /**
   * This node's two steps of a live move (storage/moving.ts): move the
   * writes onto the new top on the target mount, and later point that top at
   * the base the controller copied there, closing the source chain.
   */
  private async move(rec: StageRecord, layout: Layout): Promise<void> {
    const intent = await readMove(layout, rec.volumeId);
    if (intent === undefined || intent.error !== undefined) return;
    const log = this.log.child({ volumeId: rec.volumeId, to: intent.to });
    const writer = await this.writer(rec);
    if (writer === undefined) return; // nothing writes it here: the controller moves it alone
    if (!this.mounts.has(intent.to) || !(await this.mounts.health(intent.to)).usable) {
      if (!committed(intent)) await writeMove(layout, rec.volumeId, { ...intent, error: `node ${hostname()} has no usable mount ${intent.to}` });
      return;
    }
    const to = this.mounts.layout(intent.to);
    const top = moveNode(rec.volumeId, intent.base);
    if (intent.switched !== true) {
      // The controller writes the intent, then makes the new top: only once it exists is there anything to switch to.
      if ((await stat(arrivalImage(to, rec.volumeId)).catch(() => undefined)) === undefined) return;
      // Recorded before acting: from here on the target may hold writes the source lacks.
      await writeMove(layout, rec.volumeId, { ...intent, switching: true });
      try {
        await this.exports.switchTo(writer, arrivalImage(to, rec.volumeId), top);
      } catch (e) {
        // Undone only when qemu says it still writes the source; unsure (no answer), the next poll tries again.
        if ((await this.exports.top(writer)) === top) throw e;
        log.error({ err: describe(e) }, 'could not move the writes to the target; the move is undone');
        const { switching: _not, ...before } = intent;
        await writeMove(layout, rec.volumeId, { ...before, error: describe(e) });
        return;
      }
      crashPoint('node-move:switched');
      await writeMove(layout, rec.volumeId, { ...intent, switching: true, switched: true });
      log.info("the volume's writes land on the target mount now");
      return;
    }
    if (intent.based === true && intent.repointed !== true) {
      await this.exports.repoint(writer, top, {
        node: baseNode(rec.volumeId, intent.base),
        image: to.snapshotImage(intent.base, 'qcow2'),
        format: 'qcow2',
      });
      // The record keeps its mount until the volume has arrived (follow() moves it then): the intent stays where a restart looks.
      await this.state.write({ ...rec, layers: { [intent.base]: baseNode(rec.volumeId, intent.base) } });
      crashPoint('node-move:repointed');
      await writeMove(layout, rec.volumeId, { ...intent, repointed: true });
      this.report('node_move', 'done');
      log.info('the export reads the copy on the target mount; the source can go');
    }
  }

  private async switchLayer(rec: StageRecord, layout: Layout): Promise<void> {
    const intent = await readIntent(layout, rec.volumeId);
    if (intent === undefined || intent.error !== undefined) return;
    if ((await phaseOf(layout, rec.volumeId, intent)) !== 'ready') return;
    const log = this.log.child({ volumeId: rec.volumeId, snapshotId: intent.snapshotId });
    // A read-only export, or none alive, writes nothing: the rename alone is the switch.
    const writer = await this.writer(rec);
    if (writer !== undefined) {
      try {
        // Named before the switch: afterwards the old top is the snapshot's image, and merges address it.
        const top = await this.exports.top(writer);
        if (top !== layerNode(rec.volumeId, intent.snapshotId)) {
          rec.layers = { ...rec.layers, [intent.snapshotId]: top };
          await this.state.write(rec);
        }
        await this.exports.switchTo(writer, overlayPath(layout, rec.volumeId, intent.snapshotId), layerNode(rec.volumeId, intent.snapshotId));
        crashPoint('node-layer:switched');
      } catch (e) {
        log.error({ err: describe(e) }, 'could not switch the export to the new layer; the controller will undo the snapshot');
        await writeIntent(layout, rec.volumeId, { ...intent, error: describe(e) });
        this.report('node_switch', 'failed');
        return;
      }
    }
    await promoteOverlay(layout, rec.volumeId, intent);
    this.report('node_switch', 'done');
    log.info({ online: writer !== undefined }, 'volume switched to a new layer; its old image is the snapshot now');
  }

  /**
   * A merge the controller could not do because this node's qemu holds the
   * chain: stream the layer into its dependent with that qemu. The
   * dependent's header changing is the answer; three failed starts are
   * reported in the request.
   */
  private async merge(rec: StageRecord, layout: Layout): Promise<void> {
    const request = await readMerge(layout, rec.volumeId);
    if (request === undefined || request.error !== undefined || rec.export === undefined) return;
    const key = `${rec.volumeId}/${request.layer}`;
    const fail = async (error: string): Promise<void> => {
      this.log.error({ volumeId: rec.volumeId, layer: request.layer, error }, 'could not merge the layer online');
      this.attempts.delete(key);
      await writeMerge(layout, rec.volumeId, { ...request, error });
    };
    const into = request.into === rec.volumeId ? rec.image : layout.snapshotImage(request.into, 'qcow2');
    const layerFormat = (await readSnapshot(layout.snapshotMeta(request.layer)))?.format ?? 'qcow2';
    if ((await backingReference(into)) !== Layout.backingRef(request.layer, layerFormat)) return; // merged: the controller finishes
    if (rec.export.readOnly || !(await this.exports.isAlive(rec.export))) return fail('the volume is not served writable on this node');
    const device = request.into === rec.volumeId ? await this.exports.top(rec.export) : rec.layers?.[request.into];
    const baseNode = request.backing === null ? undefined : rec.layers?.[request.backing];
    if (device === undefined || (request.backing !== null && baseNode === undefined)) {
      return fail(`this node's export has no node for ${device === undefined ? request.into : (request.backing ?? '')}`);
    }
    const below = request.backing === null ? undefined : await readSnapshot(layout.snapshotMeta(request.backing));
    const id = `m${layerNode(rec.volumeId, request.layer).slice(1)}`;
    const tries = this.attempts.get(key) ?? 0;
    try {
      if ((await this.exports.jobs(rec.export)).includes(id)) return;
      // eslint-disable-next-line @typescript-eslint/return-await -- fail() is what the catch below does; if recording the failure fails, that goes to the poll's log, not round again
      if (tries >= 3) return fail(`block-stream did not finish after ${tries} starts`);
      this.attempts.set(key, tries + 1);
      await this.exports.stream(rec.export, {
        id,
        device,
        baseNode,
        backingFile: below === undefined ? undefined : Layout.backingRef(below.id, below.format),
      });
      this.report('node_merge', 'done');
      this.log.info({ volumeId: rec.volumeId, layer: request.layer, into: request.into }, 'merging a deleted snapshot layer online');
    } catch (e) {
      await fail(describe(e));
    }
  }

  /** Polls until the returned function is called; that resolves once a poll in flight is over. */
  start(): () => Promise<void> {
    let stopped = false;
    let running: Promise<void> = Promise.resolve();
    let timer: NodeJS.Timeout | undefined;
    const tick = (): void => {
      running = this.poll()
        .catch((e: unknown) => {
          this.log.warn({ err: describe(e) }, 'snapshot layer poll failed');
          return false;
        })
        .then((asking) => {
          // While a request is open, look again soon: the controller's answer waits on this node.
          if (!stopped) timer = setTimeout(tick, asking ? BUSY_POLL_MS : POLL_MS).unref();
        });
    };
    timer = setTimeout(tick, POLL_MS).unref();
    return async () => {
      stopped = true;
      clearTimeout(timer);
      await running;
    };
  }
}
