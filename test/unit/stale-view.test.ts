/**
 * Answers that depend on a share being absent come from a fresh look, and
 * errors meaning "the share went away" are UNAVAILABLE (issue 16); a zombie
 * counts as a dead process for leftovers in the temp area.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { hostname } from 'node:os';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { findOnMounts } from '../../src/storage/find.js';
import { whenShareGone } from '../../src/storage/gone.js';
import { Mounts, type MountProbes } from '../../src/storage/mounts.js';
import { isAlive, leftover } from '../../src/storage/whole.js';
import { CommandFailed } from '../../src/system/command.js';
import { parseMountInfo } from '../../src/system/mountinfo.js';

const log = pino({ level: 'silent' });

/** A share at /srv/a whose mountedness the test flips; health cached for a minute. */
function share() {
  const state = { mounted: true, checks: 0 };
  const probes: MountProbes = {
    async mountInfo() {
      return parseMountInfo(state.mounted ? '30 1 0:9 / /srv/a rw - nfs4 filer:/x rw\n' : '');
    },
    realpath: async (p) => p,
    async writeProbe() {
      state.checks++;
    },
    space: async () => ({ freeBytes: 100n, totalBytes: 200n }),
    sameFilesystem: async () => true,
  };
  return { state, mounts: new Mounts([{ name: 'a', path: '/srv/a' }], probes, 60_000, log) };
}

const errno = (code: string, path: string) => Object.assign(new Error(`${code}: ${path}`), { code, path });

describe('a stale view of a share', () => {
  it('answers UNAVAILABLE, not "not found", for a share unmounted within the cache window', async () => {
    const { state, mounts } = share();
    expect((await mounts.health('a')).mounted).toBe(true);
    state.mounted = false; // the cache still says mounted; the read sees the bare mountpoint
    await expect(findOnMounts(mounts, 'volume v', async () => undefined)).rejects.toMatchObject({
      kind: 'unavailable',
      message: expect.stringMatching(/not a mount point/),
    });
  });

  it('answers "not found" after a fresh check that finds the share still there', async () => {
    const { state, mounts } = share();
    await mounts.health('a');
    expect(await findOnMounts(mounts, 'volume v', async () => undefined)).toBeUndefined();
    expect(state.checks).toBe(2);
  });

  it('reads a share the cache had down and that is back', async () => {
    const { state, mounts } = share();
    state.mounted = false;
    await mounts.health('a');
    state.mounted = true;
    const found = await findOnMounts(mounts, 'volume v', async () => 'record');
    expect(found).toMatchObject({ mount: 'a', record: 'record' });
  });
});

describe('errors that mean the share went away', () => {
  it.each([['ESTALE'], ['ENOTCONN'], ['EIO']])('makes %s on a share UNAVAILABLE', async (code) => {
    const { mounts } = share();
    expect(await whenShareGone(errno(code, '/srv/a/filedriver/volumes/v/volume.json'), mounts)).toMatchObject({ kind: 'unavailable' });
  });

  it('makes ENOENT under the tree UNAVAILABLE only when the share is gone now', async () => {
    const { state, mounts } = share();
    const e = errno('ENOENT', '/srv/a/filedriver/tmp/h_1_x/volume.json');
    expect(await whenShareGone(e, mounts)).toBe(e);
    state.mounted = false;
    expect(await whenShareGone(e, mounts)).toMatchObject({
      kind: 'unavailable',
      message: expect.stringMatching(/mount a .* went away during the call/),
    });
    const tool = new CommandFailed(
      ['qemu-img', 'create', '-f', 'raw', '/srv/a/filedriver/tmp/h_1_x/disk.raw', '1G'],
      1,
      'Could not create: No such file or directory',
    );
    expect(await whenShareGone(tool, mounts)).toMatchObject({ kind: 'unavailable' });
  });

  it('leaves errors elsewhere alone', async () => {
    const { state, mounts } = share();
    state.mounted = false;
    for (const e of [errno('ENOENT', '/etc/x'), errno('EIO', '/srv/ab/x'), errno('ENOENT', '/srv/a/not-ours'), new Error('plain')]) {
      expect(await whenShareGone(e, mounts)).toBe(e);
    }
  });
});

