/**
 * Deleted snapshots give their space back. A hidden snapshot layer with a
 * single dependent (the volume above it, or the next snapshot) is merged into
 * that dependent: its clusters are copied in, the dependent reads through the
 * layer's own backing from then on, and the layer is removed. So chains stay
 * as deep as the snapshots kept, whatever order they are deleted in.
 *
 * - Detached: `qemu-img rebase` of the dependent, in safe mode. qemu's image
 *   lock refuses it while any qemu holds the dependent open.
 * - Served by a node: the controller asks that node (merging.json in the
 *   served volume's directory) to stream the layer in with its running qemu
 *   (block-stream), and reads the dependent's header to see it done.
 * Neither changes what the dependent reads, and the header says how far it
 * got: a crash at any point is finished by the next try, with no intent file.
 *
 * Work runs in the background, one merge at a time: DeleteSnapshot answers at
 * once. Candidates come from the snapshot store (a hidden snapshot left with
 * one dependent), a full sweep at start-up and every few minutes, and a short
 * retry loop for merges waiting for a node or a lock.
 */
import type { Logger } from 'pino';
import { crashPoint } from '../domain/crash.js';
import { describe, internal } from '../domain/errors.js';
import { backingReference } from '../storage/image-header.js';
import { Layout } from '../storage/layout.js';
import { readIntent, readMerge, removeMerge, writeMerge } from '../storage/layering.js';
import { readMove } from '../storage/moving.js';
import type { Mounts } from '../storage/mounts.js';
import type { SnapshotStore } from '../storage/snapshot-store.js';
import type { VolumeStore } from '../storage/volume-store.js';
import type { Format } from '../domain/parameters.js';
import type { QemuImg } from '../system/qemu-img.js';
import type { LayerEvents } from '../metrics.js';

export type MergeOutcome = 'merged' | 'waiting' | 'idle';

/** Takes every key or none, throwing when one is busy (domain/locks.ts KeyedLocks). */
export interface Locks {
  acquire(keys: readonly string[]): () => void;
}

/** How often the queue is looked at, and how long a waiting merge rests before its next try. */
const TICK_MS = 1_000;
const RETRY_MS = 5_000;
const SWEEP_MS = 5 * 60_000;

interface Dependent {
  kind: 'volume' | 'snapshot';
  image: string;
  format: Format;
  backing: string | null;
}

export class Merger {
  /** Told of each merge attempt's outcome (metrics). */
  report: LayerEvents = () => undefined;
  private readonly queue = new Map<string, { mount: string; id: string }>();
  /** Merges that wait, each looked at again after RETRY_MS (a few file reads; never a process). */
  private readonly waiting = new Map<string, { mount: string; id: string; at: number }>();
  private wake: (() => void) | undefined;

  constructor(
    private readonly mounts: Mounts,
    private readonly volumes: VolumeStore,
    private readonly snapshots: SnapshotStore,
    private readonly qemuImg: QemuImg,
    private readonly locks: Locks,
    private readonly log: Logger,
  ) {}

  /** Merges waiting for a node, a lock, or the volume to be detached. */
  get waitingCount(): number {
    return this.waiting.size;
  }

  /** Snapshot `id` on the mount at `layout` may have become mergeable. */
  kick(layout: Layout, id: string): void {
    const mount = this.mounts.names().find((n) => this.mounts.layout(n).root === layout.root);
    if (mount === undefined) return;
    this.queue.set(`${mount}/${id}`, { mount, id });
    this.wake?.();
  }

