/**
 * Files (reflink copies) without `cp`: a mount with reflinks is modelled by a
 * plain copy (the same bytes at once; that the extents are shared does not
 * show to the driver), a mount without them (NFS without CLONE, ext4) by
 * answering false and leaving no target, as the real adapter does.
 */
import { copyFile, rm } from 'node:fs/promises';
import type { Files } from '../../src/system/files.js';
import { Recorder } from './recorder.js';

export type FilesOp = 'reflink';

export class FakeFiles extends Recorder<FilesOp> implements Files {
  /** `reflinks`: whether the (pretend) filesystem can clone extents. */
  constructor(public reflinks = true) {
    super();
  }

  async reflink(source: string, target: string): Promise<boolean> {
    this.act('reflink', source, target);
    if (this.reflinks) {
      try {
        await copyFile(source, target);
        return true;
      } catch {
        // cp failing (no source, no target directory) is "no reflink" to the real adapter too.
      }
    }
    await rm(target, { force: true });
    return false;
  }
}