describe('leftovers of dead processes', () => {
  const started: number[] = [];
  afterAll(() => {
    for (const pid of started) process.kill(pid, 'SIGKILL');
  });

  it('counts a zombie as dead (kill(pid, 0) succeeds on one)', async () => {
    // sh starts a child that exits once sh has become `sleep` ($$ is sh's pid in the subshell too), which never reaps it.
    const script = '(while [ "$(cat /proc/$$/comm)" = sh ]; do sleep 0.01; done) & echo $!; exec sleep 300';
    const sh = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'ignore'] });
    if (sh.pid !== undefined) started.push(sh.pid);
    const zombie = Number(await new Promise<string>((resolve) => sh.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()))));
    const state = () => {
      const s = readFileSync(`/proc/${zombie}/stat`, 'utf8');
      return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
    };
    while (state() !== 'Z') await new Promise((r) => setTimeout(r, 5));
    expect(() => process.kill(zombie, 0)).not.toThrow();
    expect(isAlive(zombie)).toBe(false);
    expect(leftover(`${hostname()}_${zombie}_abc`, Date.now()).removable).toBe(true);
    expect(isAlive(sh.pid ?? 0)).toBe(true);
    expect(leftover(`${hostname()}_${String(sh.pid)}_abc`, Date.now()).removable).toBe(false);
  });
});

describe('start-up clean-up of the temp area', () => {
  it('removes the probe file and the work of a killed process, and keeps live work and its own probes', async () => {
    const { mkdtempSync, mkdirSync, readdirSync, rmSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { cleanTemp } = await import('../../src/storage/whole.js');
    const tmp = mkdtempSync(join(tmpdir(), 'fdtest-unit-'));
    try {
      const host = hostname();
      const dead = 2 ** 22 + 12345; // above pid_max's default: no such process
      writeFileSync(join(tmp, `.probe-${host}_${dead}_aa`), '');
      mkdirSync(join(tmp, `${host}_${dead}_bb`));
      writeFileSync(join(tmp, `.probe-${host}_${process.pid}_cc`), '');
      mkdirSync(join(tmp, `${host}_1_dd`)); // init: alive
      expect(await cleanTemp(tmp)).toBe(2);
      expect(readdirSync(tmp).sort()).toEqual([`.probe-${host}_${process.pid}_cc`, `${host}_1_dd`]);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('building and removing whole while the share goes away', () => {
  it('answers UNAVAILABLE for a removal whose temp area is gone, and removes a half-built entry once it is back', async () => {
    const { mkdirSync, mkdtempSync, existsSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { buildWhole, removeWhole, sweepOrphans } = await import('../../src/storage/whole.js');
    const root = mkdtempSync(join(tmpdir(), 'fdtest-unit-'));
    const tmp = join(root, 'tmp');
    try {
      await expect(removeWhole(tmp, join(root, 'volumes', 'v'))).rejects.toMatchObject({ kind: 'unavailable' });
      mkdirSync(tmp);
      let name = '';
      // The share goes away mid-build: the work directory and tmp/ vanish with it.
      const build = buildWhole(tmp, join(root, 'v'), async (dir) => {
        name = basename(dir);
        rmSync(tmp, { recursive: true });
        throw Object.assign(new Error('ENOENT: gone'), { code: 'ENOENT', path: join(dir, 'disk.raw') });
      });
      await expect(build).rejects.toMatchObject({ code: 'ENOENT' });
      // The share is back, with the half-built entry on it.
      mkdirSync(join(tmp, name), { recursive: true });
      expect(await sweepOrphans(tmp)).toBe(1);
      expect(existsSync(join(tmp, name))).toBe(false);
      expect(await sweepOrphans(tmp)).toBe(0);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
