/**
 * MountProbes for plain directories: each share is a temp directory the fake
 * calls mounted (as /proc/self/mountinfo would show an NFS export), so the
 * stores run unchanged, without root, on real files. Free space is what the
 * test says; a share can be unmounted, made read-only or given a size at any
 * moment. The probe write itself is the real one (it only makes directories
 * and a file in the driver tree).
 */
import { realpathSync } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { Layout } from '../../src/storage/layout.js';
import { linuxProbes, type MountProbes } from '../../src/storage/mounts.js';
import type { MountEntry } from '../../src/system/mountinfo.js';
import { Recorder } from './recorder.js';

export type MountProbesOp = 'mountInfo' | 'realpath' | 'writeProbe' | 'space' | 'sameFilesystem';

export const GiB = 1n << 30n;

interface Share {
  mounted: boolean;
  writable: boolean;
  freeBytes: bigint;
  totalBytes: bigint;
}

export class FakeMountProbes extends Recorder<MountProbesOp> implements MountProbes {
  /** By real path. */
  private readonly shares = new Map<string, Share>();

  /** Makes the directory `path` a mounted, writable share with this much room. */
  share(path: string, space: { freeBytes?: bigint; totalBytes?: bigint } = {}): this {
    const freeBytes = space.freeBytes ?? 100n * GiB;
    this.shares.set(realpathSync(path), { mounted: true, writable: true, freeBytes, totalBytes: space.totalBytes ?? 2n * freeBytes });
    return this;
  }

  /** Changes a share: `mounted: false` is an unmounted (or never mounted) share, `writable: false` a read-only one. */
  set(path: string, change: Partial<Share>): this {
    const share = this.shares.get(realpathSync(path));
    if (share === undefined) throw new Error(`${path} is not a fake share`);
    Object.assign(share, change);
    return this;
  }

  async mountInfo(): Promise<MountEntry[]> {
    this.act('mountInfo');
    return [...this.shares]
      .filter(([, s]) => s.mounted)
      .map(([path, s], i) => ({
        mountId: 100 + i,
        parentId: 1,
        root: '/',
        mountPoint: path,
        options: s.writable ? 'rw,relatime' : 'ro,relatime',
        fsType: 'nfs4',
        source: `filer:/export/${i}`,
        superOptions: s.writable ? 'rw' : 'ro',
      }));
  }

  async realpath(path: string): Promise<string> {
    this.act('realpath', path);
    return realpath(path);
  }

  async writeProbe(layout: Layout): Promise<void> {
    this.act('writeProbe', layout.mountPath);
    if (this.at(layout.mountPath)?.writable === false) {
      throw Object.assign(new Error(`EROFS: read-only file system, mkdir '${layout.volumes}'`), { code: 'EROFS' });
    }
    await linuxProbes.writeProbe(layout);
  }

  async space(path: string): Promise<{ freeBytes: bigint; totalBytes: bigint }> {
    this.act('space', path);
    const share = this.at(path);
    if (share === undefined) throw new Error(`${path} is not a fake share`);
    return { freeBytes: share.freeBytes, totalBytes: share.totalBytes };
  }

  async sameFilesystem(a: string, b: string): Promise<boolean> {
    this.act('sameFilesystem', a, b);
    // A share unmounted while the probe wrote: the probe's directory is on the root filesystem.
    return this.at(a)?.mounted === true;
  }

  private at(path: string): Share | undefined {
    return this.shares.get(realpathSync(path));
  }
}
