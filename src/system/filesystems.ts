/**
 * Filesystems on block devices: probe, format, mount, unmount, grow, usage.
 * Modelled on kubernetes/mount-utils: mount points come from mountinfo (stat
 * hangs on a dead FUSE or NFS mount), a device is formatted only when it
 * carries no signature at all, and a stale mount is unmounted anyway.
 */
import { realpath, statfs } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { CommandFailed, type Runner } from './command.js';
import { classifyBlkid, describeSignatures, parseBlkidExport, parseWipefs, type Probe, type Signature } from './blkid.js';
import { edgesAreZero } from './device-read.js';
import { mountAt, readMountInfo, type MountEntry } from './mountinfo.js';
import { describe, internal, invalid } from '../domain/errors.js';
import type { FsType } from '../domain/capabilities.js';

export { classifyBlkid, parseBlkidExport, parseWipefs, type Probe, type Signature } from './blkid.js';

export interface MountOptions {
  fsType?: string;
  /** Extra -o flags (CSI mount_flags). */
  flags: readonly string[];
  readOnly: boolean;
  /** Bind-mount `source` (a directory, or a device node onto a file). */
  bind?: boolean;
}

export interface Usage {
  totalBytes: bigint;
  usedBytes: bigint;
  availableBytes: bigint;
  totalInodes: bigint;
  usedInodes: bigint;
  availableInodes: bigint;
}

export interface Filesystems {
  probe(device: string): Promise<Probe>;
  /**
   * Probes the device and formats it only when it is blank. Returns what the
   * probe saw: 'blank' means it was blank and now holds `fsType`; anything
   * else was left untouched. One probe, so a stage makes it once.
   */
  formatIfBlank(device: string, fsType: FsType): Promise<Probe>;
  /** Not idempotent by itself: callers check isMountPoint first. */
  mount(source: string, target: string, options: MountOptions): Promise<void>;
  /** Idempotent: not mounted is done; stale mounts are lazily unmounted; stacked mounts all go. */
  unmount(target: string): Promise<void>;
  isMountPoint(path: string): Promise<boolean>;
  /** The topmost mount at `path` (its source and options), from mountinfo. */
  mountEntry(path: string): Promise<MountEntry | undefined>;
  /** Online grow to the device size: resize2fs takes the device, xfs_growfs the mount point. */
  grow(fsType: FsType, device: string, mountPoint: string): Promise<void>;
  usage(path: string): Promise<Usage>;
}

/**
 * The path as mountinfo and the loop driver name it (symlinks resolved). When
 * the path cannot be resolved (missing, or a stale mount answering ENOTCONN),
 * the nearest ancestor that can be is resolved and the rest appended: a share
 * reached through a symlink keeps its real name even after its files are gone.
 */
export async function canonicalPath(path: string): Promise<string> {
  const rest: string[] = [];
  for (let at = resolve(path); ; at = dirname(at)) {
    try {
      return join(await realpath(at), ...rest);
    } catch {
      if (at === dirname(at)) return resolve(path);
      rest.unshift(basename(at));
    }
  }
}

/**
 * Options every stage of `fsType` needs. xfs refuses a second filesystem with
 * the same UUID, and clones and restored snapshots share their source's. A
 * read-only device cannot replay a dirty journal (a snapshot of a volume in
 * use has one), so read-only stages skip the replay.
 */
export function stageMountFlags(fsType: FsType, readOnly: boolean): string[] {
  if (fsType === 'xfs') return readOnly ? ['nouuid', 'norecovery'] : ['nouuid'];
  return readOnly ? ['noload'] : [];
}

/** errors a dead FUSE daemon or an unreachable NFS server give for a stat of the mount point */
const STALE = /Transport endpoint is not connected|Stale file handle|Input\/output error|timed out/;

