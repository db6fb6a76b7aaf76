/**
 * What Mounts relies on from its probes, against the real ones (a tmpfs the
 * test mounts, as root) and FakeMountProbes on a plain directory: a share is a
 * mount point in mountinfo under its real path, the probe builds the driver
 * tree and leaves no probe file, space is read, and a read-only share refuses
 * the probe.
 */
import { mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Layout } from '../../src/storage/layout.js';
import type { MountProbes } from '../../src/storage/mounts.js';
import { mountAt } from '../../src/system/mountinfo.js';

export interface MountProbesSubject {
  probes: MountProbes;
  /** A share: a mounted, writable directory. */
  share: string;
  /** Makes the share read-only. */
  readOnly(): void;
  cleanup(): void;
}

export function mountProbesContract(name: string, make: () => MountProbesSubject): void {
  describe(`MountProbes contract: ${name}`, () => {
    const cleanups: (() => void)[] = [];
    afterEach(() => {
      for (const c of cleanups.splice(0).reverse()) c();
    });
    const world = () => {
      const s = make();
      cleanups.push(() => s.cleanup());
      return s;
    };

    it('finds the share in mountinfo under its real path, also when named through a link', async () => {
      const { probes, share } = world();
      const links = mkdtempSync(join(tmpdir(), 'fdtest-links-'));
      cleanups.push(() => rmSync(links, { recursive: true, force: true }));
      symlinkSync(share, join(links, 'share'));
      const real = await probes.realpath(join(links, 'share'));
      expect(real).toBe(await probes.realpath(share));
      expect(mountAt(await probes.mountInfo(), real)).toBeDefined();
    });

    it('builds the driver tree with the probe, leaves no probe file, and reads the space', async () => {
      const { probes, share } = world();
      const layout = new Layout(share);
      await probes.writeProbe(layout);
      expect(readdirSync(layout.root).sort()).toEqual(['moving', 'snapshots', 'tmp', 'volumes']);
      expect(readdirSync(layout.tmp)).toEqual([]);
      expect(await probes.sameFilesystem(share, layout.tmp)).toBe(true);
      const space = await probes.space(share);
      expect(space.totalBytes).toBeGreaterThan(0n);
      expect(space.freeBytes).toBeLessThanOrEqual(space.totalBytes);
    });

    it('fails the probe on a share that became read-only', async () => {
      const s = world();
      await s.probes.writeProbe(new Layout(s.share));
      s.readOnly();
      await expect(s.probes.writeProbe(new Layout(s.share))).rejects.toMatchObject({ code: 'EROFS' });
    });
  });
}