  /** Merges hidden snapshot `id` into its one dependent, or says why not yet. */
  async mergeAt(mount: string, id: string): Promise<MergeOutcome> {
    const layout = await this.mounts.requireUsable(mount);
    const layer = await this.snapshots.read(layout, id);
    if (layer === undefined || !layer.deleted || layer.pending === true) return 'idle';
    const deps = await this.snapshots.dependents(layout, id);
    const into = deps[0];
    if (deps.length !== 1 || into === undefined) return 'idle';
    const log = this.log.child({ snapshotId: id, into, mount });
    const dep = await this.dependent(layout, into);
    // Not (yet) there: a volume being built or arriving by a live move records its ref first. Left alone.
    if (dep === undefined) return 'idle';
    if (dep.backing !== id) {
      // A ref left by a crash after a merge rewrote the dependent: nothing reads this layer through it.
      await this.snapshots.release(layout, id, into);
      return 'merged';
    }
    if (dep.format !== 'qcow2') return 'idle';
    const tops = await this.topsAbove(layout, into, dep.kind);
    let release: () => void;
    try {
      // The dependent is rewritten: nothing may copy it meanwhile (a clone of it holds its lock too).
      release = this.locks.acquire([`snapshot:${id}`, ...(dep.kind === 'snapshot' ? [`snapshot:${into}`] : []), ...tops.map((v) => `volume:${v}`)]);
    } catch {
      return 'waiting';
    }
    try {
      const below = layer.backing === null ? null : await this.snapshots.read(layout, layer.backing);
      if (layer.backing !== null && below === undefined) throw internal(`snapshot ${layer.backing} under ${id} is missing; run filedriver doctor`);
      const target = below === null || below === undefined ? null : { ref: Layout.backingRef(below.id, below.format), format: below.format };
      const header = await backingReference(dep.image);
      if (header === Layout.backingRef(id, layer.format)) {
        if (await this.busyLayering(layout, tops)) return 'waiting';
        // Served by a node: its qemu holds the chain (no rebase spawned just to hear so).
        if (await this.served(layout, tops)) return await this.handToNode(layout, tops, id, into, layer.backing, log);
        if ((await this.qemuImg.rebase(dep.image, target)) === 'in use') return await this.handToNode(layout, tops, id, into, layer.backing, log);
      } else if (header !== target?.ref) {
        throw internal(
          `image ${dep.image} reads through ${header ?? 'nothing'}, neither ${id} nor ${layer.backing ?? 'nothing'}; run filedriver doctor`,
        );
      }
      crashPoint('merge:rebased');
      // The dependent no longer reads the layer: records follow, the layer goes.
      if (layer.backing !== null) await this.snapshots.addRef(layout, layer.backing, into);
      await this.rewriteBacking(layout, dep.kind, into, layer.backing);
      crashPoint('merge:recorded');
      for (const v of tops) if ((await readMerge(layout, v))?.layer === id) await removeMerge(layout, v);
      await this.snapshots.release(layout, id, into);
      log.info({ backing: layer.backing }, 'deleted snapshot merged into its dependent; its space is free');
      if (layer.backing !== null) this.kick(layout, layer.backing);
      return 'merged';
    } finally {
      release();
    }
  }

  private async dependent(layout: Layout, id: string): Promise<Dependent | undefined> {
    const v = await this.volumes.read(layout, id);
    if (v !== undefined) return { kind: 'volume', image: layout.imagePath(id, v.format), format: v.format, backing: v.backing };
    const s = await this.snapshots.read(layout, id);
    if (s !== undefined) return { kind: 'snapshot', image: layout.snapshotImage(id, s.format), format: s.format, backing: s.backing };
    return undefined;
  }

  private async rewriteBacking(layout: Layout, kind: Dependent['kind'], id: string, backing: string | null): Promise<void> {
    if (kind === 'volume') {
      const r = await this.volumes.read(layout, id);
      if (r !== undefined && r.backing !== backing) await this.volumes.update(layout, { ...r, backing });
    } else {
      const r = await this.snapshots.read(layout, id);
      if (r !== undefined && r.backing !== backing) await this.snapshots.update(layout, { ...r, backing });
    }
  }

  /** The volumes whose chains hold `id`: the ones whose qemu would have it open. */
  private async topsAbove(layout: Layout, id: string, kind: Dependent['kind']): Promise<string[]> {
    if (kind === 'volume') return [id];
    const tops = new Set<string>();
    const seen = new Set<string>();
    for (let next = [id]; next.length > 0;) {
      const current = next;
      next = [];
      for (const s of current) {
        if (seen.has(s) || seen.size > 10_000) continue;
        seen.add(s);
        for (const d of await this.snapshots.dependents(layout, s)) {
          if ((await this.volumes.read(layout, d)) !== undefined) tops.add(d);
          else next.push(d);
        }
      }
    }
    return [...tops].sort();
  }

