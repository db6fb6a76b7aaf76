/**
 * Where the driver's files live on one mount. Everything filedriver writes is
 * under `<mount>/filedriver/`; nothing outside it is touched.
 */
import { join } from 'node:path';
import { isValidId } from '../domain/ids.js';
import { isFormat, type Format } from '../domain/parameters.js';

export const TREE = 'filedriver';

export class Layout {
  readonly root: string;
  readonly volumes: string;
  readonly snapshots: string;
  readonly tmp: string;
  /**
   * Volumes arriving by a live move: the new top layer lives here until the
   * move is done. Not in tmp/, whose leftovers are removed: this holds the
   * only copy of writes made since the switch.
   */
  readonly moving: string;

  constructor(readonly mountPath: string) {
    this.root = join(mountPath, TREE);
    this.volumes = join(this.root, 'volumes');
    this.snapshots = join(this.root, 'snapshots');
    this.tmp = join(this.root, 'tmp');
    this.moving = join(this.root, 'moving');
  }

  volumeDir(id: string): string {
    return join(this.volumes, id);
  }

  static imageName(format: Format): string {
    return `disk.${format}`;
  }

  imagePath(id: string, format: Format): string {
    return join(this.volumeDir(id), Layout.imageName(format));
  }

  metaPath(id: string): string {
    return join(this.volumeDir(id), 'volume.json');
  }

  snapshotDir(id: string): string {
    return join(this.snapshots, id);
  }

  snapshotImage(id: string, format: Format): string {
    return join(this.snapshotDir(id), Layout.imageName(format));
  }

  snapshotMeta(id: string): string {
    return join(this.snapshotDir(id), 'snapshot.json');
  }

  /** Dependents of a snapshot: one empty file per volume or snapshot whose image it backs. */
  refsDir(snapshotId: string): string {
    return join(this.snapshotDir(snapshotId), 'refs');
  }

  /**
   * A snapshot's image as a qcow2 backing reference. Relative, so it holds
   * wherever the mount is mounted; volumes/<id>/ and snapshots/<id>/ are at the
   * same depth, so the same text works from either.
   */
  static backingRef(snapshotId: string, format: Format): string {
    return `../../snapshots/${snapshotId}/${Layout.imageName(format)}`;
  }

  /** The snapshot a backing reference names, or undefined when it is not one backingRef makes. */
  static snapshotOfRef(ref: string): { id: string; format: Format } | undefined {
    const m = /^\.\.\/\.\.\/snapshots\/([^/]+)\/disk\.([a-z0-9]+)$/.exec(ref);
    const [id, format] = [m?.[1], m?.[2]];
    return id !== undefined && isValidId(id) && format !== undefined && isFormat(format) ? { id, format } : undefined;
  }
}
