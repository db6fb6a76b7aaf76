/**
 * The loop device adapter against the real kernel: direct I/O where the
 * filesystem has it, buffered where it does not, lookup by file (also after
 * the file was deleted), idempotent detach, and growing after a truncate.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { makeRunner } from '../../src/system/command.js';
import { makeLoopDevices } from '../../src/system/loop-devices.js';
import { rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { until } from '../helpers/wait.js';

const MiB = 1024 * 1024;

/** ramfs has no O_DIRECT at all (tmpfs has it since Linux 6.6), so it shows the fallback. */
function makeRamfs(): Scratch {
  const base = mkdtempSync(join(tmpdir(), 'fdtest-'));
  const path = join(base, 'mnt');
  mkdirSync(path);
  execFileSync('mount', ['-t', 'ramfs', 'fdtest-ramfs', path]);
  return {
    path,
    cleanup: () => {
      execFileSync('umount', [path]);
      rmSync(base, { recursive: true, force: true });
    },
  };
}

// rootOnlyReason() prints why when the suite is skipped.
describe.skipIf(rootOnlyReason() !== undefined)('loop devices (real losetup)', () => {
  const loops = makeLoopDevices(makeRunner(pino({ level: 'silent' })));
  const cleanups: (() => unknown)[] = [];

  afterEach(async () => {
    // Newest first: loop devices before the filesystems their files live on.
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function scratch(kind: 'xfs' | 'tmpfs' | 'ramfs'): string {
    const s = kind === 'ramfs' ? makeRamfs() : makeScratch(kind, kind === 'xfs' ? 512 : 64);
    cleanups.push(() => s.cleanup());
    return s.path;
  }

  function image(dir: string, name: string, bytes: number): string {
    const file = join(dir, name);
    writeFileSync(file, '');
    truncateSync(file, bytes);
    // Whatever a test leaves attached goes before its filesystem is unmounted.
    cleanups.push(async () => {
      for (const d of await loops.findByFile(file)) await loops.detach(d.device);
    });
    return file;
  }

  it('attaches with direct I/O on xfs and finds the device by its file', async () => {
    const file = image(scratch('xfs'), 'disk.raw', 16 * MiB);
    expect(await loops.findByFile(file)).toEqual([]);
    const dev = await loops.attach(file, { readOnly: false, directIo: true });
    expect(dev).toMatchObject({ backingFile: file, directIo: true, readOnly: false, backingDeleted: false });
    expect(dev.device).toMatch(/^\/dev\/loop\d+$/);
    expect(await loops.findByFile(file)).toEqual([dev]);
    expect((await loops.list()).map((d) => d.device)).toContain(dev.device);
    expect(await loops.size(dev.device)).toBe(16n * 1024n * 1024n);
  });

  it('falls back to buffered I/O where the filesystem has no O_DIRECT (ramfs)', async () => {
    const file = image(scratch('ramfs'), 'disk.raw', 8 * MiB);
    const dev = await loops.attach(file, { readOnly: false, directIo: true });
    expect(dev.directIo).toBe(false);
    expect(await loops.findByFile(file)).toHaveLength(1);
  });

  it('reports what tmpfs gives (direct I/O on Linux ≥ 6.6, buffered before)', async () => {
    const file = image(scratch('tmpfs'), 'disk.raw', 8 * MiB);
    const dev = await loops.attach(file, { readOnly: false, directIo: true });
    const sysfs = execFileSync('cat', [`/sys/block/${dev.device.slice('/dev/'.length)}/loop/dio`], { encoding: 'utf8' });
    expect(dev.directIo).toBe(sysfs.trim() === '1');
  });

  it('attaches read-only and without direct I/O when asked', async () => {
    const file = image(scratch('tmpfs'), 'disk.raw', 8 * MiB);
    const dev = await loops.attach(file, { readOnly: true, directIo: false });
    expect(dev).toMatchObject({ readOnly: true, directIo: false });
  });

  it('hands back the existing device instead of attaching the same file twice', async () => {
    const file = image(scratch('tmpfs'), 'disk.raw', 8 * MiB);
    const first = await loops.attach(file, { readOnly: false, directIo: true });
    const again = await loops.attach(file, { readOnly: false, directIo: true });
    expect(again.device).toBe(first.device);
    expect(await loops.findByFile(file)).toHaveLength(1);
  });

  it('detaches idempotently', async () => {
    const file = image(scratch('tmpfs'), 'disk.raw', 8 * MiB);
    const dev = await loops.attach(file, { readOnly: false, directIo: false });
    expect(await loops.detach(dev.device)).toBe('detached');
    expect(await loops.findByFile(file)).toEqual([]);
    expect(await loops.detach(dev.device)).toBe('detached');
    expect(await loops.detach('/dev/loop-fdtest-never-existed')).toBe('detached');
  });

  it('reports a detach of a mounted device as deferred, and the kernel frees it at unmount', async () => {
    const dir = scratch('tmpfs');
    const file = image(dir, 'disk.raw', 32 * MiB);
    const dev = await loops.attach(file, { readOnly: false, directIo: false });
    execFileSync('mkfs.ext4', ['-q', dev.device]);
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    execFileSync('mount', [dev.device, mnt]);
    try {
      expect(await loops.detach(dev.device)).toBe('deferred');
      expect((await loops.findByFile(file))[0]?.autoclear).toBe(true);
    } finally {
      execFileSync('umount', [mnt]);
    }
    await until(`the kernel has freed the loop device of ${file}`, async () => (await loops.findByFile(file)).length === 0);
    expect(await loops.findByFile(file)).toEqual([]);
  });

  it('grows the device after the file grew (set-capacity)', async () => {
    const file = image(scratch('xfs'), 'disk.raw', 16 * MiB);
    const dev = await loops.attach(file, { readOnly: false, directIo: true });
    truncateSync(file, 48 * MiB);
    expect(await loops.size(dev.device)).toBe(16n * 1024n * 1024n);
    await loops.refreshCapacity(dev.device);
    expect(await loops.size(dev.device)).toBe(48n * 1024n * 1024n);
  });

  it('detects a deleted backing file and still finds and detaches the device', async () => {
    const file = image(scratch('tmpfs'), 'gone disk.raw', 8 * MiB);
    const dev = await loops.attach(file, { readOnly: false, directIo: false });
    unlinkSync(file);
    const found = await loops.findByFile(file);
    expect(found).toEqual([{ ...dev, backingDeleted: true }]);
    // udev may still be probing the new device: then the kernel frees it at its last close.
    expect(['detached', 'deferred']).toContain(await loops.detach(dev.device));
    await until(`the kernel has freed the loop device of ${file}`, async () => (await loops.findByFile(file)).length === 0);
    expect(await loops.findByFile(file)).toEqual([]);
  });
});