  private async served(layout: Layout, tops: string[]): Promise<boolean> {
    for (const v of tops) if (((await this.volumes.read(layout, v))?.publications.length ?? 0) > 0) return true;
    return false;
  }

  /** A layer switch or a live move under way changes the chain (or copies it): merges wait for it. */
  private async busyLayering(layout: Layout, tops: string[]): Promise<boolean> {
    for (const v of tops) if ((await readIntent(layout, v)) !== undefined || (await readMove(layout, v)) !== undefined) return true;
    return false;
  }

  /**
   * The dependent is open in a qemu: one node serving its only volume can
   * stream online — into a layer under the volume's top, not into the top
   * itself: a writable FUSE export holds the top's resize permission, which a
   * block-stream job into it (like a mirror) must deny. A deleted snapshot
   * right under a served top therefore waits until the volume is detached or
   * snapshotted again (then it lies under that snapshot): at most one layer.
   */
  private async handToNode(layout: Layout, tops: string[], layer: string, into: string, backing: string | null, log: Logger): Promise<MergeOutcome> {
    const top = tops[0];
    if (into === top) {
      log.info(
        { volumeId: top },
        'the layer lies right under the top of a served volume; it merges once the volume is detached or snapshotted again',
      );
      return 'waiting';
    }
    const published = top === undefined ? [] : ((await this.volumes.read(layout, top))?.publications ?? []);
    if (top === undefined || tops.length !== 1 || published.length !== 1 || published[0]?.readonly === true) {
      log.info({ volumes: tops }, 'the dependent is in use by more than one qemu (or one the controller does not know); the merge waits');
      return 'waiting';
    }
    const asked = await readMerge(layout, top);
    if (asked?.error !== undefined) {
      log.warn({ volumeId: top, error: asked.error }, 'the node could not merge online; trying again later');
      await removeMerge(layout, top);
      return 'waiting';
    }
    if (asked?.layer !== layer) {
      await writeMerge(layout, top, { layer, into, backing });
      log.info({ volumeId: top, node: published[0]?.node }, 'asked the node serving the volume to merge the layer online');
    }
    return 'waiting';
  }

  /** Works off the queue until the returned function is called; that resolves once the work in hand is done. */
  start(): () => Promise<void> {
    let stopped = false;
    const loop = async (): Promise<void> => {
      let lastSweep = 0;
      while (!stopped) {
        if (Date.now() - lastSweep > SWEEP_MS) {
          lastSweep = Date.now();
          await this.sweep().catch((e: unknown) => this.log.warn({ err: describe(e) }, 'merge sweep failed'));
        }
        const due = [...this.waiting].filter(([key, w]) => w.at <= Date.now() && !this.queue.has(key));
        for (const [key, item] of [...this.queue, ...due]) {
          // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- set by the stop function while this loop awaits
          if (stopped) return;
          this.queue.delete(key);
          this.waiting.delete(key);
          const outcome = await this.mergeAt(item.mount, item.id).catch((e: unknown) => {
            this.log.warn({ snapshotId: item.id, mount: item.mount, err: describe(e) }, 'merge failed; trying again later');
            this.report('merge', 'failed');
            return 'waiting' as const;
          });
          if (outcome === 'waiting') this.waiting.set(key, { mount: item.mount, id: item.id, at: Date.now() + RETRY_MS });
          if (outcome !== 'idle') this.report('merge', outcome === 'merged' ? 'done' : 'waiting');
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, TICK_MS);
          timer.unref();
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = undefined;
      }
    };
    const running = loop();
    return async () => {
      stopped = true;
      this.wake?.();
      await running;
    };
  }

  /** Every hidden snapshot on the usable mounts becomes a candidate (start-up, and now and then). */
  private async sweep(): Promise<void> {
    for (const h of await this.mounts.usable()) {
      const layout = this.mounts.layout(h.name);
      for (const id of await this.snapshots.ids(layout)) {
        const r = await this.snapshots.read(layout, id).catch(() => undefined);
        if (r?.deleted === true) this.queue.set(`${h.name}/${id}`, { mount: h.name, id });
      }
    }
  }
}
