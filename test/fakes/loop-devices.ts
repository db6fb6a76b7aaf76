/**
 * LoopDevices without the kernel: a table of devices, each reading one file,
 * with what the node code relies on (test/contract/loop-devices.contract.ts
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
import type { Format } from '../../src/domain/parameters.js';
import { canonicalPath } from '../../src/system/filesystems.js';
import type { AttachOptions, DetachResult, LoopDevice, LoopDevices } from '../../src/system/loop-devices.js';
import { inode, virtualSize } from './image-file.js';
import { Recorder, toolFailed } from './recorder.js';

export type LoopDevicesOp = 'attach' | 'findByFile' | 'list' | 'detach' | 'refreshCapacity' | 'size';

/** Where the bytes a file shows live: an image in a format (a plain file is itself, raw). */
export interface Medium {
  path: string;
  format: Format;
}

/** How a file another fake serves reads: its image; 'dead' once its server died; undefined for a plain file. */
export type FileViews = (file: string) => Medium | 'dead' | undefined;

/** What a device reads, for the fakes that read and write through it (FakeFilesystems). */
export interface DeviceMedium extends Medium {
  sizeBytes: bigint;
  readOnly: boolean;
}

interface Device {
  number: number;
  file: string;
  /** The file's inode at attach: a different one at the path now means the file was replaced. */
  inode: string | undefined;
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
  open(device: string): () => void {
    const d = this.devices.get(device);
    if (d === undefined) throw new Error(`${device} is not attached`);
    d.opens++;
    let closed = false;
    return () => {
      if (closed) return;
      closed = true;
      d.opens--;
      // The kernel frees an autoclear device at its last close.
      if (d.opens === 0 && d.autoclear) this.devices.delete(device);
    };
  }

  /** What the device reads, or undefined when it is not attached. */
  medium(device: string): DeviceMedium | 'dead' | undefined {
    const d = this.devices.get(device);
    if (d === undefined) return undefined;
    const view = this.views(d.file) ?? { path: d.file, format: 'raw' };
    return view === 'dead' ? 'dead' : { ...view, sizeBytes: d.sizeBytes, readOnly: d.readOnly };
  }

  async attach(file: string, options: AttachOptions): Promise<LoopDevice> {
    this.act('attach', file, options);
    const path = await canonicalPath(file);
    if (this.views(path) === 'dead') throw dead(path);
    await stat(path); // ENOENT as the real adapter's statfs
    const ino = await inode(path);
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
      readOnly: options.readOnly,
      // Over an export file (FUSE) only when the export vouches for it.
      directIo: options.directIo && (this.views(path) === undefined || options.overExport === true),
      autoclear: false,
      sizeBytes: await this.fileSize(path),
      opens: 0,
    };
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
    this.devices.delete(device);
    return 'detached';
  }

  async refreshCapacity(device: string): Promise<void> {
    this.act('refreshCapacity', device);
    const d = this.devices.get(device);
    if (d === undefined) throw toolFailed('losetup', `losetup: ${device}: set capacity failed: No such device or address`);
    if (this.views(d.file) === 'dead') throw toolFailed('losetup', `losetup: ${device}: set capacity failed: Transport endpoint is not connected`);
    d.sizeBytes = await this.fileSize(d.file);
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

  private async fileSize(file: string): Promise<bigint> {
    const view = this.views(file);
    if (view === 'dead') throw dead(file);
    return view === undefined ? virtualSize(file, 'raw') : virtualSize(view.path, view.format);
  }
}
