/**
 * What the node relies on from QemuExports, against the real data plane
 * (qemu-storage-daemon FUSE exports, as root) and FakeQemuExports sharing
 * FakeQemuImg's locks: an idempotent start, one export per state directory,
 * qemu's image lock as qemu-img sees it, growth, the switch onto an overlay,
 * and stop/stopIn from the directory alone. Kept short:
 * test/integration/qemu-export.test.ts covers the data path.
 */
import { existsSync, mkdtempSync } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ExportHandle, QemuExports, StartOptions } from '../../src/system/qemu-export.js';
import type { QemuImg } from '../../src/system/qemu-img.js';

export interface QemuExportsSubject {
  exports: QemuExports;
  /** Makes the images, and sees qemu's locks on them. */
  img: QemuImg;
  /** A directory for the images and the exports' state directories. */
  dir: string;
  cleanup(): void;
}

const MiB = 1n << 20n;
const T1 = '00000000000000a1';
const T2 = '00000000000000a2';

export function qemuExportsContract(name: string, make: () => QemuExportsSubject): void {
  describe(`QemuExports contract: ${name}`, () => {
    let subject: QemuExportsSubject | undefined;
    const started: { stateDir: string; tag: string }[] = [];
    afterEach(async () => {
      const s = subject;
      subject = undefined;
      if (s === undefined) return;
      try {
        for (const e of started.splice(0)) await s.exports.stopIn(e.stateDir, e.tag);
      } finally {
        s.cleanup();
      }
    });
    async function world() {
      subject = make();
      const s = subject;
      const dir = mkdtempSync(join(s.dir, 'fdtest-exports-'));
      const image = async (rel: string) => {
        await s.img.create(join(dir, rel), 'qcow2', 16n * MiB);
        return join(dir, rel);
      };
      const start = async (path: string, tag: string, over: Partial<StartOptions> = {}): Promise<ExportHandle> => {
        const stateDir = join(dir, `x-${tag}`);
        started.push({ stateDir, tag });
        return s.exports.start(path, { format: 'qcow2', readOnly: false, tag, stateDir, ...over });
      };
      return { ...s, dir, image, start };
    }

    it('starts once: a repeat returns the export, another image in its directory is refused; stop ends it, twice', async () => {
      const w = await world();
      const [a, b] = [await w.image('a.qcow2'), await w.image('b.qcow2')];
      const h = await w.start(a, T1);
      expect(h).toMatchObject({ image: a, format: 'qcow2', readOnly: false, exportFile: join(await realpath(join(w.dir, `x-${T1}`)), 'export.raw') });
      expect(await w.exports.isAlive(h)).toBe(true);
      expect(await w.start(a, T1)).toMatchObject({ id: h.id, exportFile: h.exportFile });
      await expect(w.start(b, T1)).rejects.toMatchObject({ kind: 'precondition' });
      expect(await w.exports.top(h)).toBe(`t${T1}`);
      expect(await w.exports.jobs(h)).toEqual([]);
      await w.exports.stop(h);
      expect(await w.exports.isAlive(h)).toBe(false);
      expect(existsSync(join(w.dir, `x-${T1}`, 'export.json'))).toBe(false);
      await w.exports.stop(h);
    });

    it("holds qemu's write lock: another writer or a reader is refused as imageLocked, qemu-img sees it; readers share", async () => {
      const w = await world();
      const a = await w.image('a.qcow2');
      const writer = await w.start(a, T1);
      expect(await w.img.inUse(a, 'qcow2')).toBe(true);
      await expect(w.start(a, T2)).rejects.toMatchObject({ kind: 'precondition', reason: 'imageLocked' });
      await expect(w.start(a, T2, { readOnly: true })).rejects.toMatchObject({ kind: 'precondition', reason: 'imageLocked' });
      await w.exports.stop(writer);
      expect(await w.img.inUse(a, 'qcow2')).toBe(false);
      const [r1, r2] = [await w.start(a, T1, { readOnly: true }), await w.start(a, T2, { readOnly: true })];
      expect([await w.exports.isAlive(r1), await w.exports.isAlive(r2)]).toEqual([true, true]);
      await expect(w.exports.resize(r1, 32n * MiB)).rejects.toMatchObject({ kind: 'precondition' });
    });

    it('grows the image it serves, never shrinks it', async () => {
      const w = await world();
      const a = await w.image('a.qcow2');
      const h = await w.start(a, T1);
      await w.exports.resize(h, 32n * MiB);
      expect((await w.img.info(a, 'qcow2')).virtualSize).toBe(32n * MiB);
      await expect(w.exports.resize(h, 16n * MiB)).rejects.toMatchObject({ kind: 'outOfRange' });
    });

    it('moves its writes onto an overlay, idempotently, and the write lock with them; a stream into its top is refused', async () => {
      const w = await world();
      const a = await w.image('a.qcow2');
      const h = await w.start(a, T1);
      const overlay = join(w.dir, 'top.qcow2');
      await w.img.createOverlay(overlay, 'a.qcow2', 'qcow2', 16n * MiB, { unsafe: true });
      const node = `l${T1}000000000001`;
      await w.exports.switchTo(h, overlay, node);
      await w.exports.switchTo(h, overlay, node);
      expect(await w.exports.top(h)).toBe(node);
      expect(await w.img.inUse(overlay, 'qcow2')).toBe(true);
      expect(await w.img.inUse(a, 'qcow2')).toBe(false);
      await expect(w.exports.stream(h, { id: `m${T1}000000000001`, device: node })).rejects.toMatchObject({ kind: 'internal' });
      expect(await w.exports.jobs(h)).toEqual([]);
    });

    it('stops an export from its state directory alone (a crash before it was recorded)', async () => {
      const w = await world();
      const h = await w.start(await w.image('a.qcow2'), T1);
      await w.exports.stopIn(join(w.dir, `x-${T1}`), T1);
      expect(await w.exports.isAlive(h)).toBe(false);
      await w.exports.stopIn(join(w.dir, `x-${T2}`), T2);
    });
  });
}
