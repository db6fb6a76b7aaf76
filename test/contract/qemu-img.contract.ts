/**
 * What the driver relies on from qemu-img, as one suite that runs against the
 * real adapter (qemu-img on a temp directory) and against test/fakes'
 * FakeQemuImg: when qemu changes, or the fake is taught something qemu does
 * not do, one of the two runs fails.
 */
import { mkdtempSync, realpathSync, rmSync, statSync, writeFileSync, linkSync, openSync, writeSync, closeSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Format } from '../../src/domain/parameters.js';
import { backingReference, imageHeaderProblem } from '../../src/storage/image-header.js';
import type { QemuImg } from '../../src/system/qemu-img.js';

export interface QemuImgSubject {
  img: QemuImg;
  /** As if a qemu process (an export) held the image open for writing; resolves to its release. */
  hold(path: string, format: Format): Promise<() => Promise<void>>;
  /** A guest's write: `length` bytes of `pattern` at `offset` (whole sectors). */
  write(path: string, format: Format, offset: number, length: number, pattern: number): Promise<void>;
}

const MiB = 1n << 20n;
const KiB4 = 4096;

export function qemuImgContract(name: string, make: () => QemuImgSubject): void {
  describe(`QemuImg contract: ${name}`, () => {
    const dirs: string[] = [];
    afterEach(() => {
      for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
    });
    /** A fresh directory laid out like a mount's tree: volumes/v and snapshots/s at the same depth. */
    async function world() {
      const root = mkdtempSync(join(tmpdir(), 'fdtest-qemu-img-'));
      dirs.push(root);
      await mkdir(join(root, 'volumes', 'v'), { recursive: true });
      await mkdir(join(root, 'snapshots', 's'), { recursive: true });
      const subject = make();
      return { ...subject, root, at: (rel: string) => join(root, rel) };
    }
    /** A qcow2 base at snapshots/s with `pattern` at 4 KiB, and a qcow2 overlay on it at volumes/v. */
    async function chain(w: Awaited<ReturnType<typeof world>>, pattern = 0x5a) {
      const base = w.at('snapshots/s/disk.qcow2');
      const top = w.at('volumes/v/disk.qcow2');
      await w.img.create(base, 'qcow2', MiB);
      await w.write(base, 'qcow2', KiB4, KiB4, pattern);
      await w.img.createOverlay(top, '../../snapshots/s/disk.qcow2', 'qcow2', MiB);
      return { base, top };
    }

    it.each(['raw', 'qcow2'] as const)('creates a blank %s image of the size asked, rounded up to a whole sector', async (format) => {
      const w = await world();
      const path = w.at(`volumes/v/disk.${format}`);
      await w.img.create(path, format, MiB + 1000n);
      expect(await w.img.info(path)).toMatchObject({ format, virtualSize: MiB + 1024n, backingFile: undefined });
      expect(await w.img.info(path, format)).toMatchObject({ format, virtualSize: MiB + 1024n });
      if (format === 'raw') expect(statSync(path).size).toBe(Number(MiB + 1024n));
    });

    it('reads a qcow2 file as raw when told so: its bytes, in whole sectors, are then the guest data', async () => {
      const w = await world();
      const path = w.at('volumes/v/disk.qcow2');
      await w.img.create(path, 'qcow2', MiB);
      const sectors = (BigInt(statSync(path).size) + 511n) / 512n;
      expect(await w.img.info(path, 'raw')).toMatchObject({ format: 'raw', virtualSize: sectors * 512n });
    });

    it('fails to create in a missing directory, and to read a missing image', async () => {
      const w = await world();
      await expect(w.img.create(w.at('nowhere/disk.raw'), 'raw', MiB)).rejects.toMatchObject({ name: 'CommandFailed' });
      await expect(w.img.info(w.at('volumes/v/none.qcow2'))).rejects.toMatchObject({ name: 'CommandFailed' });
      await expect(w.img.backingChain(w.at('volumes/v/none.qcow2'))).rejects.toMatchObject({ name: 'CommandFailed' });
    });

    it('makes an overlay that names its backing as given and reads through it', async () => {
      const w = await world();
      const { base, top } = await chain(w);
      expect(await w.img.info(top)).toMatchObject({ format: 'qcow2', virtualSize: MiB, backingFile: '../../snapshots/s/disk.qcow2' });
      // The driver reads qcow2 headers itself too (merges, ListVolumes' condition): the reference is where qemu keeps it.
      expect(await backingReference(top)).toBe('../../snapshots/s/disk.qcow2');
      expect(await backingReference(base)).toBeUndefined();
      expect(await imageHeaderProblem(top, 'qcow2')).toBeUndefined();
      const links = await w.img.backingChain(top, 'qcow2');
      expect(links.map((l) => l.format)).toEqual(['qcow2', 'qcow2']);
      expect(links[0]?.filename).toBe(top);
      expect(realpathSync(links[1]?.filename ?? '')).toBe(realpathSync(base));
      expect(await w.img.same(top, base)).toBe(true);
      await w.write(top, 'qcow2', 0, KiB4, 0x11);
      expect(await w.img.same(top, base)).toBe(false);
    });

    it('refuses an overlay on a missing backing unless unsafe, whose chain then cannot be opened', async () => {
      const w = await world();
      const top = w.at('volumes/v/disk.qcow2');
      await expect(w.img.createOverlay(top, '../../snapshots/s/disk.qcow2', 'qcow2', MiB)).rejects.toMatchObject({ name: 'CommandFailed' });
      await w.img.createOverlay(top, '../../snapshots/s/disk.qcow2', 'qcow2', MiB, { unsafe: true });
      expect((await w.img.info(top)).backingFile).toBe('../../snapshots/s/disk.qcow2');
      await expect(w.img.backingChain(top)).rejects.toMatchObject({ name: 'CommandFailed' });
    });

    it.each(['raw', 'qcow2'] as const)('converts a chain into one flat %s image that reads the same', async (format) => {
      const w = await world();
      const { top } = await chain(w);
      await w.write(top, 'qcow2', 3 * KiB4, KiB4, 0x22);
      const copy = w.at(`volumes/v/copy.${format}`);
      await w.img.convert(top, 'qcow2', copy, format);
      expect(await w.img.info(copy, format)).toMatchObject({ format, virtualSize: MiB, backingFile: undefined });
      expect(await w.img.backingChain(copy, format)).toHaveLength(1);
      expect(await w.img.same(copy, top, { a: format, b: 'qcow2' })).toBe(true);
    });

    it('compares guest data only: a larger image whose extra part is zeros is the same', async () => {
      const w = await world();
      const [a, b] = [w.at('volumes/v/a.raw'), w.at('volumes/v/b.qcow2')];
      await w.img.create(a, 'raw', MiB);
      await w.img.create(b, 'qcow2', 2n * MiB);
      expect(await w.img.same(a, b, { a: 'raw', b: 'qcow2' })).toBe(true);
      await w.write(b, 'qcow2', Number(MiB), KiB4, 0x33);
      expect(await w.img.same(a, b, { a: 'raw', b: 'qcow2' })).toBe(false);
    });

    it.each(['raw', 'qcow2'] as const)('grows a %s image and never shrinks one', async (format) => {
      const w = await world();
      const path = w.at(`volumes/v/disk.${format}`);
      await w.img.create(path, format, MiB);
      await w.img.resize(path, format, 2n * MiB);
      expect((await w.img.info(path, format)).virtualSize).toBe(2n * MiB);
      await expect(w.img.resize(path, format, MiB)).rejects.toMatchObject({ name: 'CommandFailed' });
      expect((await w.img.info(path, format)).virtualSize).toBe(2n * MiB);
    });

    it("sees a writer's lock on the image, through a hard link too, and not on an overlay above it", async () => {
      const w = await world();
      const { base, top } = await chain(w);
      expect(await w.img.inUse(base, 'qcow2')).toBe(false);
      const release = await w.hold(base, 'qcow2');
      try {
        expect(await w.img.inUse(base, 'qcow2')).toBe(true);
        const link = w.at('snapshots/link.qcow2');
        linkSync(base, link);
        expect(await w.img.inUse(link, 'qcow2')).toBe(true);
        expect(await w.img.inUse(top, 'qcow2')).toBe(false);
        // Readers share: -U reads, copies and compares go on.
        expect((await w.img.info(base)).virtualSize).toBe(MiB);
        await w.img.convert(base, 'qcow2', w.at('volumes/v/copy.raw'), 'raw');
        // Writers do not: a resize of it, or of an image above it, is refused as "in use".
        await expect(w.img.resize(base, 'qcow2', 2n * MiB)).rejects.toMatchObject({ kind: 'precondition', reason: 'imageLocked' });
        await expect(w.img.resize(top, 'qcow2', 2n * MiB)).rejects.toMatchObject({ kind: 'precondition', reason: 'imageLocked' });
        // An overlay is made while the base is held (qemu opens it sharing writes).
        await w.img.createOverlay(w.at('volumes/v/next.qcow2'), '../../snapshots/s/disk.qcow2', 'qcow2', MiB);
      } finally {
        await release();
      }
      expect(await w.img.inUse(base, 'qcow2')).toBe(false);
    });

    it('sees a writer on a raw image', async () => {
      const w = await world();
      const path = w.at('volumes/v/disk.raw');
      await w.img.create(path, 'raw', MiB);
      const release = await w.hold(path, 'raw');
      try {
        expect(await w.img.inUse(path, 'raw')).toBe(true);
      } finally {
        await release();
      }
      expect(await w.img.inUse(path, 'raw')).toBe(false);
    });

    it('rebases onto nothing or another base without changing what the image reads', async () => {
      const w = await world();
      const { top } = await chain(w, 0x5a);
      await w.write(top, 'qcow2', 0, KiB4, 0x11);
      const before = w.at('volumes/v/before.raw');
      await w.img.convert(top, 'qcow2', before, 'raw');
      // Another base, differing from the first where the top has not written.
      const other = w.at('snapshots/other.qcow2');
      await w.img.create(other, 'qcow2', MiB);
      await w.write(other, 'qcow2', 2 * KiB4, KiB4, 0x77);
      expect(await w.img.rebase(top, { ref: '../../snapshots/other.qcow2', format: 'qcow2' })).toBe('done');
      expect((await w.img.info(top)).backingFile).toBe('../../snapshots/other.qcow2');
      expect(await w.img.same(top, before, { a: 'qcow2', b: 'raw' })).toBe(true);
      expect(await w.img.rebase(top, null)).toBe('done');
      expect((await w.img.info(top)).backingFile).toBeUndefined();
      expect(await w.img.same(top, before, { a: 'qcow2', b: 'raw' })).toBe(true);
    });

    it('answers "in use" to a rebase while a writer holds the image or its backing', async () => {
      const w = await world();
      const { base, top } = await chain(w);
      for (const held of [top, base]) {
        const release = await w.hold(held, 'qcow2');
        try {
          expect(await w.img.rebase(top, null)).toBe('in use');
        } finally {
          await release();
        }
      }
      expect((await w.img.info(top)).backingFile).toBe('../../snapshots/s/disk.qcow2');
    });

    it('checks a qcow2 image: healthy, missing, or not qcow2 at all; raw has nothing to check', async () => {
      const w = await world();
      const good = w.at('volumes/v/disk.qcow2');
      await w.img.create(good, 'qcow2', MiB);
      expect(await w.img.check(good, 'qcow2')).toEqual({ ok: true });
      expect(await w.img.check(w.at('volumes/v/none.qcow2'), 'qcow2')).toMatchObject({ ok: false });
      const junk = w.at('volumes/v/junk.qcow2');
      writeFileSync(junk, Buffer.alloc(8192, 0x41));
      expect(await w.img.check(junk, 'qcow2')).toMatchObject({ ok: false });
      expect(await w.img.check(junk, 'raw')).toEqual({ ok: true });
    });

    it('reads qemu\'s "corrupt" mark as a header bit only: check judges the metadata', async () => {
      const w = await world();
      const path = w.at('volumes/v/disk.qcow2');
      await w.img.create(path, 'qcow2', MiB);
      const fd = openSync(path, 'r+');
      writeSync(fd, Buffer.from([0x02]), 0, 1, 79); // incompatible_features bit 1
      closeSync(fd);
      expect(await w.img.check(path, 'qcow2')).toEqual({ ok: true });
      expect(await imageHeaderProblem(path, 'qcow2')).toMatch(/corrupt/);
    });

    it('measures a flat copy: raw needs the virtual size, qcow2 grows with the data', async () => {
      const w = await world();
      const path = w.at('volumes/v/disk.qcow2');
      await w.img.create(path, 'qcow2', 8n * MiB);
      expect(await w.img.measure(path, 'qcow2', 'raw')).toBe(8n * MiB);
      const empty = await w.img.measure(path, 'qcow2', 'qcow2');
      await w.write(path, 'qcow2', 0, Number(MiB), 0x44);
      const full = await w.img.measure(path, 'qcow2', 'qcow2');
      expect(full - empty).toBe(MiB);
      expect(empty).toBeLessThan(MiB);
    });
  });
}
