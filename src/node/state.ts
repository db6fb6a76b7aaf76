/**
 * What a NodeStageVolume created, recorded as it goes, so NodeUnstageVolume
 * can undo all of it even after the node plugin restarted. One directory per
 * volume under the plugin's state directory (kubelet's plugins/<driver>/).
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { AccessMode, FsType } from '../domain/capabilities.js';
import type { Format } from '../domain/parameters.js';
import { writeJsonAtomic } from '../storage/records.js';
import type { ExportHandle } from '../system/qemu-export.js';

export interface StageRecord {
  volumeId: string;
  image: string;
  format: Format;
  mount: string;
  stagingPath: string;
  access: 'mount' | 'block';
  fsType: FsType | undefined;
  readOnly: boolean;
  /** Capability fingerprint: a stage with a different one is a conflict. */
  capability: string;
  /** qemu export of a qcow2 image, once started. */
  export: ExportHandle | undefined;
  /**
   * qemu's node name of each snapshot layer under a qcow2 image, by snapshot
   * id: named at start, and on each online switch the old top becomes the
   * snapshot. Merges (block-stream) need these names.
   */
  layers?: Record<string, string>;
  /** The file the loop device reads: the image (raw) or the export file (qcow2). */
  loopFile: string | undefined;
  device: string | undefined;
  /** Whether the filesystem is mounted at stagingPath. */
  mounted: boolean;
  stagedAt: string;
  /**
   * Where NodePublishVolume put the volume, written before the mount so an
   * unstage never misses one. Absent in records of older versions.
   */
  targets?: PublishedTarget[];
}

export interface PublishedTarget {
  path: string;
  /** Capability fingerprint with the readonly flag: a second publish there must match it. */
  capability: string;
  mode: AccessMode;
}

/** A volume's tag: 16 hex digits, in its export's directory and id and in its qemu nodes' names. */
export const volumeTag = (volumeId: string): string => createHash('sha256').update(volumeId).digest('hex').slice(0, 16);

export class StageState {
  constructor(readonly dir: string) {}

  volumeDir(volumeId: string): string {
    return join(this.dir, 'volumes', volumeId);
  }

  /**
   * Where a qcow2 export keeps its pid file, QMP socket and export file. Short
   * and hashed: a unix socket path may not exceed 107 bytes, and ids reach 128.
   */
  exportDir(volumeId: string): string {
    return join(this.dir, 'x', volumeTag(volumeId));
  }

  /** The node's data plane (one qemu-storage-daemon): its QMP socket and pid file. */
  get planeDir(): string {
    return join(this.dir, 'dp');
  }

  async read(volumeId: string): Promise<StageRecord | undefined> {
    try {
      return JSON.parse(await readFile(join(this.volumeDir(volumeId), 'stage.json'), 'utf8')) as StageRecord;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async write(record: StageRecord): Promise<void> {
    await mkdir(this.volumeDir(record.volumeId), { recursive: true });
    await writeJsonAtomic(join(this.volumeDir(record.volumeId), 'stage.json'), record);
  }

  async remove(volumeId: string): Promise<void> {
    await rm(this.exportDir(volumeId), { recursive: true, force: true });
    await rm(this.volumeDir(volumeId), { recursive: true, force: true });
  }

  async list(): Promise<StageRecord[]> {
    const ids = await readdir(join(this.dir, 'volumes')).catch(() => [] as string[]);
    const records = await Promise.all(ids.map((id) => this.read(id)));
    return records.filter((r): r is StageRecord => r !== undefined);
  }
}
