/**
 * What the node relies on from LoopDevices, against the real adapter (losetup
 * and sysfs, on a tmpfs, as root) and FakeLoopDevices: one device per file
 * found by its path, --nooverlap handing the existing device back, a detach
 * of an open device deferred to its last close, the size fixed until
 * refreshCapacity, a deleted file seen as deleted. After each test every
 * device on the test's files is detached, and none may be left.
 */
import { symlinkSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { LoopDevices } from '../../src/system/loop-devices.js';
import { until } from '../helpers/wait.js';

export interface LoopDevicesSubject {
  loops: LoopDevices;
  /** A directory for the test's files, on the filesystem under test. */
  dir: string;
  /** Holds the device open, as a mounted filesystem or a pod does; resolves to its close. */
  open(device: string): Promise<() => Promise<void>>;
  cleanup(): void;
}

const MiB = 1 << 20;
const plain = { readOnly: false, directIo: false };

export function loopDevicesContract(name: string, make: () => LoopDevicesSubject): void {
  describe(`LoopDevices contract: ${name}`, () => {
    let subject: LoopDevicesSubject | undefined;
    const closes: (() => Promise<void>)[] = [];
    afterEach(async () => {
      const s = subject;
      subject = undefined;
      if (s === undefined) return;
      try {
        for (const close of closes.splice(0)) await close();
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
      const file = (rel: string, bytes = 8 * MiB) => {
        const path = join(s.dir, rel);
        writeFileSync(path, '');
        truncateSync(path, bytes);
        return path;
      };
      const open = async (device: string) => {
        const close = await s.open(device);
        closes.push(close);
        return close;
      };
      const gone = (path: string) => until(`no device reads ${path}`, async () => (await s.loops.findByFile(path)).length === 0, 10_000);
      return { ...s, file, open, gone };
    }

    it('attaches a file and finds its device by the path, also named through a link, with the size of the file', async () => {
      const w = world();
      const path = w.file('disk.raw');
      expect(await w.loops.findByFile(path)).toEqual([]);
      symlinkSync(path, join(w.dir, 'link.raw'));
      const dev = await w.loops.attach(join(w.dir, 'link.raw'), plain);
      expect(dev).toMatchObject({ backingFile: path, backingDeleted: false, readOnly: false, autoclear: false });
      expect(dev.device).toMatch(/^\/dev\/loop\d+$/);
      expect(await w.loops.findByFile(path)).toEqual([dev]);
      expect(await w.loops.findByFile(join(w.dir, 'link.raw'))).toEqual([dev]);
      expect(await w.loops.list()).toContainEqual(dev);
      expect(await w.loops.size(dev.device)).toBe(BigInt(8 * MiB));
    });

    it('hands back the device a file already has (--nooverlap) instead of a second one', async () => {
      const w = world();
      const path = w.file('disk.raw');
      const first = await w.loops.attach(path, plain);
      expect((await w.loops.attach(path, plain)).device).toBe(first.device);
      expect(await w.loops.findByFile(path)).toHaveLength(1);
      const other = await w.loops.attach(w.file('other.raw'), plain);
      expect(other.device).not.toBe(first.device);
    });

    it('refuses to hand a read-write device to a read-only attach, and a read-only one to a read-write attach', async () => {
      const w = world();
      const rw = w.file('rw.raw');
      await w.loops.attach(rw, plain);
      await expect(w.loops.attach(rw, { readOnly: true, directIo: false })).rejects.toMatchObject({ kind: 'precondition' });
      const ro = w.file('ro.raw');
      expect(await w.loops.attach(ro, { readOnly: true, directIo: false })).toMatchObject({ readOnly: true });
      await expect(w.loops.attach(ro, plain)).rejects.toMatchObject({
        name: 'CommandFailed',
        stderr: expect.stringMatching(/overlapping read-only/),
      });
      expect(await w.loops.findByFile(rw)).toHaveLength(1);
      expect(await w.loops.findByFile(ro)).toHaveLength(1);
    });

    it('detaches idempotently; a free device reads as size 0', async () => {
      const w = world();
      const path = w.file('disk.raw');
      const dev = await w.loops.attach(path, plain);
      // udev may still be probing a new device: then the kernel frees it at its last close.
      expect(['detached', 'deferred']).toContain(await w.loops.detach(dev.device));
      await w.gone(path);
      expect(await w.loops.detach(dev.device)).toBe('detached');
      expect(await w.loops.size(dev.device)).toBe(0n);
      await expect(w.loops.refreshCapacity(dev.device)).rejects.toMatchObject({ name: 'CommandFailed' });
    });

    it('defers the detach of an open device to its last close; an attach meanwhile takes the device back', async () => {
      const w = world();
      const path = w.file('disk.raw');
      const dev = await w.loops.attach(path, plain);
      const close = await w.open(dev.device);
      expect(await w.loops.detach(dev.device)).toBe('deferred');
      expect(await w.loops.findByFile(path)).toEqual([{ ...dev, autoclear: true }]);
      // A stage retried before the close: --nooverlap reuses the device and clears its autoclear.
      expect(await w.loops.attach(path, plain)).toEqual(dev);
      await close();
      expect(await w.loops.findByFile(path)).toEqual([dev]);
      await w.open(dev.device);
      expect(await w.loops.detach(dev.device)).toBe('deferred');
      for (const c of closes.splice(0)) await c();
      await w.gone(path);
    });

    it('keeps the size it had until refreshCapacity, after the file grew', async () => {
      const w = world();
      const path = w.file('disk.raw');
      const dev = await w.loops.attach(path, plain);
      truncateSync(path, 24 * MiB);
      expect(await w.loops.size(dev.device)).toBe(BigInt(8 * MiB));
      await w.loops.refreshCapacity(dev.device);
      expect(await w.loops.size(dev.device)).toBe(BigInt(24 * MiB));
    });

    it('shows a file deleted under its device as deleted, and still finds and detaches the device', async () => {
      const w = world();
      const path = w.file('gone disk.raw');
      const dev = await w.loops.attach(path, { readOnly: true, directIo: false });
      unlinkSync(path);
      expect(await w.loops.findByFile(path)).toEqual([{ ...dev, backingDeleted: true }]);
      expect(['detached', 'deferred']).toContain(await w.loops.detach(dev.device));
      await w.gone(path);
    });

    it('fails to attach a file that does not exist', async () => {
      const w = world();
      await expect(w.loops.attach(join(w.dir, 'none.raw'), plain)).rejects.toMatchObject({ code: 'ENOENT' });
      expect(await w.loops.findByFile(join(w.dir, 'none.raw'))).toEqual([]);
    });
  });
}
