/**
 * LoopDevices without the kernel: a table of devices, each holding its file
 * open as the kernel does (renaming or unlinking the path afterwards changes
 * nothing for the device), with what the node code relies on (test/contract/loop-devices.contract.ts
 * checks it against losetup): one device per file, `--nooverlap` handing back
 * the device a file already has (refusing a read-write attach over a
 * read-only one, and clearing a pending autoclear); a size read at attach and
 * again only on refreshCapacity; a detach of a device still open (mounted, or
 * held as a pod or udev would: `open`) deferred, marking it autoclear until
 * its last close; a file unlinked or replaced while attached shown deleted.
 * A detached device stays, free, with size 0. Devices are numbered from
 * 1000, so no device node of this machine has their names (node/where.ts
 * stats them).
 *
 * A file a FakeQemuExports serves is read through it (`views`): the device
 * shows the guest data of the export's image. Not modelled: which
 * filesystems have O_DIRECT (direct I/O is granted as asked, but over an
 * export file only with overExport, as over FUSE), offsets, size limits.
 */
import { stat } from 'node:fs/promises';
import { internal, precondition } from '../../src/domain/errors.js';
import { canonicalPath } from '../../src/system/filesystems.js';
import type { AttachOptions, DetachResult, LoopDevice, LoopDevices } from '../../src/system/loop-devices.js';
import { inode } from './image-file.js';
import { openFile, rawMedium, type Medium, type OpenFile } from './medium.js';
import { Recorder, toolFailed } from './recorder.js';

export type LoopDevicesOp = 'attach' | 'findByFile' | 'list' | 'detach' | 'refreshCapacity' | 'size';

/** How a file another fake serves reads (a qemu export's): its guest data; 'dead' once its server died; undefined for a plain file. */
export type FileViews = (file: string) => Medium | 'dead' | undefined;

/** What a device reads, for the fakes that read and write through it (FakeFilesystems). */
export interface DeviceMedium {
  medium: Medium;
  sizeBytes: bigint;
  readOnly: boolean;
}

interface Device {
  number: number;
  file: string;
  /** The file's inode at attach: a different one at the path now means the file was replaced. */
  inode: string | undefined;
  /** A plain file, held open as the kernel holds it; undefined for a served file (read through `views`). */
  open: OpenFile | undefined;
  readOnly: boolean;
  directIo: boolean;
  autoclear: boolean;
  sizeBytes: bigint;
  opens: number;
}

const FIRST = 1000;
const name = (d: Device): string => `/dev/loop${d.number}`;
const dead = (file: string): Error =>
  Object.assign(new Error(`ENOTCONN: transport endpoint is not connected, statfs '${file}'`), { code: 'ENOTCONN' });

export class FakeLoopDevices extends Recorder<LoopDevicesOp> implements LoopDevices {
  private readonly devices = new Map<string, Device>();
  /** Every device name handed out: a free one still exists, reading as size 0 (its sysfs entry stays). */
  private readonly made = new Set<string>();

  constructor(private readonly views: FileViews = () => undefined) {
    super();
  }

  /** Holds the device open (a pod, udev's probe, a mounted filesystem); returns its close. */
  open(device: string): () => Promise<void> {
    const d = this.devices.get(device);
    if (d === undefined) throw new Error(`${device} is not attached`);
    d.opens++;
    let closed = false;
    return async () => {
      if (closed) return;
      closed = true;
      d.opens--;
      // The kernel frees an autoclear device at its last close.
      if (d.opens === 0 && d.autoclear) await this.free(d);
    };
  }

  /** What the device reads, or undefined when it is not attached. */
  medium(device: string): DeviceMedium | 'dead' | undefined {
    const d = this.devices.get(device);
    if (d === undefined) return undefined;
    const medium = this.mediumOf(d);
    return medium === 'dead' ? 'dead' : { medium, sizeBytes: d.sizeBytes, readOnly: d.readOnly };
  }

  /** The machine restarted: every device is gone. */
  async reboot(): Promise<void> {
    await Promise.all([...this.devices.values()].map((d) => this.free(d)));
  }

