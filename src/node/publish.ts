/**
 * NodePublishVolume / NodeUnpublishVolume: a bind mount of the staged
 * filesystem onto the pod's target directory, or of the staged device node
 * onto a file at the target path for block volumes. Each target is recorded
 * in the stage record (before it is mounted), so a second publish can be
 * judged by the CSI spec's table and an unstage never orphans a target.
 */
import { mkdir, open, rm, rmdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { isReadOnlyMode, publishesOnce, type Capability } from '../domain/capabilities.js';
import { alreadyExists, precondition } from '../domain/errors.js';
import { fingerprint } from './stage.js';
import type { PublishedTarget, StageRecord, StageState } from './state.js';
import type { NodeSystem } from './system.js';
import { showsVolume } from './where.js';

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

  /** `rec`: the volume's stage at input.stagingPath (Stager.requireStaged). */
  async publish(input: PublishInput, rec: StageRecord, log: Logger): Promise<void> {
    const { volumeId, targetPath, capability: cap } = input;
    if (rec.access !== cap.access) {
      throw precondition(`volume ${volumeId} was staged as ${rec.access} and cannot be published as ${cap.access}`);
    }
    const target: PublishedTarget = { path: targetPath, capability: fingerprint(cap, input.readonly), mode: cap.mode };
    const recorded = (rec.targets ?? []).find((t) => t.path === targetPath);
    const readOnly = input.readonly || rec.readOnly || isReadOnlyMode(cap.mode);
    if (await this.sys.fs.isMountPoint(targetPath)) {
      // Same target: the same arguments are a repeat, others ALREADY_EXISTS (CSI NodePublishVolume).
      if (recorded !== undefined && recorded.capability !== target.capability) {
        throw alreadyExists(`volume ${volumeId} is already published at ${targetPath} with another capability or readonly flag`);
      }
      // Unrecorded: published by a version that did not record targets, adopted if it shows the volume.
      if (recorded === undefined && !(await showsVolume(rec, targetPath))) {
        throw precondition(`${targetPath} is already a mount point of something other than volume ${volumeId}`);
      }
      const entry = await this.sys.fs.mountEntry(targetPath);
      if (!readOnly || entry?.options.split(',').includes('ro') === true) {
        if (recorded === undefined) await this.remember(rec, target);
        return;
      }
      // Writable where read-only was asked: a publish that died between the bind and its remount.
      log.warn({ volumeId, target: targetPath }, 'target is mounted writable but must be read-only; publishing it again');
      await this.sys.fs.unmount(targetPath);
    }
    // Another target: fine for modes shared on a node, FAILED_PRECONDITION for those published once.
    const others = await this.liveTargets(rec, targetPath);
    const once = [target, ...others].find((t) => publishesOnce(t.mode));
    if (once !== undefined && others.length > 0) {
      throw precondition(`volume ${volumeId} is published at ${others.map((t) => t.path).join(', ')} with access mode ${once.mode}, which allows one target only`);
    }
    await this.remember(rec, target);
    try {
      await this.mount(input, rec, readOnly);
    } catch (e) {
      await this.forget(volumeId, targetPath);
      throw e;
    }
    log.info({ volumeId, target: targetPath, readOnly }, 'volume published');
  }

  private async mount(input: PublishInput, rec: StageRecord, readOnly: boolean): Promise<void> {
    const device = rec.device ?? '';
    const target = input.targetPath;
    const existed = (await stat(target).catch(() => undefined)) !== undefined;
    try {
      if (input.capability.access === 'block') {
        await mkdir(dirname(target), { recursive: true });
        await (await open(target, 'a', 0o660)).close();
        await this.sys.fs.mount(device, target, { bind: true, readOnly, flags: [] });
      } else {
        await mkdir(target, { recursive: true, mode: 0o750 });
        await this.sys.fs.mount(input.stagingPath, target, { bind: true, readOnly, flags: input.capability.mountFlags });
      }
    } catch (e) {
      // Leave no target file or directory of ours behind (rmdir: only an empty one).
      if (!existed && !(await this.sys.fs.isMountPoint(target))) {
        const st = await stat(target).catch(() => undefined);
        await (st?.isDirectory() === true ? rmdir(target) : rm(target, { force: true })).catch(() => undefined);
      }
      throw e;
    }
  }

  /**
   * Idempotent: unmounts and removes the target (an empty directory or the
   * device file), never its contents. A target that shows another staged
   * volume is not this volume's publication and is left alone.
   */
  async unpublish(volumeId: string, targetPath: string, log: Logger): Promise<void> {
    if (await this.sys.fs.isMountPoint(targetPath)) {
      const owner = await this.ownerElsewhere(volumeId, targetPath);
      if (owner !== undefined) {
        log.warn({ volumeId, target: targetPath, owner }, 'target shows another volume; not unpublishing it');
        return;
      }
    }
    await this.sys.fs.unmount(targetPath);
    const st = await stat(targetPath).catch(() => undefined);
    if (st?.isDirectory()) await rmdir(targetPath);
    else if (st !== undefined) await rm(targetPath);
    await this.forget(volumeId, targetPath);
    log.info({ volumeId, target: targetPath }, 'volume unpublished');
  }

  /** Recorded targets other than `except` that are still mounted. */
  private async liveTargets(rec: StageRecord, except: string): Promise<PublishedTarget[]> {
    const live: PublishedTarget[] = [];
    for (const t of rec.targets ?? []) if (t.path !== except && (await this.sys.fs.isMountPoint(t.path))) live.push(t);
    return live;
  }

  private async remember(rec: StageRecord, target: PublishedTarget): Promise<void> {
    rec.targets = [...(rec.targets ?? []).filter((t) => t.path !== target.path), target];
    await this.state.write(rec);
  }

  private async forget(volumeId: string, targetPath: string): Promise<void> {
    const rec = await this.state.read(volumeId);
    if (rec === undefined || !(rec.targets ?? []).some((t) => t.path === targetPath)) return;
    rec.targets = (rec.targets ?? []).filter((t) => t.path !== targetPath);
    await this.state.write(rec);
  }

  /** The staged volume other than `volumeId` that `path` shows, if any. */
  private async ownerElsewhere(volumeId: string, path: string): Promise<string | undefined> {
    const mine = await this.state.read(volumeId);
    if (mine !== undefined && ((mine.targets ?? []).some((t) => t.path === path) || (await showsVolume(mine, path)))) return undefined;
    for (const rec of await this.state.list()) {
      if (rec.volumeId === volumeId) continue;
      if ((rec.targets ?? []).some((t) => t.path === path) || (await showsVolume(rec, path))) return rec.volumeId;
    }
    return undefined;
  }
}
