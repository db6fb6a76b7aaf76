import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { Mounts, type MountProbes } from '../../src/storage/mounts.js';
import { parseMountInfo } from '../../src/system/mountinfo.js';

function fakeProbes(opts: { mounted: string[]; writable: boolean; hang?: Promise<void>; unmountDuringProbe?: boolean }) {
  const calls = { mountInfo: 0, writeProbe: 0 };
  const probes: MountProbes = {
    async mountInfo() {
      calls.mountInfo++;
      const mounted = opts.unmountDuringProbe === true && calls.writeProbe > 0 ? [] : opts.mounted;
      return parseMountInfo(mounted.map((p, i) => `${i + 30} 1 0:${i} / ${p} rw - nfs4 filer:/x rw`).join('\n'));
    },
    realpath: async (p) => p,
    async writeProbe() {
      calls.writeProbe++;
      await opts.hang;
      if (!opts.writable) throw new Error('EROFS: read-only file system');
    },
    space: async () => ({ freeBytes: 100n, totalBytes: 200n }),
    sameFilesystem: async () => true,
  };
  return { probes, calls };
}

const log = pino({ level: 'silent' });

describe('mount health', () => {
  it('is usable only when mounted and writable, and never probes an unmounted path', async () => {
    const { probes, calls } = fakeProbes({ mounted: ['/srv/a'], writable: true });
    const mounts = new Mounts(
      [
        { name: 'a', path: '/srv/a' },
        { name: 'b', path: '/srv/b' },
      ],
      probes,
      0,
      log,
    );
    const [a, b] = await mounts.all();
    expect(a).toMatchObject({ usable: true, mounted: true, freeBytes: 100n });
    expect(b).toMatchObject({ usable: false, mounted: false, reason: expect.stringMatching(/not a mount point/) });
    expect(calls.writeProbe).toBe(1);
  });

  it('reports a read-only mount as mounted but unusable', async () => {
    const { probes } = fakeProbes({ mounted: ['/srv/a'], writable: false });
    const mounts = new Mounts([{ name: 'a', path: '/srv/a' }], probes, 0, log);
    expect(await mounts.health('a')).toMatchObject({ mounted: true, usable: false, reason: expect.stringMatching(/EROFS/) });
    await expect(mounts.requireUsable('a')).rejects.toMatchObject({ kind: 'unavailable' });
  });

  it('reuses a health check within the cache window', async () => {
    const { probes, calls } = fakeProbes({ mounted: ['/srv/a'], writable: true });
    const mounts = new Mounts([{ name: 'a', path: '/srv/a' }], probes, 60_000, log);
    await mounts.health('a');
    await mounts.health('a');
    await mounts.usable();
    expect(calls.mountInfo).toBe(2);
    mounts.invalidate('a');
    await mounts.health('a');
    expect(calls.mountInfo).toBe(4); // each check reads it twice: before and after the probe
  });

  it('runs one check at a time per mount, even with no cache', async () => {
    const { probes, calls } = fakeProbes({ mounted: ['/srv/a'], writable: true });
    const mounts = new Mounts([{ name: 'a', path: '/srv/a' }], probes, 0, log);
    const all = await Promise.all(Array.from({ length: 8 }, () => mounts.health('a')));
    expect(all.every((h) => h.usable)).toBe(true);
    expect(calls.writeProbe).toBe(1);
  });

  it('reports a hung share unusable after the timeout and starts no second check while it hangs', async () => {
    let release = (): void => undefined;
    const hang = new Promise<void>((r) => (release = r));
    const { probes, calls } = fakeProbes({ mounted: ['/srv/a'], writable: true, hang });
    const mounts = new Mounts([{ name: 'a', path: '/srv/a' }], probes, 0, log, 50);
    expect(await mounts.health('a')).toMatchObject({ usable: false, reason: expect.stringMatching(/took over .* hung/) });
    expect(await mounts.health('a')).toMatchObject({ usable: false, reason: expect.stringMatching(/has not returned .* hung/) });
    expect(calls.writeProbe).toBe(1);
    release();
    await new Promise((r) => setImmediate(r));
    expect(await mounts.health('a')).toMatchObject({ usable: true });
  });

  it('never uses a share that was unmounted while its probe ran', async () => {
    const { probes } = fakeProbes({ mounted: ['/srv/a'], writable: true, unmountDuringProbe: true });
    const mounts = new Mounts([{ name: 'a', path: '/srv/a' }], probes, 0, log);
    expect(await mounts.health('a')).toMatchObject({ usable: false, reason: expect.stringMatching(/stopped being a mount point/) });
  });
});