  async attach(file: string, options: AttachOptions): Promise<LoopDevice> {
    this.act('attach', file, options);
    const path = await canonicalPath(file);
    if (this.views(path) === 'dead') throw dead(path);
    await stat(path); // ENOENT as the real adapter's statfs
    const ino = await inode(path);
    const served = this.views(path) !== undefined;
    const same = [...this.devices.values()].find((d) => d.file === path && d.inode === ino);
    if (same !== undefined) {
      // losetup --nooverlap: a read-only device cannot be reused read-write; reuse clears autoclear.
      if (same.readOnly && !options.readOnly) throw toolFailed('losetup', `losetup: ${path}: overlapping read-only loop device exists`);
      if (options.readOnly && !same.readOnly) {
        throw precondition(`${path} is already attached read-write at ${name(same)}; it cannot be attached read-only`);
      }
      same.autoclear = false;
      return this.describe(same);
    }
    let number = FIRST;
    while (this.devices.has(`/dev/loop${number}`)) number++;
    const d: Device = {
      number,
      file: path,
      inode: ino,
      open: served ? undefined : await openFile(path, options.readOnly),
      readOnly: options.readOnly,
      // Over an export file (FUSE) only when the export vouches for it.
      directIo: options.directIo && (!served || options.overExport === true),
      autoclear: false,
      sizeBytes: 0n,
      opens: 0,
    };
    d.sizeBytes = await this.sizeOf(d);
    this.devices.set(name(d), d);
    this.made.add(name(d));
    return this.describe(d);
  }

  async findByFile(file: string): Promise<LoopDevice[]> {
    this.act('findByFile', file);
    const path = await canonicalPath(file);
    return Promise.all(
      this.sorted()
        .filter((d) => d.file === path)
        .map((d) => this.describe(d)),
    );
  }

  async list(): Promise<LoopDevice[]> {
    this.act('list');
    return Promise.all(this.sorted().map((d) => this.describe(d)));
  }

  async detach(device: string): Promise<DetachResult> {
    this.act('detach', device);
    const d = this.devices.get(device);
    if (d === undefined) return 'detached';
    if (d.opens > 0) {
      d.autoclear = true;
      return 'deferred';
    }
    await this.free(d);
    return 'detached';
  }

  async refreshCapacity(device: string): Promise<void> {
    this.act('refreshCapacity', device);
    const d = this.devices.get(device);
    if (d === undefined) throw toolFailed('losetup', `losetup: ${device}: set capacity failed: No such device or address`);
    if (this.mediumOf(d) === 'dead') throw toolFailed('losetup', `losetup: ${device}: set capacity failed: Transport endpoint is not connected`);
    d.sizeBytes = await this.sizeOf(d);
  }

  async size(device: string): Promise<bigint> {
    this.act('size', device);
    const d = this.devices.get(device);
    if (d !== undefined) return d.sizeBytes;
    if (this.made.has(device)) return 0n;
    throw internal(`loop device ${device} does not exist`);
  }

  private sorted(): Device[] {
    return [...this.devices.values()].sort((a, b) => a.number - b.number);
  }

  private async describe(d: Device): Promise<LoopDevice> {
    const now = await inode(d.file);
    return {
      device: name(d),
      backingFile: d.file,
      backingDeleted: now === undefined || now !== d.inode,
      readOnly: d.readOnly,
      directIo: d.directIo,
      autoclear: d.autoclear,
    };
  }

  private mediumOf(d: Device): Medium | 'dead' {
    if (d.open !== undefined) return rawMedium(d.open);
    // A served file whose server went away reads as a dead FUSE mount does.
    return this.views(d.file) ?? 'dead';
  }

  private async sizeOf(d: Device): Promise<bigint> {
    const medium = this.mediumOf(d);
    if (medium === 'dead') throw dead(d.file);
    return medium.size();
  }

  private async free(d: Device): Promise<void> {
    this.devices.delete(name(d));
    await d.open?.handle.close();
  }
}
