/**
 * Loop devices over image files: a raw image, or the raw view a qemu export
 * gives of a qcow2 image.
 *
 * attach() is not idempotent by itself. Callers look the file up with
 * findByFile() first and attach only when no device serves it (deleting
 * devices whose backing file was deleted); `--nooverlap` is a second guard
 * that makes losetup hand back the existing device instead of a second one.
 */
import { readdir, readFile, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandFailed, type Runner } from './command.js';
import { canonicalPath } from './filesystems.js';
import { internal, precondition } from '../domain/errors.js';

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
   * Ask for direct I/O. attach() uses buffered I/O instead on FUSE (see FUSE_MAGIC), but
   * for an export that vouches for it, and where the file's filesystem has no O_DIRECT.
   */
  directIo: boolean;
  /** The file is a qemu export whose caller checked it does asynchronous direct I/O (qemu ≥ 11 with growable). */
  overExport?: boolean;
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
 * on the same file were exact (qemu 7.2's export). So FUSE-backed files get buffered loop I/O,
 * but for a qemu ≥ 11 export with asynchronous direct I/O, which was exact under fio's verify.
 */
const FUSE_MAGIC = 0x65735546;

/** One device's sysfs files as read: `loop/backing_file`, `ro`, `loop/dio`, `loop/autoclear`. */
export interface LoopSysfsFiles {
  backingFile: string;
  ro: string;
  dio: string;
  autoclear: string;
}

const flag = (text: string): boolean => text.trim() === '1';

/** One device from its sysfs files; undefined when no file is attached (empty backing_file). */
export function parseLoopSysfs(device: string, files: LoopSysfsFiles): LoopDevice | undefined {
  // The kernel ends the path with one newline; the path itself may end in spaces.
  const back = files.backingFile.endsWith('\n') ? files.backingFile.slice(0, -1) : files.backingFile;
  if (back === '') return undefined;
  const backingDeleted = back.endsWith(DELETED);
  return {
    device,
    backingFile: backingDeleted ? back.slice(0, -DELETED.length) : back,
    backingDeleted,
    readOnly: flag(files.ro),
    directIo: flag(files.dio),
    autoclear: flag(files.autoclear),
  };
}

const LOOP_NAME = /^loop\d+$/;

/** loopN of /dev/loopN, the name of its directory under /sys/block. */
function sysName(device: string): string {
  const name = device.startsWith('/dev/') ? device.slice('/dev/'.length) : '';
  if (!LOOP_NAME.test(name)) throw internal(`${device} is not a loop device`);
  return name;
}

/** A device detached while we read it: its files are gone (ENOENT), or one already open reads ENODEV. */
function vanished(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENODEV';
}

async function readDevice(sysBlock: string, name: string): Promise<LoopDevice | undefined> {
  const text = (file: string): Promise<string> => readFile(join(sysBlock, name, file), 'utf8');
  try {
    // loop/ exists only while a file is attached, so a free device costs one failed open.
    const backingFile = await text('loop/backing_file');
    const [ro, dio, autoclear] = await Promise.all([text('ro'), text('loop/dio'), text('loop/autoclear')]);
    return parseLoopSysfs(`/dev/${name}`, { backingFile, ro, dio, autoclear });
  } catch (e) {
    if (vanished(e)) return undefined;
    throw e;
  }
}

/** losetup's words for "this device does not exist or has nothing attached" */
const GONE = /No such device or address|No such device|No such file or directory/;

export interface LoopDevicesOptions {
  /** Where the kernel lists block devices; tests point it at a fake tree. */
  sysBlock?: string;
}

/**
 * Lookups (list, findByFile, size) read sysfs, where losetup itself lists devices: a
 * spawn per lookup dominated the node RPCs' latency. Changes stay with losetup.
 */
export function makeLoopDevices(run: Runner, { sysBlock = '/sys/block' }: LoopDevicesOptions = {}): LoopDevices {
  const list = async (device?: string): Promise<LoopDevice[]> => {
    const names = device === undefined ? (await readdir(sysBlock)).filter((n) => LOOP_NAME.test(n)) : [sysName(device)];
    names.sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
    const found = await Promise.all(names.map((n) => readDevice(sysBlock, n)));
    return found.filter((d) => d !== undefined);
  };

  const findByFile = async (file: string): Promise<LoopDevice[]> => {
    const path = await canonicalPath(file);
    return (await list()).filter((d) => d.backingFile === path);
  };

  const describe = async (device: string): Promise<LoopDevice> => {
    const [found] = await list(device);
    if (found === undefined) throw internal(`loop device ${device} vanished right after it was attached`);
    return found;
  };

  async function attach(file: string, options: AttachOptions): Promise<LoopDevice> {
    const path = await canonicalPath(file);
    const argv = ['losetup', '--find', '--show', '--nooverlap', ...(options.readOnly ? ['--read-only'] : [])];
    const onFuse = (await statfs(path)).type === FUSE_MAGIC;
    if (!options.directIo || (onFuse && options.overExport !== true)) return describe(lastLine((await run([...argv, path])).stdout));
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
  }

  /**
   * --nooverlap hands back an existing device of the file as it is: a read-only request may get
   * a writable one (losetup refuses only the converse). Never detached here: it is someone's.
   */
  const asAsked = (d: LoopDevice, options: AttachOptions): LoopDevice => {
    if (options.readOnly && !d.readOnly) {
      throw precondition(`${d.backingFile} is already attached read-write at ${d.device}; it cannot be attached read-only`);
    }
    return d;
  };

  return {
    async attach(file, options) {
      return asAsked(await attach(file, options), options);
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
      let sectors: string;
      try {
        sectors = await readFile(join(sysBlock, sysName(device), 'size'), 'utf8');
      } catch (e) {
        if (vanished(e)) throw internal(`loop device ${device} does not exist`, e);
        throw e;
      }
      // sysfs counts 512-byte sectors whatever the device's logical block size.
      return BigInt(sectors.trim()) * 512n;
    },
  };
}

function lastLine(stdout: string): string {
  const line = stdout.trim().split('\n').pop()?.trim() ?? '';
  if (!line.startsWith('/dev/')) throw internal(`losetup printed no device name: ${stdout}`);
  return line;
}
