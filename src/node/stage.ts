/**
 * NodeStageVolume / NodeUnstageVolume: attach the image (raw → loop device;
 * qcow2 → qemu-storage-daemon FUSE export → loop device), then for filesystem
 * volumes create the filesystem only on a blank device and mount it at the
 * staging path. Each step is recorded before the next, so unstage can undo a
 * half-done stage after a crash.
 */
import type { Logger } from 'pino';
import { isFsType, isReadOnlyMode, unsupportedReason, type Capability } from '../domain/capabilities.js';
import { alreadyExists, busy, imageLocked, invalid, isDriverError, notFound, precondition } from '../domain/errors.js';
import { checkReadOnlyFlags } from '../domain/mount-flags.js';
import type { VolumeStore } from '../storage/volume-store.js';
import { stageMountFlags } from '../system/filesystems.js';
import type { NodeLayering } from './layers.js';
import type { NodeSystem } from './system.js';
import type { SafePaths } from './safe-path.js';
import { volumeTag, type StageRecord, type StageState } from './state.js';

export interface StageInput {
  volumeId: string;
  stagingPath: string;
  capability: Capability;
  /** From ControllerPublishVolume (PUBLISH_READONLY). */
  readonly: boolean;
  /** Where the staging directory may be made: below the kubelet directory, through no link. */
  paths: SafePaths;
}

export function fingerprint(cap: Capability, readonly: boolean): string {
  return cap.access === 'block'
    ? `block:${cap.mode}:${String(readonly)}`
    : `mount:${cap.mode}:${cap.fsType}:${cap.mountFlags.join(',')}:${String(readonly)}`;
}

export class Stager {
  constructor(
    private readonly store: VolumeStore,
    private readonly state: StageState,
    private readonly sys: NodeSystem,
    private readonly layers: NodeLayering,
  ) {}

  async stage(input: StageInput, log: Logger): Promise<void> {
    const print = fingerprint(input.capability, input.readonly);
    if (input.capability.access === 'mount') {
      checkReadOnlyFlags(
        input.capability.mountFlags,
        input.readonly || isReadOnlyMode(input.capability.mode),
        `the stage of volume ${input.volumeId}`,
      );
    }
    const existing = await this.state.read(input.volumeId);
    if (existing !== undefined) {
      if (existing.stagingPath !== input.stagingPath || existing.capability !== print) {
        throw alreadyExists(`volume ${input.volumeId} is already staged at ${existing.stagingPath} with another capability`);
      }
      if (await this.isComplete(existing)) return;
      // A stage interrupted half-way: undo what it did and start again.
      await this.unstageRecord(existing);
    }
    const found = await this.store.find(input.volumeId);
    if (found === undefined) throw notFound(`volume ${input.volumeId} does not exist on any mount of this node`);
    const { record: volume, layout, mount } = found;
    const cap = input.capability;
    // The controller refuses these at publish; a node never relies on that alone.
    const unsupported = unsupportedReason(cap, volume.format);
    if (unsupported !== undefined) throw invalid(`volume ${volume.id}: ${unsupported}`);
    const readOnly = input.readonly || isReadOnlyMode(cap.mode);
    const rec: StageRecord = {
      volumeId: input.volumeId,
      image: layout.imagePath(volume.id, volume.format),
      format: volume.format,
      mount,
      stagingPath: input.stagingPath,
      access: cap.access,
      fsType: cap.access === 'mount' && isFsType(cap.fsType) ? cap.fsType : undefined,
      readOnly,
      capability: print,
      export: undefined,
      loopFile: undefined,
      device: undefined,
      mounted: false,
      stagedAt: new Date().toISOString(),
      targets: [],
    };
    await this.state.write(rec);
    try {
      await this.attach(rec);
      if (cap.access === 'mount') await this.mountFilesystem(rec, cap.mountFlags, input.paths, log);
    } catch (e) {
      await this.unstageRecord(rec).catch((cleanup: unknown) => log.error({ err: cleanup }, 'cleanup after failed stage failed'));
      throw withHolders(
        e,
        volume.publications.map((p) => p.node),
      );
    }
    log.info({ volumeId: rec.volumeId, device: rec.device, format: rec.format, access: rec.access }, 'volume staged');
  }

