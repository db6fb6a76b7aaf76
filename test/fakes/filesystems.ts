/**
 * Filesystems without mkfs or mount(8). What a device holds is the guest data
 * of the file behind its loop device (FakeLoopDevices.medium): the fake mkfs
 * writes the superblock magic and block count where ext4 and xfs keep them,
 * so a snapshot or clone of a formatted volume is formatted too; a mount
 * reads the size from there and keeps it, as the kernel does (usage reads no
 * device), and grow writes it anew. The mounts are a table, in mountinfo's
 * terms.
 *
 * Modelled, as test/contract/filesystems.contract.ts checks against the real
 * adapter: probe finds ext4 and xfs (both at once: 'other'), any other data
 * in the first or last MiB is 'other', and only zeros there are blank;
 * formatIfBlank formats only a blank device; mount refuses a device without
 * the filesystem asked for, honours read-only (a read-only device mounts
 * read-only), and a mounted filesystem, and each bind of a directory on it,
 * holds its loop device open (a detach is deferred), while a bind of a device
 * node onto a file does not; unmount is idempotent and takes stacked mounts;
 * paths are compared as mountinfo names them (links resolved).
 *
 * Not modelled: files inside a mounted filesystem, flags other than ro/rw in
 * the mount options, busy or stale mounts (plant those with failOn).
 */
