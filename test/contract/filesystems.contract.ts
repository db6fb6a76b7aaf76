/**
 * What the node relies on from Filesystems (with the loop devices under it),
 * against the real tools (blkid, mkfs, mount on loop devices over files on a
 * tmpfs, as root) and FakeFilesystems over FakeLoopDevices: blank only when
 * the edges read zeros, formatting only a blank device, mounts seen in
 * mountinfo under their real path, read-only honoured, binds of a directory
 * and of a device node, a mounted filesystem holding its loop device open,
 * online growth. After each test everything is unmounted and detached, and
 * nothing may be left.
 */
import { mkdirSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Filesystems } from '../../src/system/filesystems.js';
import type { LoopDevices } from '../../src/system/loop-devices.js';
import { until } from '../helpers/wait.js';

export interface FilesystemsSubject {
  fs: Filesystems;
  loops: LoopDevices;
  /** A directory for the test's files and mount points, on the filesystem under test. */
  dir: string;
  cleanup(): void;
}

export interface FilesystemsContractOptions {
  /** Online ext4 growth needs CAP_SYS_RESOURCE (resize2fs): without it, that test is skipped. */
  growsExt4?: boolean;
}

const MiB = 1 << 20;
const plain = { readOnly: false, directIo: false };

export function filesystemsContract(name: string, make: () => FilesystemsSubject, options: FilesystemsContractOptions = {}): void {
  describe(`Filesystems contract: ${name}`, () => {
    let subject: FilesystemsSubject | undefined;
    const mountPoints: string[] = [];
    afterEach(async () => {
      const s = subject;
      subject = undefined;
      if (s === undefined) return;
      try {
        for (const p of mountPoints.splice(0).reverse()) await s.fs.unmount(p);
        const ours = async () => (await s.loops.list()).filter((d) => d.backingFile.startsWith(`${s.dir}/`));
        for (const d of await ours()) await s.loops.detach(d.device);
        await until('no loop device reads a file of the test', async () => (await ours()).length === 0, 10_000);
      } finally {
        s.cleanup();
      }
    });

    function world() {
      subject = make();
      const s = subject;
      /** A loop device over a sparse file of `bytes`, with `data` written at `offsets` first. */
      const device = async (rel: string, bytes: number, writes: { at: number; data: Buffer }[] = []) => {
        const path = join(s.dir, rel);
        writeFileSync(path, '');
        truncateSync(path, bytes);
        const fh = await open(path, 'r+');
        for (const w of writes) await fh.write(w.data, 0, w.data.length, w.at);
        await fh.close();
        return { file: path, device: (await s.loops.attach(path, plain)).device };
      };
      const mountPoint = (rel: string, kind: 'dir' | 'file' = 'dir') => {
        const path = join(s.dir, rel);
        if (kind === 'dir') mkdirSync(path);
        else writeFileSync(path, '');
        mountPoints.push(path);
        return path;
      };
      return { ...s, device, mountPoint };
    }

    it('calls zeros blank, formats a blank device once, and leaves a formatted one as it is', async () => {
      const w = world();
      const { device } = await w.device('disk.raw', 32 * MiB);
      expect(await w.fs.probe(device)).toEqual({ kind: 'blank' });
      expect(await w.fs.formatIfBlank(device, 'ext4')).toEqual({ kind: 'blank' });
      expect(await w.fs.probe(device)).toEqual({ kind: 'filesystem', fsType: 'ext4' });
      expect(await w.fs.formatIfBlank(device, 'ext4')).toEqual({ kind: 'filesystem', fsType: 'ext4' });
      expect(await w.fs.formatIfBlank(device, 'xfs')).toEqual({ kind: 'filesystem', fsType: 'ext4' });
      expect(await w.fs.probe(device)).toEqual({ kind: 'filesystem', fsType: 'ext4' });
    });

    it('makes xfs on a blank device', async () => {
      const w = world();
      const { device } = await w.device('disk.raw', 320 * MiB);
      expect(await w.fs.formatIfBlank(device, 'xfs')).toEqual({ kind: 'blank' });
      expect(await w.fs.probe(device)).toEqual({ kind: 'filesystem', fsType: 'xfs' });
    });

    it.each([
      ['at its start', 0, 'other'],
      ['in its last MiB', 63 * MiB + 4096, 'other'],
      ['only in its middle (not looked at)', 32 * MiB, 'blank'],
    ] as const)('judges a device with data %s %s, and formats only a blank one', async (_where, at, kind) => {
      const w = world();
      const { device } = await w.device('disk.raw', 64 * MiB, [{ at, data: Buffer.alloc(4096, 0x5a) }]);
      expect(await w.fs.probe(device)).toMatchObject({ kind });
      expect(await w.fs.formatIfBlank(device, 'ext4')).toMatchObject({ kind });
      expect(await w.fs.probe(device)).toMatchObject(kind === 'blank' ? { kind: 'filesystem', fsType: 'ext4' } : { kind: 'other' });
    });

    it('mounts a filesystem where mountinfo shows it under its real path, and unmounts idempotently', async () => {
      const w = world();
      const { device } = await w.device('disk.raw', 32 * MiB);
      await w.fs.formatIfBlank(device, 'ext4');
      const mnt = w.mountPoint('staging');
      symlinkSync(mnt, join(w.dir, 'link'));
      expect(await w.fs.isMountPoint(mnt)).toBe(false);
      await w.fs.mount(device, join(w.dir, 'link'), { fsType: 'ext4', flags: [], readOnly: false });
      expect(await w.fs.isMountPoint(mnt)).toBe(true);
      expect(await w.fs.isMountPoint(join(w.dir, 'link'))).toBe(true);
      const entry = await w.fs.mountEntry(mnt);
      expect(entry).toMatchObject({ mountPoint: mnt, source: device, fsType: 'ext4', root: '/' });
      expect(entry?.options.split(',')).toContain('rw');
      const usage = await w.fs.usage(mnt);
      expect(usage.totalBytes).toBeGreaterThan(0n);
      expect(usage.availableBytes).toBeLessThanOrEqual(usage.totalBytes);
      expect(usage.totalInodes).toBeGreaterThan(0n);
      await w.fs.unmount(mnt);
      expect(await w.fs.isMountPoint(mnt)).toBe(false);
      await w.fs.unmount(mnt);
      await w.fs.unmount(join(w.dir, 'never-made'));
    });

    it('mounts read-only when asked, and refuses flags that would smuggle in more options', async () => {
      const w = world();
      const { device } = await w.device('disk.raw', 32 * MiB);
      await w.fs.formatIfBlank(device, 'ext4');
      const mnt = w.mountPoint('staging');
      await expect(w.fs.mount(device, mnt, { fsType: 'ext4', flags: ['noatime,rw'], readOnly: true })).rejects.toMatchObject({ kind: 'invalid' });
      expect(await w.fs.isMountPoint(mnt)).toBe(false);
      await w.fs.mount(device, mnt, { fsType: 'ext4', flags: ['noload'], readOnly: true });
      expect((await w.fs.mountEntry(mnt))?.options.split(',')).toContain('ro');
    });

    it('refuses to mount a blank device, or a filesystem as another type, and leaves nothing mounted', async () => {
      const w = world();
      const blank = await w.device('blank.raw', 32 * MiB);
      const ext4 = await w.device('ext4.raw', 32 * MiB);
      await w.fs.formatIfBlank(ext4.device, 'ext4');
      const mnt = w.mountPoint('staging');
      await expect(w.fs.mount(blank.device, mnt, { fsType: 'ext4', flags: [], readOnly: false })).rejects.toMatchObject({ name: 'CommandFailed' });
      await expect(w.fs.mount(ext4.device, mnt, { fsType: 'xfs', flags: [], readOnly: false })).rejects.toMatchObject({ name: 'CommandFailed' });
      expect(await w.fs.isMountPoint(mnt)).toBe(false);
    });

    it('binds the staging mount onto a target read-only, and a device node onto a file', async () => {
      const w = world();
      const { device } = await w.device('disk.raw', 32 * MiB);
      await w.fs.formatIfBlank(device, 'ext4');
      const staging = w.mountPoint('staging');
      await w.fs.mount(device, staging, { fsType: 'ext4', flags: [], readOnly: false });
      const target = w.mountPoint('target');
      await w.fs.mount(staging, target, { bind: true, flags: [], readOnly: true });
      expect(await w.fs.mountEntry(target)).toMatchObject({ source: device, fsType: 'ext4', root: '/' });
      expect((await w.fs.mountEntry(target))?.options.split(',')).toContain('ro');
      expect((await w.fs.mountEntry(staging))?.options.split(',')).toContain('rw');
      const block = w.mountPoint('block', 'file');
      await w.fs.mount(device, block, { bind: true, flags: [], readOnly: false });
      expect(await w.fs.isMountPoint(block)).toBe(true);
      await w.fs.unmount(block);
      expect(await w.fs.isMountPoint(block)).toBe(false);
    });

    it('keeps a loop device open while its filesystem, or a bind of it, is mounted; a bound device node does not', async () => {
      const w = world();
      const { file, device } = await w.device('disk.raw', 32 * MiB);
      await w.fs.formatIfBlank(device, 'ext4');
      const staging = w.mountPoint('staging');
      await w.fs.mount(device, staging, { fsType: 'ext4', flags: [], readOnly: false });
      const target = w.mountPoint('target');
      await w.fs.mount(staging, target, { bind: true, flags: [], readOnly: false });
      expect(await w.loops.detach(device)).toBe('deferred');
      await w.fs.unmount(staging);
      expect(await w.loops.findByFile(file)).toMatchObject([{ device, autoclear: true }]);
      await w.fs.unmount(target);
      await until(`the loop device of ${file} is freed`, async () => (await w.loops.findByFile(file)).length === 0, 10_000);

      const again = await w.device('block.raw', 32 * MiB);
      const block = w.mountPoint('block', 'file');
      await w.fs.mount(again.device, block, { bind: true, flags: [], readOnly: false });
      await w.loops.detach(again.device);
      await until(`the loop device of ${again.file} is freed`, async () => (await w.loops.findByFile(again.file)).length === 0, 10_000);
      expect(await w.fs.isMountPoint(block)).toBe(true);
    });

    it.skipIf(options.growsExt4 === false)('grows a mounted ext4 filesystem to its grown device', async () => {
      const w = world();
      const { file, device } = await w.device('disk.raw', 32 * MiB);
      await w.fs.formatIfBlank(device, 'ext4');
      const mnt = w.mountPoint('staging');
      await w.fs.mount(device, mnt, { fsType: 'ext4', flags: [], readOnly: false });
      const before = (await w.fs.usage(mnt)).totalBytes;
      truncateSync(file, 64 * MiB);
      await w.loops.refreshCapacity(device);
      await w.fs.grow('ext4', device, mnt);
      const after = (await w.fs.usage(mnt)).totalBytes;
      expect(after).toBeGreaterThan(before + 24n * BigInt(MiB));
      expect(after).toBeLessThanOrEqual(64n * BigInt(MiB));
    });
  });
}
