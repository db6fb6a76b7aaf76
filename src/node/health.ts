/**
 * NodeGetVolumeStats and NodeExpandVolume: what a staged volume looks like
 * from the node, and growing it online.
 */
import { stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { notFound, precondition } from '../domain/errors.js';
import type { Usage } from '../system/filesystems.js';
import type { StageRecord, StageState } from './state.js';
import type { NodeSystem } from './system.js';

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
    if ((await stat(volumePath).catch(() => undefined)) === undefined) {
      throw notFound(`volume path ${volumePath} of volume ${volumeId} does not exist`);
    }
    const rec = await this.state.read(volumeId);
    if (rec === undefined) throw notFound(`volume ${volumeId} is not staged on this node`);
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
      return bad(`the qemu export of ${rec.image} (pid ${rec.export.pid}) is not running; unstage and stage the volume again`);
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

  /** Makes the device see the new size, then grows the filesystem online. */
  async expand(volumeId: string, requiredBytes: bigint, log: Logger): Promise<bigint> {
    const rec = await this.state.read(volumeId);
    if (rec === undefined || rec.device === undefined) throw notFound(`volume ${volumeId} is not staged on this node`);
    if (rec.readOnly) throw precondition(`volume ${volumeId} is staged read-only and cannot grow`);
    let size = await this.sys.loops.size(rec.device);
    if (rec.export !== undefined && requiredBytes > size) {
      await this.sys.exports.resize(rec.export, requiredBytes);
    }
    await this.sys.loops.refreshCapacity(rec.device);
    size = await this.sys.loops.size(rec.device);
    if (rec.access === 'mount') await this.sys.fs.grow(rec.fsType ?? 'ext4', rec.device, rec.stagingPath);
    log.info({ volumeId, sizeBytes: size.toString() }, 'volume expanded on node');
    return size;
  }
}
