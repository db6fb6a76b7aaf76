/** How a new volume's image is made: blank, an overlay on a base, or a copy of one. */
import type { Logger } from 'pino';
import type { VolumeParameters } from '../domain/parameters.js';
import { Layout } from '../storage/layout.js';
import type { Files } from '../system/files.js';
import type { QemuImg } from '../system/qemu-img.js';
import type { Base } from './sources.js';

export class ImageBuilder {
  constructor(
    private readonly qemuImg: QemuImg,
    private readonly files: Files,
    private readonly log: Logger,
  ) {}

  async build(target: string, params: VolumeParameters, sizeBytes: bigint, base: Base | undefined, layout: Layout): Promise<void> {
    if (base === undefined) {
      await this.qemuImg.create(target, params.format, sizeBytes, {
        preallocation: params.preallocation,
        ...(params.clusterSize === undefined ? {} : { clusterSize: params.clusterSize }),
      });
      return;
    }
    if (params.cloneMode === 'linked') {
      // O(1): unwritten clusters read from the immutable base, by a relative path.
      await this.qemuImg.createOverlay(target, Layout.backingRef(base.snapshotId, base.format), base.format, sizeBytes);
      return;
    }
    const sameMount = base.layout.root === layout.root;
    // A reflink keeps the base's own backing reference: only a flat base may be reflinked.
    const reflinked = sameMount && base.backing === null && base.format === params.format && (await this.files.reflink(base.image, target));
    if (!reflinked) {
      this.log.debug({ from: base.image, to: target }, 'full clone by copy');
      await this.qemuImg.convert(base.image, base.format, target, params.format);
    }
    if (sizeBytes > base.sizeBytes) await this.qemuImg.resize(target, params.format, sizeBytes, params.preallocation);
  }
}
