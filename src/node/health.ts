/**
 * NodeGetVolumeStats and NodeExpandVolume: what a staged volume looks like
 * from the node, and growing it online.
 */
import { stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { notFound, outOfRange, precondition } from '../domain/errors.js';
import { MiB, roundUp, type CapacityRange } from '../domain/sizes.js';
import type { Usage } from '../system/filesystems.js';
import type { StageRecord, StageState } from './state.js';
import type { NodeSystem } from './system.js';
import { showsVolume } from './where.js';

export interface VolumeStats {
  usage: Usage | { totalBytes: bigint };
  condition: { abnormal: boolean; message: string };
}

export class NodeHealth {
  constructor(
    private readonly state: StageState,
    private readonly sys: NodeSystem,
  ) {}

  async stats(volumeId: string, volumePath: string): Promise<VolumeStats> {
    const rec = await this.at(volumeId, volumePath);
    const condition = await this.condition(rec);
    if (rec.access === 'block') {
      const totalBytes = rec.device === undefined ? 0n : await this.sys.loops.size(rec.device).catch(() => 0n);
      return { usage: { totalBytes }, condition };
    }
    return { usage: await this.sys.fs.usage(volumePath), condition };
  }

  /** Abnormal when the image vanished, the loop lost its file, the export died or the staging mount is gone. */
  async condition(rec: StageRecord): Promise<{ abnormal: boolean; message: string }> {
    const bad = (message: string) => ({ abnormal: true, message });
    if ((await stat(rec.image).catch(() => undefined)) === undefined) return bad(`image ${rec.image} is gone`);
    if (rec.export !== undefined && !(await this.sys.exports.isAlive(rec.export))) {
      return bad(`the qemu export of ${rec.image} is not running (the node's data plane stopped or lost it); unstage and stage the volume again`);
    }
    const loops = rec.loopFile === undefined ? [] : await this.sys.loops.findByFile(rec.loopFile);
    const loop = loops.find((l) => l.device === rec.device);
    if (loop === undefined) return bad(`loop device ${rec.device ?? '(none)'} no longer reads ${rec.loopFile ?? rec.image}`);
    if (loop.backingDeleted) return bad(`the file behind ${loop.device} was deleted`);
    if (rec.access === 'mount' && !(await this.sys.fs.isMountPoint(rec.stagingPath))) {
      return bad(`staging mount ${rec.stagingPath} is gone`);
    }
    return { abnormal: false, message: 'volume is healthy' };
  }

  /**
   * The stage record of a volume that `volumePath` shows; NOT_FOUND when the
   * path does not exist or holds something else (CSI: "does not exist on
   * specified volume_path").
   */
  private async at(volumeId: string, volumePath: string): Promise<StageRecord> {
    if ((await stat(volumePath).catch(() => undefined)) === undefined) {
      throw notFound(`volume path ${volumePath} of volume ${volumeId} does not exist`);
    }
    const rec = await this.state.read(volumeId);
    if (rec === undefined) throw notFound(`volume ${volumeId} is not staged on this node`);
    if (!(await showsVolume(rec, volumePath))) throw notFound(`volume ${volumeId} is not staged or published at ${volumePath}`);
    return rec;
  }

  /**
   * Makes the device see the new size, then grows the filesystem online. A
   * raw image is grown by the controller; a qcow2 image that a qemu export
   * holds open is grown here, to the whole MiB the controller recorded.
   */
  async expand(volumeId: string, volumePath: string, range: CapacityRange, log: Logger): Promise<bigint> {
    const rec = await this.at(volumeId, volumePath);
    if (rec.device === undefined) throw notFound(`volume ${volumeId} is not staged on this node`);
    if (rec.readOnly) throw precondition(`volume ${volumeId} is staged read-only and cannot grow`);
    const wanted = roundUp(range.requiredBytes, MiB);
    await this.sys.loops.refreshCapacity(rec.device);
    let size = await this.sys.loops.size(rec.device);
    if (range.limitBytes > 0n && (size > range.limitBytes || wanted > range.limitBytes)) {
      throw outOfRange(
        `volume ${volumeId} is ${size} bytes and would be ${wanted > size ? wanted : size}, above limit_bytes ${range.limitBytes}; volumes never shrink`,
      );
    }
    if (rec.export !== undefined && wanted > size) {
      await this.sys.exports.resize(rec.export, wanted);
      await this.sys.loops.refreshCapacity(rec.device);
      size = await this.sys.loops.size(rec.device);
    }
    if (size < range.requiredBytes) {
      throw precondition(
        `volume ${volumeId} is ${size} bytes on this node, less than the ${range.requiredBytes} asked for; ControllerExpandVolume must grow its image first`,
      );
    }
    if (rec.access === 'mount') await this.sys.fs.grow(rec.fsType ?? 'ext4', rec.device, rec.stagingPath);
    log.info({ volumeId, sizeBytes: size.toString() }, 'volume expanded on node');
    return size;
  }
}