  private async attach(rec: StageRecord): Promise<void> {
    if (rec.format === 'qcow2') {
      await this.layers.beforeOpen(rec.mount, rec.volumeId);
      const chain = await this.layers.chain(rec.mount, rec.volumeId);
      rec.layers = Object.fromEntries(chain.map((l) => [l.id, l.node]));
      rec.export = await this.sys.exports.start(rec.image, {
        format: 'qcow2',
        readOnly: rec.readOnly,
        stateDir: this.state.exportDir(rec.volumeId),
        tag: volumeTag(rec.volumeId),
        chain,
      });
      rec.loopFile = rec.export.exportFile;
    } else {
      rec.loopFile = rec.image;
    }
    await this.state.write(rec);
    // Over an export, direct I/O only where it does asynchronous direct I/O (qemu ≥ 11); a raw image always.
    const directIo = rec.export === undefined || rec.export.loopDirectIo === true;
    const loop = await this.sys.loops
      .attach(rec.loopFile, { readOnly: rec.readOnly, directIo, overExport: rec.export !== undefined })
      .catch((e: unknown) => {
        // Refused: the file already has a device that is not ours to take (or to detach in the cleanup).
        if (isDriverError(e) && e.kind === 'precondition') rec.loopFile = undefined;
        throw e;
      });
    rec.device = loop.device;
    await this.state.write(rec);
  }

  private async mountFilesystem(rec: StageRecord, flags: string[], paths: SafePaths, log: Logger): Promise<void> {
    const device = rec.device ?? '';
    const fsType = rec.fsType ?? 'ext4';
    // A read-only stage never formats; otherwise one probe decides, and only a blank device is formatted.
    const found = rec.readOnly ? await this.sys.fs.probe(device) : await this.sys.fs.formatIfBlank(device, fsType);
    if (found.kind === 'blank') {
      if (rec.readOnly) throw precondition(`volume ${rec.volumeId} has no filesystem yet and is staged read-only; it cannot be formatted`);
      log.info({ volumeId: rec.volumeId, device, fsType }, 'created a filesystem on a blank device');
    } else if (found.kind === 'other') {
      throw precondition(`volume ${rec.volumeId} carries ${found.description}; refusing to format over it`);
    } else if (found.fsType !== fsType) {
      throw precondition(`volume ${rec.volumeId} holds a ${found.fsType} filesystem but ${fsType} was asked for; refusing to format over it`);
    }
    await paths.makeDirs(rec.stagingPath, 'staging_target_path');
    const needed = stageMountFlags(fsType, rec.readOnly).filter((f) => !flags.includes(f));
    await this.sys.fs.mount(device, rec.stagingPath, { fsType, flags: [...flags, ...needed], readOnly: rec.readOnly });
    rec.mounted = true;
    await this.state.write(rec);
  }

  private async isComplete(rec: StageRecord): Promise<boolean> {
    return (await this.missing(rec)) === undefined;
  }

  /**
   * What of a recorded stage is no longer there, if anything. A record
   * outlives a reboot or an external detach, and a loop device number may
   * since serve another volume: only what still reads our file counts.
   */
  private async missing(rec: StageRecord): Promise<string | undefined> {
    const { device, loopFile } = rec;
    if (device === undefined || loopFile === undefined) return 'its stage did not finish';
    if (rec.format === 'qcow2' && (rec.export === undefined || !(await this.sys.exports.isAlive(rec.export)))) {
      return `the qemu export of ${rec.image} is not running`;
    }
    if (!(await this.sys.loops.findByFile(loopFile)).some((l) => l.device === device)) {
      return `loop device ${device} no longer reads ${loopFile}`;
    }
    if (rec.access === 'block') return undefined;
    const source = rec.mounted ? (await this.sys.fs.mountEntry(rec.stagingPath))?.source : undefined;
    return source === device ? undefined : `${rec.stagingPath} is not a mount of ${device}`;
  }