import { statfs, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { FsType } from '../../src/domain/capabilities.js';
import { internal, invalid } from '../../src/domain/errors.js';
import type { Probe } from '../../src/system/blkid.js';
import { canonicalPath, type Filesystems, type MountOptions, type Usage } from '../../src/system/filesystems.js';
import type { MountEntry } from '../../src/system/mountinfo.js';
import type { DeviceMedium, FakeLoopDevices } from './loop-devices.js';
import { Recorder, toolFailed } from './recorder.js';

export type FilesystemsOp = 'probe' | 'formatIfBlank' | 'mount' | 'unmount' | 'isMountPoint' | 'mountEntry' | 'grow' | 'usage';

const MiB = 1 << 20;
const BLOCK = 4096n;
/** The ext4 superblock sits at 1 KiB: s_blocks_count_lo at +4, s_magic 0xEF53 at +56 (little-endian). */
const EXT4_SB = 1024;
/** The xfs superblock at 0: "XFSB", sb_dblocks at +8 (big-endian). */
const XFS_MAGIC = 'XFSB';

interface Mounted extends MountEntry {
  /** Closes the loop device this mount holds open. */
  close: (() => Promise<void>) | undefined;
  device: string | undefined;
  /** The filesystem's size in blocks, kept in memory as the kernel keeps its superblock: statfs reads no device. */
  blocks: bigint | undefined;
}

/** What a mount takes from its source. */
type Source = Pick<Mounted, 'source' | 'fsType' | 'root' | 'superOptions' | 'device' | 'blocks'>;

export class FakeFilesystems extends Recorder<FilesystemsOp> implements Filesystems {
  private table: Mounted[] = [];
  private nextId = 1000;

  constructor(private readonly loops: FakeLoopDevices) {
    super();
  }

  /** The mount table, oldest first (what /proc/self/mountinfo would list of these mounts). */
  mounts(): MountEntry[] {
    return this.table.map(({ close: _c, device: _d, blocks: _b, ...entry }) => entry);
  }

  async probe(device: string): Promise<Probe> {
    this.act('probe', device);
    return this.look(device);
  }

  async formatIfBlank(device: string, fsType: FsType): Promise<Probe> {
    this.act('formatIfBlank', device, fsType);
    const found = await this.look(device);
    if (found.kind !== 'blank') return found;
    const m = this.medium(device);
    if (m.readOnly) throw toolFailed(`mkfs.${fsType}`, `mkfs.${fsType}: cannot open ${device}: Read-only file system`);
    await this.writeBlocks(m, fsType, m.sizeBytes / BLOCK);
    return found;
  }

  async mount(source: string, target: string, options: MountOptions): Promise<void> {
    this.act('mount', source, target, options);
    if (options.flags.some((f) => f === '' || f.includes(','))) {
      throw invalid(`mount flags for ${target} must be non-empty and contain no commas: ${options.flags.join(' ')}`);
    }
    const at = await canonicalPath(target);
    const st = await stat(at).catch(() => undefined);
    if (st === undefined) throw mountFailed(target, 'mount point does not exist.');
    const entry = options.bind === true ? await this.bindOf(source, target, st.isDirectory()) : await this.filesystemOf(source, target, options);
    const readOnly = options.readOnly || (entry.device !== undefined && this.medium(entry.device).readOnly);
    this.table.push({
      ...entry,
      mountId: this.nextId++,
      parentId: 1,
      mountPoint: at,
      options: readOnly ? 'ro,relatime' : 'rw,relatime',
      close: entry.device === undefined ? undefined : this.loops.open(entry.device),
    });
  }

  async unmount(target: string): Promise<void> {
    this.act('unmount', target);
    const at = await canonicalPath(target);
    for (const m of this.table.filter((e) => e.mountPoint === at).reverse()) await m.close?.();
    this.table = this.table.filter((e) => e.mountPoint !== at);
  }

  async isMountPoint(path: string): Promise<boolean> {
    this.act('isMountPoint', path);
    return this.at(await canonicalPath(path)) !== undefined;
  }

  async mountEntry(path: string): Promise<MountEntry | undefined> {
    this.act('mountEntry', path);
    const m = this.at(await canonicalPath(path));
    return m === undefined ? undefined : this.mounts().find((e) => e.mountId === m.mountId);
  }

  async grow(fsType: FsType, device: string, mountPoint: string): Promise<void> {
    this.act('grow', fsType, device, mountPoint);
    const tool = fsType === 'ext4' ? 'resize2fs' : 'xfs_growfs';
    const found = await this.look(device);
    if (found.kind !== 'filesystem' || found.fsType !== fsType) throw toolFailed(tool, `${tool}: ${device} holds no ${fsType} filesystem`);
    if (fsType === 'xfs' && this.at(await canonicalPath(mountPoint))?.device !== device) {
      throw toolFailed(tool, `xfs_growfs: ${mountPoint} is not a mounted XFS filesystem`);
    }
    const m = this.medium(device);
    await this.writeBlocks(m, fsType, m.sizeBytes / BLOCK);
    for (const e of this.table) if (e.device === device) e.blocks = m.sizeBytes / BLOCK;
  }

  async usage(path: string): Promise<Usage> {
    this.act('usage', path);
    const at = await canonicalPath(path);
    // The filesystem a path is on: the deepest mount at or above it.
    const under = this.table.filter((e) => at === e.mountPoint || at.startsWith(`${e.mountPoint}/`));
    const blocks = under.sort((a, b) => a.mountPoint.length - b.mountPoint.length).pop()?.blocks;
    if (blocks === undefined) {
      const s = await statfs(at, { bigint: true });
      const total = s.blocks * s.bsize;
      const files = s.files;
      return { totalBytes: total, usedBytes: total - s.bfree * s.bsize, availableBytes: s.bavail * s.bsize, ...inodes(files, s.ffree) };
    }
    const totalBytes = blocks * BLOCK;
    return { totalBytes, usedBytes: 0n, availableBytes: totalBytes, ...inodes(totalBytes / 16384n, totalBytes / 16384n) };
  }

  private at(path: string): Mounted | undefined {
    return this.table.filter((e) => e.mountPoint === path).pop();
  }

  private medium(device: string): DeviceMedium {
    const m = this.loops.medium(device);
    if (m === undefined) throw toolFailed('blkid', `blkid: error: ${device}: No such file or directory`, 2);
    if (m === 'dead') throw internal(`cannot read ${device} to confirm it is blank; not formatting it: Input/output error`);
    return m;
  }

  /** What blkid, wipefs and the edge read together make of the device. */
  private async look(device: string): Promise<Probe> {
    const m = this.medium(device);
    const size = Number(m.sizeBytes);
    const head = await m.medium.read(0, Math.min(MiB, size));
    const tailAt = Math.max(head.length, size - MiB);
    const tail = await m.medium.read(tailAt, size - tailAt);
    const ext4 = head.length >= EXT4_SB + 58 && head.readUInt16LE(EXT4_SB + 56) === 0xef53;
    const xfs = head.toString('latin1', 0, 4) === XFS_MAGIC;
    if (ext4 && xfs) return { kind: 'other', description: 'several signatures: xfs at 0x0, ext4 at 0x438' };
    if (ext4) return { kind: 'filesystem', fsType: 'ext4' };
    if (xfs) return { kind: 'filesystem', fsType: 'xfs' };
    if (head.some((b) => b !== 0) || tail.some((b) => b !== 0)) return { kind: 'other', description: 'data without a signature blkid knows' };
    return { kind: 'blank' };
  }

  /** A superblock of `fsType` that spans `blocks` 4 KiB blocks, written where the real one is. */
  private async writeBlocks(m: DeviceMedium, fsType: FsType, blocks: bigint): Promise<void> {
    const at = fsType === 'ext4' ? EXT4_SB : 0;
    const sector = await m.medium.read(at, 512);
    if (fsType === 'ext4') {
      sector.writeUInt32LE(Number(blocks), 4);
      sector.writeUInt16LE(0xef53, 56);
    } else {
      sector.write(XFS_MAGIC, 0, 'latin1');
      sector.writeBigUInt64BE(blocks, 8);
    }
    await m.medium.write(at, sector);
  }

  private async blocks(m: DeviceMedium): Promise<bigint> {
    const head = await m.medium.read(0, EXT4_SB + 512);
    return head.toString('latin1', 0, 4) === XFS_MAGIC ? head.readBigUInt64BE(8) : BigInt(head.readUInt32LE(EXT4_SB + 4));
  }

  /** A filesystem on a loop device, checked as mount(8) and the kernel check it. */
  private async filesystemOf(source: string, target: string, options: MountOptions): Promise<Source> {
    if (this.loops.medium(source) === undefined) throw mountFailed(target, `special device ${source} does not exist.`);
    const found = await this.look(source);
    if (found.kind !== 'filesystem' || (options.fsType !== undefined && options.fsType !== found.fsType)) {
      throw mountFailed(target, `wrong fs type, bad option, bad superblock on ${source}, missing codepage or helper program, or other error.`);
    }
    const blocks = await this.blocks(this.medium(source));
    return { source, fsType: found.fsType, root: '/', superOptions: options.readOnly ? 'ro' : 'rw', device: source, blocks };
  }

  /** A bind: of a device node onto a file (it holds nothing open), or of a directory (its filesystem's device stays open). */
  private async bindOf(source: string, target: string, ontoDirectory: boolean): Promise<Source> {
    if (this.loops.medium(source) !== undefined) {
      if (ontoDirectory) throw mountFailed(target, 'mount(2) system call failed: Not a directory.');
      return { source: 'udev', fsType: 'devtmpfs', root: `/${basename(source)}`, superOptions: 'rw', device: undefined, blocks: undefined };
    }
    const from = await canonicalPath(source);
    const st = await stat(from).catch(() => undefined);
    if (st === undefined) throw mountFailed(target, `special device ${source} does not exist.`);
    if (st.isDirectory() !== ontoDirectory) throw mountFailed(target, 'mount(2) system call failed: Not a directory.');
    const under = this.at(from);
    if (under === undefined) return { source: 'fakeroot', fsType: 'fakefs', root: from, superOptions: 'rw', device: undefined, blocks: undefined };
    const { source: src, fsType, root, superOptions, device, blocks } = under;
    return { source: src, fsType, root, superOptions, device, blocks };
  }
}

function mountFailed(target: string, why: string): Error {
  return toolFailed('mount', `mount: ${target}: ${why}`, 32);
}

function inodes(total: bigint, free: bigint): Pick<Usage, 'totalInodes' | 'usedInodes' | 'availableInodes'> {
  return { totalInodes: total, usedInodes: total - free, availableInodes: free };
}