/** `mountInfo`: the mount table (tests pass a fake one). */
export function makeFilesystems(run: Runner, mountInfo: () => Promise<MountEntry[]> = readMountInfo): Filesystems {
  const signatures = async (device: string): Promise<Signature[]> =>
    parseWipefs((await run(['wipefs', '--no-act', '--json', device], { timeoutMs: 30_000 })).stdout);

  const mounted = async (path: string): Promise<boolean> => mountAt(await mountInfo(), path) !== undefined;

  // A separate `stat` process with a timeout: a hung NFS stat would otherwise block a libuv
  // thread forever. --cached=never: FUSE answers from cached attributes for a second after
  // its daemon died; forcing a real getattr gets the ENOTCONN (or an NFS server's ESTALE).
  const isStale = async (path: string): Promise<boolean> => {
    try {
      await run(['stat', '--cached=never', '--format=%i', path], { timeoutMs: 5_000 });
      return false;
    } catch (e) {
      if (e instanceof CommandFailed) return STALE.test(e.stderr);
      throw e;
    }
  };

  const fs: Filesystems = {
    async probe(device) {
      try {
        // -p: low-level probe of the device itself, never blkid's cache.
        const { stdout } = await run(['blkid', '-p', '-o', 'export', device], { timeoutMs: 30_000 });
        return classifyBlkid(parseBlkidExport(stdout));
      } catch (e) {
        if (!(e instanceof CommandFailed)) throw e;
        if (e.exitCode === 2) {
          // blkid found nothing; wipefs lists every signature libblkid knows, at any offset.
          const sigs = await signatures(device);
          if (sigs.length > 0) return { kind: 'other', description: describeSignatures(sigs) };
          // Both also find nothing when their reads fail: blank only if we can read zeros ourselves.
          return (await edgesAreZero(device)) ? { kind: 'blank' } : { kind: 'other', description: 'data without a signature blkid knows' };
        }
        if (e.exitCode === 8) {
          // "ambivalent result": more than one signature; name them all.
          return { kind: 'other', description: `several signatures: ${describeSignatures(await signatures(device))}` };
        }
        throw e;
      }
    },

    async formatIfBlank(device, fsType) {
      const found = await fs.probe(device);
      if (found.kind !== 'blank') return found;
      // Only blank (zeroed or never-written) devices get here, so skipping journal zeroing is
      // safe; lazy inode tables are finished by the kernel after mount; -m 0 as kubernetes
      // mount-utils does (pods rarely run as root); 4 KiB blocks even on small volumes, which
      // mke2fs would otherwise make with 1 KiB blocks. No discard: a blank image is sparse already.
      // xfs gets 4 KiB sectors: a direct-I/O loop over a reflinked xfs file (a snapshot or clone
      // shares its extents) has 4 KiB logical sectors, and xfs will not mount 512-byte ones there.
      const argv =
        fsType === 'ext4'
          ? ['mkfs.ext4', '-F', '-q', '-m', '0', '-b', '4096', '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard', device]
          : ['mkfs.xfs', '-f', '-q', '-K', '-s', 'size=4096', device];
      await run(argv, { timeoutMs: 10 * 60_000 });
      return found;
    },

    async mount(source, target, options) {
      if (options.flags.some((f) => f === '' || f.includes(','))) {
        throw invalid(`mount flags for ${target} must be non-empty and contain no commas: ${options.flags.join(' ')}`);
      }
      // `ro` last: mount(8) lets the last of ro/rw win, so a flag can never undo a read-only mount.
      const flags = [...options.flags, ...(options.readOnly ? ['ro'] : [])];
      // Never leave a mount behind without its flags: a read-only publish would be writable.
      const undo = async (e: unknown): Promise<never> => {
        await run(['umount', target]).catch((u: unknown) => {
          throw internal(`mounting ${target} went wrong (${describe(e)}), and so did unmounting it: ${describe(u)}`, e);
        });
        throw e;
      };
      if (options.bind === true) {
        await run(['mount', '--bind', source, target]);
        // A bind mount takes ro and other flags only on a remount of the bind.
        if (flags.length > 0) await run(['mount', '-o', ['remount', 'bind', ...flags].join(','), target]).catch(undo);
      } else {
        const argv = ['mount'];
        if (options.fsType !== undefined) argv.push('-t', options.fsType);
        if (flags.length > 0) argv.push('-o', flags.join(','));
        await run([...argv, source, target]);
      }
      if (!options.readOnly) return;
      // Read-only is the driver's promise (CSI readonly, *_READER_ONLY): checked where the kernel says it.
      const entry = await fs.mountEntry(target);
      if (entry?.options.split(',').includes('ro') !== true) {
        await undo(
          internal(
            `${target} was to be mounted read-only but mountinfo shows ${entry === undefined ? 'no mount' : `options ${entry.options}`}; unmounted it`,
          ),
        );
      }
    },

    async unmount(target) {
      const path = await canonicalPath(target);
      for (let round = 0; round < 4; round++) {
        if (!(await mounted(path))) return;
        try {
          await run(['umount', path]);
        } catch (e) {
          if (!(e instanceof CommandFailed)) throw e;
          if (!(await mounted(path))) return; // someone else unmounted it meanwhile
          // A busy healthy mount is the caller's problem; a dead one is detached lazily.
          if (!(await isStale(path))) throw e;
          await run(['umount', '-l', path]);
        }
      }
      if (await mounted(path)) throw internal(`${path} is still mounted after 4 unmounts`);
    },

    async isMountPoint(path) {
      return mounted(await canonicalPath(path));
    },

    async mountEntry(path) {
      return mountAt(await mountInfo(), await canonicalPath(path));
    },

    async grow(fsType, device, mountPoint) {
      const argv = fsType === 'ext4' ? ['resize2fs', device] : ['xfs_growfs', '-d', mountPoint];
      try {
        await run(argv, { timeoutMs: 10 * 60_000 });
      } catch (e) {
        // The kernel's online ext4 resize answers EPERM without CAP_SYS_RESOURCE (or when the
        // filesystem has recorded errors); resize2fs only says "Permission denied".
        if (e instanceof CommandFailed && fsType === 'ext4' && /Permission denied to resize/.test(e.stderr)) {
          throw internal(
            `resize2fs ${device} (mounted at ${mountPoint}): permission denied; online ext4 growth needs CAP_SYS_RESOURCE and a filesystem without recorded errors`,
            e,
          );
        }
        throw e;
      }
    },

    async usage(path) {
      const s = await statfs(path, { bigint: true });
      return {
        totalBytes: s.blocks * s.bsize,
        usedBytes: (s.blocks - s.bfree) * s.bsize,
        availableBytes: s.bavail * s.bsize,
        totalInodes: s.files,
        usedInodes: s.files - s.ffree,
        availableInodes: s.ffree,
      };
    },
  };
  return fs;
}
