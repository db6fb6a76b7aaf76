/**
 * The node's data plane end to end, through a real driver process: fio's
 * crc32c verify through published qcow2 volumes (block and filesystem, 4
 * writers each), and a node plugin killed with its whole process group while
 * fio writes, replaced by a new one that takes the export back and unstages it
 * cleanly. The data plane (one qemu-storage-daemon per node) is not in the
 * plugin's process group, so the writes never see an error.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blockCap, createRequest, mountCap } from '../helpers/csi.js';
import { kubeletPaths, planePid, releaseRig, useNodeCleanup, volumeLeftovers } from '../helpers/node.js';
import { rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { MAIN, startDriver, type Driver } from '../helpers/server.js';
import { ifMade } from '../helpers/teardown.js';
import { exited, until } from '../helpers/wait.js';

/**
 * fio writing with crc32c checksums in every block, then reading all back and
 * checking them: `jobs` writers, each on its own slice of `sizeMiB`.
 */
function fioArgs(file: string, sizeMiB: number, jobs: number): string[] {
  const slice = `${Math.floor(sizeMiB / jobs)}M`;
  return [
    '--name=verify',
    `--filename=${file}`,
    `--size=${slice}`,
    `--offset_increment=${slice}`,
    '--rw=randwrite',
    '--bs=4k',
    '--direct=1',
    '--ioengine=libaio',
    '--iodepth=16',
    `--numjobs=${jobs}`,
    '--verify=crc32c',
    '--verify_fatal=1',
    '--do_verify=1',
    '--verify_state_save=0',
    '--group_reporting',
    '--output-format=json',
  ];
}

interface FioResult {
  code: number | null;
  out: string;
  err: string;
}

function startFio(args: string[]): { done: Promise<FioResult>; pid: number } {
  const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<FioResult>((resolve) => child.once('exit', (code) => resolve({ code, out, err })));
  return { done, pid: child.pid ?? 0 };
}

/** fio's JSON: any error, and how many bytes were written and verified-read. */
function summary(r: FioResult): { error: number; written: number; read: number } {
  const job = (JSON.parse(r.out.slice(r.out.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] })
    .jobs[0];
  return { error: job?.error ?? -1, written: job?.write.io_bytes ?? 0, read: job?.read.io_bytes ?? 0 };
}

describe.skipIf(rootOnlyReason() !== undefined)('the data plane under I/O', () => {
  let share: Scratch;
  let kubelet: string;
  let sockets: string;
  let driver: Driver;
  const start = () => startDriver({ mounts: { s: share.path }, args: ['--kubelet-dir', kubelet], dir: sockets, group: true });
  const scope = () => ({ driver, kubelet, shares: [share.path] });
  const cleanup = useNodeCleanup(scope);
  const paths = (id: string) => kubeletPaths(kubelet, id);

  beforeAll(async () => {
    share = makeScratch('xfs', 1024);
    kubelet = mkdtempSync(join(tmpdir(), 'fdtest-kubelet-'));
    sockets = mkdtempSync(join(tmpdir(), 'fdtest-sock-'));
    driver = await start();
  });
  afterAll(async () => {
    await ifMade(driver)?.stop();
    releaseRig(kubelet, share);
  });

  async function provision(id: string, cap: object, sizeMiB = 256): Promise<void> {
    await driver.client.controller(
      'CreateVolume',
      createRequest(id, {
        parameters: { format: 'qcow2' },
        volume_capabilities: [cap],
        capacity_range: { required_bytes: String(sizeMiB * 1024 * 1024) },
      }),
    );
  }

  /** Stages and publishes `id` as a pod would use it; returns the block device or the mounted directory. */
  async function attach(id: string, cap: object, block: boolean): Promise<string> {
    const p = paths(id);
    cleanup.staged(id, p.staging);
    await driver.client.node('NodeStageVolume', { volume_id: id, staging_target_path: p.staging, volume_capability: cap });
    const target = block ? p.device : p.target;
    cleanup.published(id, target);
    await driver.client.node('NodePublishVolume', { volume_id: id, staging_target_path: p.staging, target_path: target, volume_capability: cap });
    return target;
  }

  async function detach(id: string, block: boolean): Promise<void> {
    const p = paths(id);
    await driver.client.node('NodeUnpublishVolume', { volume_id: id, target_path: block ? p.device : p.target });
    await driver.client.node('NodeUnstageVolume', { volume_id: id, staging_target_path: p.staging });
    expect(volumeLeftovers(scope(), id)).toEqual([]);
  }

  const record = (id: string) =>
    JSON.parse(readFileSync(join(kubelet, 'plugins/filedriver.dev/volumes', id, 'stage.json'), 'utf8')) as {
      export: { loopDirectIo?: boolean; qemu?: string };
    };

  it('fio crc32c verify through a qcow2 block volume, 4 writers: clean', async () => {
    await provision('pvc-verify-block', blockCap());
    const device = await attach('pvc-verify-block', blockCap(), true);
    const r = await startFio(fioArgs(device, 128, 4)).done;
    expect(r.code, r.err).toBe(0);
    expect(summary(r)).toMatchObject({ error: 0, written: 128 * 1024 * 1024, read: 128 * 1024 * 1024 });
    await detach('pvc-verify-block', true);
  });

  it('fio crc32c verify through a qcow2 ext4 volume, 4 writers, then e2fsck: clean', async () => {
    await provision('pvc-verify-fs', mountCap('SINGLE_NODE_WRITER', 'ext4'));
    const dir = await attach('pvc-verify-fs', mountCap('SINGLE_NODE_WRITER', 'ext4'), false);
    const r = await startFio(fioArgs(join(dir, 'fio.dat'), 128, 4)).done;
    expect(r.code, r.err).toBe(0);
    expect(summary(r)).toMatchObject({ error: 0, written: 128 * 1024 * 1024, read: 128 * 1024 * 1024 });
    await detach('pvc-verify-fs', false);
    // The filesystem as the image holds it: a fresh loop over a fresh export would be the driver again, so ask qemu-img.
    const image = join(share.path, 'filedriver/volumes/pvc-verify-fs/disk.qcow2');
    const raw = join(share.path, 'fsck.raw');
    execFileSync('qemu-img', ['convert', '-O', 'raw', image, raw]);
    execFileSync('e2fsck', ['-fn', raw], { stdio: 'pipe' });
    execFileSync('rm', ['-f', raw]);
  });

  it('a node plugin killed with its process group while fio writes: no I/O error, data verified, the new plugin unstages cleanly', async () => {
    const id = 'pvc-restart';
    await provision(id, blockCap());
    const device = await attach(id, blockCap(), true);
    const exportBefore = record(id).export;
    const plane = planePid({ kubelet }) ?? 0;
    const fio = startFio(fioArgs(device, 128, 2));
    // Kill once fio has written something: the volume is busy when the plugin goes.
    const image = join(share.path, 'filedriver/volumes', id, 'disk.qcow2');
    const allocated = () =>
      (JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', image], { encoding: 'utf8' })) as { 'actual-size': number })[
        'actual-size'
      ];
    const empty = allocated();
    await until('fio has written into the image', () => allocated() > empty + 4 * 1024 * 1024);
    await driver.killGroup();
    expect(exited(plane)).toBe(false); // the data plane is not the plugin's
    driver = await start();
    // The new plugin finds the export where the old one left it, and reports it healthy.
    const stats = await driver.client.node('NodeGetVolumeStats', { volume_id: id, volume_path: device });
    expect(stats.volume_condition).toMatchObject({ abnormal: false });
    const r = await fio.done;
    expect(r.code, r.err).toBe(0);
    expect(summary(r)).toMatchObject({ error: 0, written: 128 * 1024 * 1024, read: 128 * 1024 * 1024 });
    expect(record(id).export).toEqual(exportBefore);
    await detach(id, true);
    expect(planePid({ kubelet })).toBe(plane);
  });
});

