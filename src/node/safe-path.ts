/**
 * Reaching kubelet's paths without following links. A path that passed the
 * string check (domain/paths.ts) may still lead elsewhere through a symlink
 * that a pod or a hostPath user planted under the kubelet directory: `mount`,
 * `mkdir -p`, `open` and `rm` all follow links. So, as kubernetes/mount-utils
 * does for subpaths (doSafeMakeDir), every component below the kubelet
 * directory is lstat-ed from the directory's real path down, and a link
 * anywhere is refused; what the node creates there is made one component at
 * a time with calls that do not follow a link in the last component (mkdir,
 * open with O_NOFOLLOW|O_EXCL), each component checked again as it is made.
 *
 * The kubelet directory itself is the admin's setting and may be a link (to a
 * bigger disk); only what lies below it is untrusted. Node cannot call openat,
 * so a link swapped in between a check and the tool that uses the path stays
 * possible; the window is the length of one mount(8) call, and the mount is
 * then checked in mountinfo at the exact path.
 */
import { constants } from 'node:fs';
import { lstat, mkdir, open, realpath } from 'node:fs/promises';
import { join, normalize, relative, sep } from 'node:path';
import { invalid } from '../domain/errors.js';

export class SafePaths {
  private realBase: Promise<string> | undefined;

  readonly base: string;

  /** `base`: the kubelet directory, as configured (paths from kubelet start with it). */
  constructor(base: string) {
    this.base = normalize(base).replace(/\/+$/, '');
  }

  /**
   * Checks that no component of `path` below the base is a symlink (missing
   * components are fine: they are made later by `makeDirs`). INVALID_ARGUMENT
   * names the field and the link. Returns `path` unchanged.
   */
  async check(path: string, field: string): Promise<string> {
    await this.walk(path, field, false);
    return path;
  }

  /** Makes the directory `path` and any missing parent below the base, refusing links on the way. */
  async makeDirs(path: string, field: string, mode = 0o750): Promise<void> {
    await this.walk(path, field, true, mode);
  }

  /**
   * Creates an empty regular file at `path` (a block target) without following
   * a link there; an existing regular file is taken as it is. Returns whether
   * this call created it.
   */
  async makeFile(path: string, field: string): Promise<boolean> {
    const parent = join(path, '..');
    await this.makeDirs(parent, field);
    try {
      await (await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o660)).close();
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const st = await lstat(path);
    if (!st.isFile() && !st.isBlockDevice()) throw invalid(`${field} ${path} exists and is not a regular file`);
    return false;
  }

  private async walk(path: string, field: string, create: boolean, mode = 0o750): Promise<void> {
    const rel = relative(this.base, path);
    if (rel === '' || rel.startsWith('..') || rel.startsWith(sep)) throw invalid(`${field} ${path} is outside the kubelet directory ${this.base}`);
    const parts = rel.split(sep);
    let at = await this.real();
    for (const [i, part] of parts.entries()) {
      at = join(at, part);
      const last = i === parts.length - 1;
      let st = await lstat(at).catch((e: unknown) => {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return undefined;
        // The mount point of a dead FUSE or NFS filesystem (its root answers so); a link's lstat
        // reads the healthy directory holding it, so this is not one. Unpublish must still reach it.
        if (last && (code === 'ENOTCONN' || code === 'ESTALE' || code === 'EIO')) return 'stale' as const;
        throw e;
      });
      if (st === 'stale') return;
      if (st === undefined) {
        if (!create) return;
        // Not recursive: mkdir does not follow a link in its last component (EEXIST), and the lstat below sees it.
        await mkdir(at, { mode }).catch((e: unknown) => {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        });
        st = await lstat(at);
      }
      if (st.isSymbolicLink()) {
        throw invalid(`${field} ${path} is refused: ${at} is a symbolic link, and node paths are never followed through links`);
      }
      if (!st.isDirectory() && !last) {
        throw invalid(`${field} ${path} is refused: ${at} is not a directory`);
      }
    }
  }

  private real(): Promise<string> {
    // Kept once resolved; a kubelet directory missing at start-up is looked up again next time.
    this.realBase ??= realpath(this.base).catch((e: unknown) => {
      this.realBase = undefined;
      throw e;
    });
    return this.realBase;
  }
}
