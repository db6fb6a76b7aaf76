/**
 * NodePublishVolume / NodeUnpublishVolume: a bind mount of the staged
 * filesystem onto the pod's target directory, or of the staged device node
 * onto a file at the target path for block volumes.
 */
import { mkdir, open, rm, rmdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { isReadOnlyMode, type Capability } from '../domain/capabilities.js';
import { precondition } from '../domain/errors.js';
import type { StageState } from './state.js';
import type { NodeSystem } from './system.js';

export interface PublishInput {
  volumeId: string;
  stagingPath: string;
  targetPath: string;
  capability: Capability;
  readonly: boolean;
}

export class Publisher {
  constructor(
    private readonly state: StageState,
    private readonly sys: NodeSystem,
  ) {}

  async publish(input: PublishInput, log: Logger): Promise<void> {
    const rec = await this.state.read(input.volumeId);
    if (rec === undefined || rec.stagingPath !== input.stagingPath || rec.device === undefined) {
      throw precondition(`volume ${input.volumeId} is not staged at ${input.stagingPath}; NodeStageVolume must come first`);
    }
    if (rec.access !== input.capability.access) {
      throw precondition(`volume ${input.volumeId} was staged as ${rec.access} and cannot be published as ${input.capability.access}`);
    }
    if (await this.sys.fs.isMountPoint(input.targetPath)) return; // already published
    const readOnly = input.readonly || rec.readOnly || isReadOnlyMode(input.capability.mode);
    if (input.capability.access === 'block') {
      await mkdir(dirname(input.targetPath), { recursive: true });
      await (await open(input.targetPath, 'a', 0o660)).close();
      await this.sys.fs.mount(rec.device, input.targetPath, { bind: true, readOnly, flags: [] });
    } else {
      await mkdir(input.targetPath, { recursive: true, mode: 0o750 });
      await this.sys.fs.mount(input.stagingPath, input.targetPath, { bind: true, readOnly, flags: input.capability.mountFlags });
    }
    log.info({ volumeId: input.volumeId, target: input.targetPath, readOnly }, 'volume published');
  }

  /** Idempotent: unmounts and removes the target (an empty directory or the device file), never its contents. */
  async unpublish(volumeId: string, targetPath: string, log: Logger): Promise<void> {
    await this.sys.fs.unmount(targetPath);
    const st = await stat(targetPath).catch(() => undefined);
    if (st?.isDirectory()) await rmdir(targetPath);
    else if (st !== undefined) await rm(targetPath);
    log.info({ volumeId, target: targetPath }, 'volume unpublished');
  }
}