describe.skipIf(rootOnlyReason() !== undefined)("filedriver data-plane (the chart's DaemonSet) with a node plugin in external mode", () => {
  it("serves the plugin's qcow2 volumes, refuses a second daemon on its socket, and ends on SIGTERM", async () => {
    const share = makeScratch('xfs', 512);
    const kubelet = mkdtempSync(join(tmpdir(), 'fdtest-kubelet-'));
    const socket = join(kubelet, 'plugins/filedriver.dev/dp/qmp.sock');
    const plane = spawn(process.execPath, [MAIN, 'data-plane', '--kubelet-dir', kubelet, '--threads', '2'], { stdio: 'ignore' });
    let driver: Driver | undefined;
    try {
      await until('the data plane listens', () => existsSync(socket));
      const second = spawnSync(process.execPath, [MAIN, 'data-plane', '--kubelet-dir', kubelet], { encoding: 'utf8', timeout: 30_000 });
      expect(second.status).toBe(1);
      expect(second.stderr).toMatch(/already answers at .*qmp\.sock/);

      driver = await startDriver({ mounts: { s: share.path }, args: ['--kubelet-dir', kubelet, '--data-plane', 'external'] });
      const p = kubeletPaths(kubelet, 'pvc-external');
      await driver.client.controller(
        'CreateVolume',
        createRequest('pvc-external', { parameters: { format: 'qcow2' }, volume_capabilities: [blockCap()] }),
      );
      await driver.client.node('NodeStageVolume', { volume_id: 'pvc-external', staging_target_path: p.staging, volume_capability: blockCap() });
      const stage = JSON.parse(readFileSync(join(kubelet, 'plugins/filedriver.dev/volumes/pvc-external/stage.json'), 'utf8')) as {
        export: { qmpSocket: string };
      };
      expect(stage.export.qmpSocket).toBe(socket);
      await driver.client.node('NodeUnstageVolume', { volume_id: 'pvc-external', staging_target_path: p.staging });
      expect(await driver.stop()).toBe(0);
      driver = undefined;
      expect(exited(plane.pid ?? 0)).toBe(false); // an external data plane is not the plugin's to stop
    } finally {
      await ifMade(driver)?.stop();
      const gone = new Promise((r) => plane.once('exit', r));
      plane.kill('SIGTERM');
      await gone;
      releaseRig(kubelet, share);
    }
  });
});
