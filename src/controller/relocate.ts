/**
 * Moving a volume to another mount and/or converting its format, keeping its
 * id: copy (flattening any backing chain), verify, switch, then remove the
 * old copy. Refused while the volume is published: its data must not change
 * under the copy. Used by ControllerModifyVolume and `filedriver move`.
 */
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { busy, internal, invalid, precondition } from '../domain/errors.js';
import { isFormat, type Format } from '../domain/parameters.js';
import type { Ledger } from '../storage/ledger.js';
import { Layout } from '../storage/layout.js';
import type { Mounts } from '../storage/mounts.js';
import type { VolumeRecord } from '../storage/records.js';
import type { SnapshotStore } from '../storage/snapshot-store.js';
import type { FoundVolume, VolumeStore } from '../storage/volume-store.js';
import { uniqueSuffix } from '../storage/records.js';
import type { QemuImg } from '../system/qemu-img.js';
import type { LiveMover } from './live-move.js';
import type { Settler } from './settle.js';
import { readMove } from '../storage/moving.js';
import type { Placer } from './placer.js';

export interface RelocateTarget {
  mount?: string | undefined;
  format?: Format | undefined;
}

/** VolumeAttributesClass parameters ControllerModifyVolume accepts. */
export function parseMutable(params: Record<string, string>, known: (mount: string) => boolean): RelocateTarget {
  const unknown = Object.keys(params).filter((k) => k !== 'mount' && k !== 'format');
  if (unknown.length > 0) throw invalid(`unknown mutable parameter ${unknown.join(', ')}; valid: mount, format`);
  const { mount, format } = params;
  if (mount !== undefined && !known(mount)) throw invalid(`mount ${mount} is not configured`);
  if (format !== undefined && !isFormat(format)) throw invalid(`format ${format} must be qcow2 or raw`);
  return { mount, format };
}

export class Relocator {
  constructor(
    private readonly mounts: Mounts,
    private readonly store: VolumeStore,
    private readonly snapshots: SnapshotStore,
    private readonly ledger: Ledger,
    private readonly placer: Placer,
    private readonly qemuImg: QemuImg,
    private readonly mover: LiveMover,
    private readonly settler: Settler,
  ) {}

  async relocate(arg: FoundVolume, target: RelocateTarget, log: Logger, options: { progress?: boolean } = {}): Promise<FoundVolume> {
    let found = arg.record.format === 'qcow2' ? await this.mover.settleArrival(arg, log) : arg;
    let r = found.record;
    const mount = target.mount ?? found.mount;
    const format = target.format ?? r.format;
    const moving = r.format === 'qcow2' ? await readMove(found.layout, r.id) : undefined;
    if (moving === undefined && mount === found.mount && format === r.format) return found;
    if (moving !== undefined || r.publications.length > 0) return this.live(found, mount, format, log);
    const from = await this.mounts.requireUsable(found.mount);
    const to = await this.mounts.requireUsable(mount);
    found = await this.settler.settle(found, log, 'move');
    r = found.record;
    const release = mount === found.mount ? () => undefined : await this.placer.copyTo(mount, r.id, BigInt(r.sizeBytes));
    const source = from.imagePath(r.id, r.format);
    // parameters stay as created, so a retried CreateVolume still matches; `format` is the truth.
    const record: VolumeRecord = { ...r, format, backing: null };
    try {
      if (mount === found.mount) await this.convertInPlace(from, source, record, r.format, options);
      else await this.copyAcross(from, to, source, record, r.format, options);
      this.ledger.note(mount, record);
    } finally {
      release();
    }
    // The new copy is in place: the old one, and what it depended on, can go.
    if (mount !== found.mount) {
      await this.store.remove(from, r.id);
      this.ledger.forget(found.mount, r.id);
    }
    if (r.backing !== null) await this.snapshots.release(from, r.backing, r.id);
    log.info({ volumeId: r.id, from: `${found.mount}/${r.format}`, to: `${mount}/${format}` }, 'volume relocated');
    return { ...found, mount, layout: to, record };
  }

  /**
   * A volume a node serves: only a qcow2 volume, keeping its format, moves
   * while in use — the node's qemu carries the writes over (live-move.ts).
   * A move under way is finished first, whatever is asked now.
   */
  private async live(found: FoundVolume, mount: string, format: Format, log: Logger): Promise<FoundVolume> {
    const r = found.record;
    const moving = await readMove(found.layout, r.id);
    if (moving === undefined) {
      const nodes = r.publications.map((p) => p.node).join(', ');
      if (r.format !== 'qcow2')
        throw precondition(
          `volume ${r.id} is a raw image published to ${nodes}: no qemu sits in its path to carry writes over, so it moves only while detached`,
        );
      if (format !== r.format)
        throw precondition(`volume ${r.id} is published to ${nodes}; its format changes only while detached (a live move keeps qcow2)`);
      await this.mounts.requireUsable(mount);
      await this.placer.copyTo(mount, r.id, BigInt(r.sizeBytes)).then((release) => release());
    }
    const outcome = await this.mover.move(found, moving?.to ?? mount, log);
    if (outcome === 'pending') throw busy(`volume ${r.id} is moving to mount ${moving?.to ?? mount}; the node serving it has yet to switch; retry`);
    const now = await this.store.find(r.id);
    if (now === undefined) throw internal(`volume ${r.id} vanished during its move`);
    return now;
  }

  /**
   * The copy holds the same data, and the volume is still unpublished: the
   * admin command holds no server lock, so a publish may have come in meanwhile.
   */
  private async verify(source: string, copy: string, record: VolumeRecord, sourceFormat: Format, from: Layout): Promise<void> {
    if (!(await this.qemuImg.same(source, copy, { a: sourceFormat, b: record.format }))) {
      throw internal(`the copy ${copy} differs from ${source}; nothing was switched`);
    }
    const now = await this.store.read(from, record.id);
    if (now !== undefined && now.publications.length > 0) {
      throw precondition(
        `volume ${record.id} was published to ${now.publications.map((p) => p.node).join(', ')} during the copy; nothing was switched`,
      );
    }
  }

  private async copyAcross(from: Layout, to: Layout, source: string, record: VolumeRecord, sourceFormat: Format, options: { progress?: boolean }) {
    const made = await this.store.create(to, record, async (dir) => {
      const copy = join(dir, Layout.imageName(record.format));
      await this.qemuImg.convert(source, sourceFormat, copy, record.format, options);
      await this.verify(source, copy, record, sourceFormat, from);
    });
    if (!made) throw precondition(`volume ${record.id} already exists on mount ${to.mountPath}; run filedriver doctor`);
  }

  /** Same mount, new format: new image beside the old, then one atomic record switch. */
  private async convertInPlace(layout: Layout, source: string, record: VolumeRecord, sourceFormat: Format, options: { progress?: boolean }) {
    const work = join(layout.volumeDir(record.id), `.convert-${uniqueSuffix()}`);
    try {
      await this.qemuImg.convert(source, sourceFormat, work, record.format, options);
      await this.verify(source, work, record, sourceFormat, layout);
      await rename(work, layout.imagePath(record.id, record.format));
    } catch (e) {
      await rm(work, { force: true });
      throw e;
    }
    await this.store.update(layout, record);
    await rm(source, { force: true });
  }
}
