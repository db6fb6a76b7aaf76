/**
 * Faults under a running controller (issue 16): a share unmounted within the
 * health cache window, a share that vanishes in the middle of a create, kill -9
 * during a preallocated create, and space freed by a delete. The answers must
 * never be success or NOT_FOUND from a stale view, and nothing may be left
 * holding space or running.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { codeOf } from '../helpers/client.js';
import { createRequest, MiB, mountCap } from '../helpers/csi.js';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { startDriver, type Driver } from '../helpers/server.js';

/** Live (not zombie) qemu-img processes whose argv names something under `path`. */
function toolsOn(path: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (state !== 'Z' && (argv[0] ?? '').endsWith('qemu-img') && argv.some((a) => a.includes(path))) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

const until = async (what: () => boolean): Promise<void> => {
  while (!what()) await new Promise((r) => setTimeout(r, 5));
};
const mounted = (path: string) =>
  readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === path);
/** Entries of the temp area other than health probes. */
const work = (share: Scratch) => readdirSync(join(share.path, 'filedriver/tmp')).filter((e) => !e.startsWith('.probe-'));

describe.skipIf(!isRoot)('a share that goes away under the controller', () => {
  let share: Scratch;
  let dir: string;
  const drivers: Driver[] = [];
  const helpers: ChildProcess[] = [];
  const image = () => join(dirname(share.path), 'fs.img');
  const remount = () => {
    if (!mounted(share.path)) execFileSync('mount', ['-o', 'loop', image(), share.path]);
  };
  const start = async (args: string[] = []) => {
    const d = await startDriver({ mounts: { s: share.path }, dir, args });
    drivers.push(d);
    return d;
  };

  beforeEach(() => {
    rootOnlyReason();
    share = makeScratch('ext4', 1536);
    dir = mkdtempSync(join(tmpdir(), 'fdtest-sock-'));
  });
  afterEach(async () => {
    for (const d of drivers.splice(0)) await d.stop();
    for (const h of helpers.splice(0)) if (h.exitCode === null) h.kill('SIGKILL');
    remount();
    share.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers UNAVAILABLE, and deletes nothing, for a share unmounted within the health cache window', async () => {
    const d = await start(['--health-cache-seconds', '300']);
    await d.client.controller('CreateVolume', createRequest('pvc-stale', { parameters: { format: 'raw' } }));
    expect((await d.client.controller('ControllerGetVolume', { volume_id: 'pvc-stale' })).volume.volume_id).toBe('pvc-stale');
    execFileSync('umount', [share.path]);
    // The cache still says "mounted"; the bare mountpoint reads as if the volume were gone.
    const calls = {
      DeleteVolume: { volume_id: 'pvc-stale' },
      ControllerGetVolume: { volume_id: 'pvc-stale' },
      ControllerPublishVolume: { volume_id: 'pvc-stale', node_id: 'node-a', volume_capability: mountCap(), readonly: false },
      ControllerExpandVolume: { volume_id: 'pvc-stale', capacity_range: { required_bytes: String(128n * MiB) } },
    };
    for (const [method, req] of Object.entries(calls))
      expect([method, await codeOf(d.client.controller(method, req))]).toEqual([method, status.UNAVAILABLE]);
    expect(readdirSync(share.path)).toEqual([]);
    remount();
    expect(existsSync(join(share.path, 'filedriver/volumes/pvc-stale/disk.raw'))).toBe(true);
    // Back: the same calls are answered from the share again.
    await d.client.controller('DeleteVolume', { volume_id: 'pvc-stale' });
    expect(existsSync(join(share.path, 'filedriver/volumes/pvc-stale'))).toBe(false);
  });

  it('answers UNAVAILABLE to a create whose share vanishes mid-build, and removes its half-built entry once the share is back', async () => {
    const d = await start(['--health-cache-seconds', '0']);
    const req = createRequest('pvc-vanish', {
      parameters: { format: 'raw', preallocation: 'full' },
      capacity_range: { required_bytes: String(1024n * MiB) },
    });
    // Holds the share's filesystem once it is detached, so it can be thawed through /proc/<pid>/cwd.
    const holder = spawn('sleep', ['600'], { cwd: join(share.path, 'filedriver'), stdio: 'ignore' });
    helpers.push(holder);
    const answer = codeOf(d.client.controller('CreateVolume', req));
    await until(() => toolsOn(share.path).length > 0);
    // Frozen, qemu-img waits in its next write; the share is detached under it, then thawed.
    execFileSync('fsfreeze', ['--freeze', share.path]);
    expect(toolsOn(share.path)).toHaveLength(1);
    execFileSync('umount', ['-l', share.path]);
    execFileSync('fsfreeze', ['--unfreeze', `/proc/${String(holder.pid)}/cwd`]);
    expect(await answer).toBe(status.UNAVAILABLE);
    expect(readdirSync(share.path)).toEqual([]);
    holder.kill('SIGKILL');
    remount();
    // The half-built image of this run is back in view until the next health check finds the share usable.
    expect(work(share)).toHaveLength(1);
    await d.client.controller('GetCapacity', {});
    expect(work(share)).toEqual([]);
    const res = await d.client.controller('CreateVolume', req);
    expect(res.volume.capacity_bytes).toBe(String(1024n * MiB));
  });

  it('leaves no image and no running tool after kill -9 mid preallocated create, and a retry right after the restart succeeds', async () => {
    const first = await start(['--health-cache-seconds', '300']);
    // 1 GiB thick on a 1.5 GiB share: a second GiB never fits, so the retry fits only if the leftover is gone.
    const req = createRequest('pvc-killed', {
      parameters: { format: 'raw', preallocation: 'full' },
      capacity_range: { required_bytes: String(1024n * MiB) },
    });
    const answer = codeOf(first.client.controller('CreateVolume', req));
    await until(() => toolsOn(share.path).length > 0);
    await first.kill();
    expect(await answer).not.toBe('OK');
    const again = await start(['--health-cache-seconds', '300']);
    expect(toolsOn(share.path)).toEqual([]);
    expect(work(share)).toEqual([]);
    expect(readdirSync(join(share.path, 'filedriver/volumes'))).toEqual([]);
    const res = await again.client.controller('CreateVolume', req);
    expect(res.volume.capacity_bytes).toBe(String(1024n * MiB));
  });

  it('sees the space a delete freed at once, with a long health cache', async () => {
    const req = (name: string) =>
      createRequest(name, { parameters: { format: 'raw', preallocation: 'falloc' }, capacity_range: { required_bytes: String(1024n * MiB) } });
    const before = await start();
    await before.client.controller('CreateVolume', req('pvc-first'));
    await before.stop();
    // A controller whose cached free space is taken with the first volume on the share.
    const d = await start(['--health-cache-seconds', '300']);
    expect(await codeOf(d.client.controller('CreateVolume', req('pvc-second')))).toBe(status.RESOURCE_EXHAUSTED);
    await d.client.controller('DeleteVolume', { volume_id: 'pvc-first' });
    const res = await d.client.controller('CreateVolume', req('pvc-second'));
    expect(res.volume.capacity_bytes).toBe(String(1024n * MiB));
  });
});