  /**
   * The record of a volume staged at `stagingPath`, which NodePublishVolume
   * needs: NOT_FOUND when the volume does not exist, FAILED_PRECONDITION when
   * it exists but is not (completely) staged there.
   */
  async requireStaged(volumeId: string, stagingPath: string): Promise<StageRecord> {
    const rec = await this.state.read(volumeId);
    if (rec !== undefined && rec.stagingPath === stagingPath) {
      const missing = await this.missing(rec);
      if (missing === undefined) return rec;
      throw precondition(`volume ${volumeId} is not staged at ${stagingPath} any more (${missing}); NodeStageVolume must come first`);
    }
    if (rec === undefined && (await this.store.find(volumeId)) === undefined) {
      throw notFound(`volume ${volumeId} does not exist on any mount of this node`);
    }
    throw precondition(`volume ${volumeId} is not staged at ${stagingPath}; NodeStageVolume must come first`);
  }

  /**
   * Idempotent; works from the record alone (restart), and when the image is
   * already gone. A volume not staged at `stagingPath` is left alone (CSI: OK);
   * one still published is refused, since its targets would lose their device.
   */
  async unstage(volumeId: string, stagingPath: string, log: Logger): Promise<void> {
    const rec = await this.state.read(volumeId);
    if (rec === undefined) {
      // Nothing recorded, so nothing there is ours: a stage records itself before it mounts anything,
      // and whatever else is mounted at the path (another volume, a foreign filesystem) is left alone.
      log.info({ volumeId, stagingPath }, 'volume is not staged on this node; nothing to do');
      return;
    }
    if (rec.stagingPath !== stagingPath) {
      log.info({ volumeId, stagedAt: rec.stagingPath }, 'volume is not staged at this path; nothing to do');
      return;
    }
    const published: string[] = [];
    for (const t of rec.targets ?? []) if (await this.sys.fs.isMountPoint(t.path)) published.push(t.path);
    if (published.length > 0) {
      throw precondition(`volume ${volumeId} is still published at ${published.join(', ')}; NodeUnpublishVolume must come first`);
    }
    await this.unstageRecord(rec);
    log.info({ volumeId }, 'volume unstaged');
  }

  private async unstageRecord(rec: StageRecord): Promise<void> {
    await this.sys.fs.unmount(rec.stagingPath);
    // Only devices that still read our file: a recorded device number may
    // since have been reused for another volume.
    if (rec.loopFile !== undefined) {
      const file = rec.loopFile;
      for (const loop of await this.sys.loops.findByFile(file)) await this.sys.loops.detach(loop.device);
      // A detach is deferred while something (udev's probe) still has the device open;
      // give it up to 2 s to go before the export under it is stopped. The look is a sysfs
      // read, so a short poll costs nothing and unstage does not wait 50 ms for a device gone in 1.
      for (let i = 0; i < 400 && (await this.sys.loops.findByFile(file)).length > 0; i++) await sleep(5);
      // Still open (a pod, a stray process): keep the record and the export so kubelet's retry finishes the job.
      const still = (await this.sys.loops.findByFile(file)).map((l) => l.device);
      if (still.length > 0) throw busy(`loop device ${still.join(', ')} of volume ${rec.volumeId} is still open; retry`);
    }
    // A crash between the export's start and the record's write leaves it unrecorded, in its deterministic dir.
    if (rec.export !== undefined) await this.sys.exports.stop(rec.export);
    else if (rec.format === 'qcow2') await this.sys.exports.stopIn(this.state.exportDir(rec.volumeId), volumeTag(rec.volumeId));
    await this.state.remove(rec.volumeId);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A qemu lock conflict names the nodes the controller has published the volume to: the likely holders. */
function withHolders(e: unknown, nodes: readonly string[]): unknown {
  if (!isDriverError(e) || e.reason !== 'imageLocked') return e;
  const who =
    nodes.length === 0
      ? 'the controller records no node for it (another process on a node holds it)'
      : `it is published to node(s) ${nodes.join(', ')}`;
  return imageLocked(`${e.message}; ${who}`);
}
