/**
 * Loop devices over image files: a raw image, or the raw view a qemu export
 * gives of a qcow2 image.
 *
 * attach() is not idempotent by itself. Callers look the file up with
 * findByFile() first and attach only when no device serves it (deleting
 * devices whose backing file was deleted); `--nooverlap` is a second guard
 * that makes losetup hand back the existing device instead of a second one.
 */
import { statfs } from 'node:fs/promises';
import { CommandFailed, type Runner } from './command.js';
import { canonicalPath } from './filesystems.js';
import { internal } from '../domain/errors.js';

export interface LoopDevice {
  /** e.g. /dev/loop3 */
  device: string;
  /** The backing file as the kernel names it, without the " (deleted)" suffix. */
  backingFile: string;
  /** The file was unlinked (or replaced) while attached; the device still reads the old inode. */
  backingDeleted: boolean;
  readOnly: boolean;
  directIo: boolean;
  /** Set by a detach of a device still open: the kernel frees it at the last close. */
  autoclear: boolean;
}

export interface AttachOptions {
  readOnly: boolean;
  /**
   * Ask for direct I/O. attach() uses buffered I/O instead on FUSE (see FUSE_MAGIC) and
   * where the file's filesystem has no O_DIRECT.
   */
  directIo: boolean;
}

/** 'deferred': the device was still open (mounted, or held by a pod); it goes at the last close. */
export type DetachResult = 'detached' | 'deferred';

export interface LoopDevices {
  /** Attaches `file`; the result says whether direct I/O is actually in use. */
  attach(file: string, options: AttachOptions): Promise<LoopDevice>;
  /** Every device backed by `file` (by path), including ones whose file was deleted. */
  findByFile(file: string): Promise<LoopDevice[]>;
  list(): Promise<LoopDevice[]>;
  /** A device already gone counts as detached. */
  detach(device: string): Promise<DetachResult>;
  /** Re-reads the backing file's size after it grew (losetup --set-capacity). */
  refreshCapacity(device: string): Promise<void>;
  size(device: string): Promise<bigint>;
}

const DELETED = ' (deleted)';

/**
 * statfs f_type of FUSE. A loop device in direct I/O mode over a file on FUSE (the qemu
 * export of a qcow2) lost and mangled writes on Linux 6.18 (mkfs.ext4 gave a corrupt
 * journal; a dd pattern read back different), while buffered mode and userspace O_DIRECT
 * on the same file were exact. So FUSE-backed files always get buffered loop I/O.
 */
const FUSE_MAGIC = 0x65735546;

interface LosetupEntry {
  name?: string;
  'back-file'?: string | null;
  ro?: boolean | string | number | null;
  dio?: boolean | string | number | null;
  autoclear?: boolean | string | number | null;
}

// losetup 2.38 prints JSON booleans; older versions print "0"/"1".
const flag = (v: LosetupEntry['ro']): boolean => v === true || v === 1 || v === '1';

/**
 * `losetup --list --json`. An unattached device asked for by name comes back
 * with a null back-file and is left out; some versions print nothing at all.
 */
export function parseLosetupJson(stdout: string): LoopDevice[] {
  if (stdout.trim() === '') return [];
  const data = JSON.parse(stdout) as { loopdevices?: LosetupEntry[] };
  const devices: LoopDevice[] = [];
  for (const e of data.loopdevices ?? []) {
    const back = e['back-file'];
    if (e.name === undefined || back === null || back === undefined || back === '') continue;
    const backingDeleted = back.endsWith(DELETED);
    devices.push({
      device: e.name,
      backingFile: backingDeleted ? back.slice(0, -DELETED.length) : back,
      backingDeleted,
      readOnly: flag(e.ro),
      directIo: flag(e.dio),
      autoclear: flag(e.autoclear),
    });
  }
  return devices;
}

// Explicit columns keep the JSON keys stable across util-linux versions. BACK-FILE comes from
// sysfs, so it is the whole path (the ioctl's copy is cut at 64 bytes).
const LIST = ['losetup', '--list', '--json', '--output', 'NAME,BACK-FILE,RO,DIO,AUTOCLEAR'];

/** losetup's words for "this device does not exist or has nothing attached" */
const GONE = /No such device or address|No such device|No such file or directory/;

export function makeLoopDevices(run: Runner): LoopDevices {
  const list = async (device?: string): Promise<LoopDevice[]> =>
    parseLosetupJson((await run(device === undefined ? LIST : [...LIST, device], { timeoutMs: 30_000 })).stdout);

  const findByFile = async (file: string): Promise<LoopDevice[]> => {
    const path = await canonicalPath(file);
    return (await list()).filter((d) => d.backingFile === path);
  };

  const describe = async (device: string): Promise<LoopDevice> => {
    const [found] = await list(device);
    if (found === undefined) throw internal(`loop device ${device} vanished right after it was attached`);
    return found;
  };

  return {
    async attach(file, options) {
      const path = await canonicalPath(file);
      const argv = ['losetup', '--find', '--show', '--nooverlap', ...(options.readOnly ? ['--read-only'] : [])];
      const onFuse = (await statfs(path)).type === FUSE_MAGIC;
      if (!options.directIo || onFuse) return describe(lastLine((await run([...argv, path])).stdout));
      const before = new Set((await findByFile(path)).map((d) => d.device));
      try {
        return await describe(lastLine((await run([...argv, '--direct-io=on', path])).stdout));
      } catch (e) {
        if (!(e instanceof CommandFailed) || /overlapping/.test(e.stderr)) throw e;
        // Older losetup attaches first and only then fails to switch direct I/O on: never attach twice.
        const leftover = (await findByFile(path)).find((d) => !before.has(d.device));
        if (leftover !== undefined) return leftover;
        // Filesystem without O_DIRECT (ramfs, some FUSE): the kernel refuses the whole setup (EINVAL).
        return describe(lastLine((await run([...argv, path])).stdout));
      }
    },

    findByFile,
    list: () => list(),

    async detach(device) {
      try {
        await run(['losetup', '--detach', device], { timeoutMs: 30_000 });
      } catch (e) {
        if (e instanceof CommandFailed && GONE.test(e.stderr)) return 'detached';
        throw e;
      }
      // The kernel answers success for an open device too, and only marks it autoclear.
      const still = await list(device).catch(() => []);
      return still.length > 0 ? 'deferred' : 'detached';
    },

    async refreshCapacity(device) {
      await run(['losetup', '--set-capacity', device], { timeoutMs: 30_000 });
    },

    async size(device) {
      const { stdout } = await run(['blockdev', '--getsize64', device], { timeoutMs: 30_000 });
      return BigInt(stdout.trim());
    },
  };
}

function lastLine(stdout: string): string {
  const line = stdout.trim().split('\n').pop()?.trim() ?? '';
  if (!line.startsWith('/dev/')) throw internal(`losetup printed no device name: ${stdout}`);
  return line;
}
