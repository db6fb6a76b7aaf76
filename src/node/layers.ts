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
import type { Logger } from 'pino';
import type { KeyedLocks } from '../csi/locks.js';
import { crashPoint } from '../domain/crash.js';
import { describe } from '../domain/errors.js';
import { backingReference } from '../storage/image-header.js';
import { Layout } from '../storage/layout.js';
import { chainOf, overlayPath, phaseOf, promoteOverlay, readIntent, readMerge, writeIntent, writeMerge } from '../storage/layering.js';
import { readRecord, readSnapshot } from '../storage/records.js';
import type { Mounts } from '../storage/mounts.js';
import type { ChainLayer, QemuExports } from '../system/qemu-export.js';
import type { StageRecord, StageState } from './state.js';

/** How often staged volumes are looked at: the snapshotter retries about as often. */
export const POLL_MS = 1_000;

const hashed = (id: string): string => createHash('sha256').update(id).digest('hex').slice(0, 24);
/** qemu node names (a letter first, at most 31 characters): the overlay that goes on after snapshot `id`. */
export const layerNode = (snapshotId: string): string => `l${hashed(snapshotId)}`;
/** The node of snapshot `id`'s image when a stage opens the chain. */
export const baseNode = (snapshotId: string): string => `s${hashed(snapshotId)}`;

export class NodeLayering {
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
    const intent = await readIntent(layout, volumeId);
    if (intent === undefined || intent.error !== undefined) return;
    if ((await phaseOf(layout, volumeId, intent)) === 'ready') await promoteOverlay(layout, volumeId, intent);
  }

  /** The layers under the volume's image as the export opens them: nearest first, with our node names. */
  async chain(mount: string, volumeId: string): Promise<(ChainLayer & { id: string })[]> {
    const layout = this.mounts.layout(mount);
    const volume = await readRecord(layout.metaPath(volumeId));
    const chain = await chainOf(layout, volume?.backing ?? null);
    return chain.map((r) => ({ id: r.id, node: baseNode(r.id), image: layout.snapshotImage(r.id, r.format), format: r.format }));
  }

  /**
   * One look at every staged qcow2 volume. The volume's lock is taken only
   * when there is work (so kubelet's calls are not answered ABORTED for a
   * mere look); a volume busy with an RPC waits for the next poll.
   */
  async poll(): Promise<void> {
    for (const rec of await this.state.list()) {
      if (rec.format !== 'qcow2') continue;
      const layout = this.mounts.layout(rec.mount);
      const asked = (await readIntent(layout, rec.volumeId).catch(() => undefined)) ?? (await readMerge(layout, rec.volumeId).catch(() => undefined));
      if (asked === undefined) continue;
      let release: () => void;
      try {
        release = this.locks.acquire([`volume:${rec.volumeId}`]);
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
  }

  private async serve(rec: StageRecord): Promise<void> {
    const layout = this.mounts.layout(rec.mount);
    await this.switchLayer(rec, layout);
    await this.merge(rec, layout);
  }

  private async switchLayer(rec: StageRecord, layout: Layout): Promise<void> {
    const intent = await readIntent(layout, rec.volumeId);
    if (intent === undefined || intent.error !== undefined) return;
    if ((await phaseOf(layout, rec.volumeId, intent)) !== 'ready') return;
    const log = this.log.child({ volumeId: rec.volumeId, snapshotId: intent.snapshotId });
    // A read-only export, or none alive, writes nothing: the rename alone is the switch.
    const writer = rec.export !== undefined && !rec.export.readOnly && (await this.exports.isAlive(rec.export)) ? rec.export : undefined;
    if (writer !== undefined) {
      try {
        // Named before the switch: afterwards the old top is the snapshot's image, and merges address it.
        const top = await this.exports.top(writer);
        if (top !== layerNode(intent.snapshotId)) {
          rec.layers = { ...rec.layers, [intent.snapshotId]: top };
          await this.state.write(rec);
        }
        await this.exports.switchTo(writer, overlayPath(layout, rec.volumeId, intent.snapshotId), layerNode(intent.snapshotId));
        crashPoint('node-layer:switched');
      } catch (e) {
        log.error({ err: describe(e) }, 'could not switch the export to the new layer; the controller will undo the snapshot');
        await writeIntent(layout, rec.volumeId, { ...intent, error: describe(e) });
        return;
      }
    }
    await promoteOverlay(layout, rec.volumeId, intent);
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
    const id = `m${layerNode(request.layer).slice(1)}`;
    const tries = this.attempts.get(key) ?? 0;
    try {
      if ((await this.exports.jobs(rec.export)).includes(id)) return;
      if (tries >= 3) return fail(`block-stream did not finish after ${tries} starts`);
      this.attempts.set(key, tries + 1);
      await this.exports.stream(rec.export, { id, device, baseNode, backingFile: below === undefined ? undefined : Layout.backingRef(below.id, below.format) });
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
        .catch((e: unknown) => this.log.warn({ err: describe(e) }, 'snapshot layer poll failed'))
        .finally(() => {
          if (!stopped) timer = setTimeout(tick, POLL_MS).unref();
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
