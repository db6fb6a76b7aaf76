/**
 * NodePublishVolume / NodeUnpublishVolume: a bind mount of the staged
 * filesystem onto the pod's target directory, or of the staged device node
 * onto a file at the target path for block volumes. Each target is recorded
 * in the stage record (before it is mounted), so a second publish can be
 * judged by the CSI spec's table and an unstage never orphans a target.
 */
import { lstat, rmdir, unlink } from 'node:fs/promises';
import type { Logger } from 'pino';
import { isReadOnlyMode, publishesOnce, type Capability } from '../domain/capabilities.js';
import { alreadyExists, precondition } from '../domain/errors.js';
import { checkReadOnlyFlags } from '../domain/mount-flags.js';
import type { SafePaths } from './safe-path.js';
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
  /** Where the target may be made: below the kubelet directory, through no link. */
  paths: SafePaths;
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
    if (cap.access === 'mount') checkReadOnlyFlags(cap.mountFlags, readOnly, `the publication of volume ${volumeId} at ${targetPath}`);
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
      throw precondition(
        `volume ${volumeId} is published at ${others.map((t) => t.path).join(', ')} with access mode ${once.mode}, which allows one target only`,
      );
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
    const existed = (await lstat(target).catch(() => undefined)) !== undefined;
    try {
      // Made through no link (safe-path.ts): a link planted on the way would put the volume outside the kubelet dir.
      if (input.capability.access === 'block') {
        await input.paths.makeFile(target, 'target_path');
        await this.sys.fs.mount(device, target, { bind: true, readOnly, flags: [] });
      } else {
        await input.paths.makeDirs(target, 'target_path');
        await this.sys.fs.mount(input.stagingPath, target, { bind: true, readOnly, flags: input.capability.mountFlags });
      }
    } catch (e) {
      // Leave no target file or directory of ours behind (rmdir: only an empty one).
      if (!existed && !(await this.sys.fs.isMountPoint(target))) await removeTarget(target);
      throw e;
    }
  }

  /**
   * Idempotent. Acts only on a target this volume's stage record names: a
   * path the driver did not publish to (a pod's file, another volume's
   * target, a foreign mount) is answered OK untouched. The target is
   * unmounted, then removed if it is an empty directory or the empty file a
   * block publish made; anything put inside it is left.
   */
  async unpublish(volumeId: string, targetPath: string, log: Logger): Promise<void> {
    const rec = await this.state.read(volumeId);
    const recorded = (rec?.targets ?? []).some((t) => t.path === targetPath);
    // Records of versions before targets were recorded: a mount that shows this volume is adopted.
    const legacy =
      rec !== undefined && rec.targets === undefined && (await this.sys.fs.isMountPoint(targetPath)) && (await showsVolume(rec, targetPath));
    if (!recorded && !legacy) {
      log.info({ volumeId, target: targetPath }, 'volume is not published at this path; nothing to do');
      return;
    }
    await this.sys.fs.unmount(targetPath);
    if (!(await this.sys.fs.isMountPoint(targetPath))) await removeTarget(targetPath);
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
}

/**
 * Removes a target the publish made: an empty directory, or an empty regular
 * file (a block target). Never follows a link (lstat, rmdir, unlink do not),
 * never removes contents: a directory someone filled (ENOTEMPTY) or busy is
 * left for kubelet, which removes its pod's directories itself.
 */
async function removeTarget(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (st === undefined) return;
  const ignore = (e: unknown) => {
    if (!['ENOTEMPTY', 'EEXIST', 'EBUSY', 'ENOENT'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
  };
  if (st.isDirectory()) await rmdir(path).catch(ignore);
  else if (st.isFile() && st.size === 0) await unlink(path).catch(ignore);
}
