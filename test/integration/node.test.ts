/**
 * The Node service through the real server: real loop devices, qemu exports,
 * mkfs and mounts. Data written through a published volume survives
 * unstage/stage, and nothing is left behind.
 */
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
  fsyncSync,
  statfsSync,
  existsSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf } from '../helpers/client.js';
import { blockCap, createRequest, MiB, mountCap } from '../helpers/csi.js';
import { isDataPlane, kubeletPaths, planePid, releaseRig, useNodeCleanup, volumeLeftovers, volumeMatcher } from '../helpers/node.js';
import { holders, sweepHolders } from '../helpers/holders.js';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { startDriver, type Driver } from '../helpers/server.js';
import { ifMade } from '../helpers/teardown.js';
import { untilExited } from '../helpers/wait.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe.skipIf(!isRoot)('node service', () => {
  let share: Scratch;
  let kubelet: string;
  let driver: Driver;
  // What still holds this volume: its own paths only, so one test's failure is not every later test's.
  const leftFor = (id: string) => volumeLeftovers({ kubelet, shares: [share.path] }, id);
  // Thin volumes here grow past the scratch share's size: allow over-commit.
  const start = () => startDriver({ mounts: { s: share.path }, args: ['--kubelet-dir', kubelet, '--over-subscription', '10'] });

  beforeAll(async () => {
    rootOnlyReason();
    share = makeScratch('xfs', 2048);
    kubelet = mkdtempSync(join(tmpdir(), 'fdtest-kubelet-'));
    driver = await start();
  });
  afterAll(async () => {
    await ifMade(driver)?.stop();
    releaseRig(kubelet, share);
  });
  // After each test, whatever happened: what it staged and published is undone, and checked gone.
  const cleanup = useNodeCleanup(() => ({ driver, kubelet, shares: [share.path] }));

  async function provision(name: string, format: string, cap: object, sizeBytes = 64n * MiB) {
    const res = await driver.client.controller(
      'CreateVolume',
      createRequest(name, { parameters: { format }, volume_capabilities: [cap], capacity_range: { required_bytes: String(sizeBytes) } }),
    );
    const pub = await driver.client.controller('ControllerPublishVolume', { volume_id: name, node_id: 'node-a', volume_capability: cap });
    return { id: res.volume.volume_id as string, context: pub.publish_context as Record<string, string> };
  }
  const stage = (id: string, cap: object, context: Record<string, string> = {}) => {
    cleanup.staged(id, kubeletPaths(kubelet, id).staging);
    return driver.client.node('NodeStageVolume', {
      volume_id: id,
      staging_target_path: kubeletPaths(kubelet, id).staging,
      volume_capability: cap,
      publish_context: context,
    });
  };
  const unstage = (id: string) => driver.client.node('NodeUnstageVolume', { volume_id: id, staging_target_path: kubeletPaths(kubelet, id).staging });
  const target = (id: string, block: boolean) => (block ? kubeletPaths(kubelet, id).device : kubeletPaths(kubelet, id).target);
  const publish = (id: string, cap: object, block: boolean, readonly = false) => {
    cleanup.published(id, target(id, block));
    return driver.client.node('NodePublishVolume', {
      volume_id: id,
      staging_target_path: kubeletPaths(kubelet, id).staging,
      target_path: target(id, block),
      volume_capability: cap,
      readonly,
    });
  };
  const unpublish = (id: string, block: boolean) => driver.client.node('NodeUnpublishVolume', { volume_id: id, target_path: target(id, block) });

  function writeData(id: string, block: boolean, data: Buffer): void {
    if (block) {
      const fd = openSync(target(id, true), 'r+');
      writeSync(fd, data, 0, data.length, 0);
      fsyncSync(fd);
      closeSync(fd);
    } else {
      writeFileSync(join(target(id, false), 'data.bin'), data);
    }
  }
  function readData(id: string, block: boolean, length: number): Buffer {
    if (!block) return readFileSync(join(target(id, false), 'data.bin'));
    const buf = Buffer.alloc(length);
    const fd = openSync(target(id, true), 'r');
    readSync(fd, buf, 0, length, 0);
    closeSync(fd);
    return buf;
  }

  it('reports its capabilities and one topology key per configured mount', async () => {
    const caps = await driver.client.node('NodeGetCapabilities');
    expect(caps.capabilities.map((c: any) => c.rpc.type)).toEqual([
      'STAGE_UNSTAGE_VOLUME',
      'GET_VOLUME_STATS',
      'EXPAND_VOLUME',
      'VOLUME_CONDITION',
      'SINGLE_NODE_MULTI_WRITER',
    ]);
    const info = await driver.client.node('NodeGetInfo');
    expect(info).toEqual({ node_id: 'node-a', max_volumes_per_node: '0', accessible_topology: { segments: { 'filedriver.dev/mount-s': 'true' } } });
  });

  it.each([
    ['qcow2', 'mount'],
    ['raw', 'mount'],
    ['qcow2', 'block'],
    ['raw', 'block'],
  ])('keeps data of a %s %s volume across unstage and stage, and leaves nothing behind', async (format, access) => {
    const block = access === 'block';
    const cap = block ? blockCap() : mountCap();
    const name = `pvc-data-${format}-${access}`;
    const { id, context } = await provision(name, format, cap);
    const data = randomBytes(Number(MiB));
    await stage(id, cap, context);
    await stage(id, cap, context); // idempotent
    await publish(id, cap, block);
    await publish(id, cap, block); // idempotent
    writeData(id, block, data);
    await unpublish(id, block);
    await unpublish(id, block);
    await unstage(id);
    await unstage(id);
    expect(leftFor(id)).toEqual([]);

    await stage(id, cap, context);
    await publish(id, cap, block);
    expect(sha(readData(id, block, data.length))).toBe(sha(data));
    await unpublish(id, block);
    await unstage(id);
    expect(leftFor(id)).toEqual([]);
    expect(existsSync(target(id, block))).toBe(false);
  });

  it("stages a linked clone, reading its snapshot's files through the qcow2 backing chain", async () => {
    const cap = mountCap();
    const { id, context } = await provision('pvc-origin', 'qcow2', cap);
    await stage(id, cap, context);
    await publish(id, cap, false);
    writeFileSync(join(target(id, false), 'hello.txt'), 'from the origin');
    await unpublish(id, false);
    await unstage(id);
    await driver.client.controller('CreateSnapshot', { name: 'snap-origin', source_volume_id: id });
    await driver.client.controller(
      'CreateVolume',
      createRequest('pvc-child', {
        volume_capabilities: [cap],
        capacity_range: { required_bytes: String(96n * MiB) },
        volume_content_source: { snapshot: { snapshot_id: 'snap-origin' } },
      }),
    );
    await stage('pvc-child', cap);
    await publish('pvc-child', cap, false);
    expect(readFileSync(join(target('pvc-child', false), 'hello.txt'), 'utf8')).toBe('from the origin');
    writeFileSync(join(target('pvc-child', false), 'hello.txt'), 'changed in the clone');
    await unpublish('pvc-child', false);
    await unstage('pvc-child');
    // The origin is untouched by the clone's writes.
    await stage(id, cap, context);
    await publish(id, cap, false);
    expect(readFileSync(join(target(id, false), 'hello.txt'), 'utf8')).toBe('from the origin');
    await unpublish(id, false);
    await unstage(id);
    expect(leftFor(id)).toEqual([]);
    expect(leftFor('pvc-child')).toEqual([]);
  });

  it('reports a qcow2 volume whose export died as abnormal, and still unstages it cleanly', async () => {
    const cap = blockCap();
    const { id, context } = await provision('pvc-dead-export', 'qcow2', cap);
    await stage(id, cap, context);
    await publish(id, cap, true);
    // The node's data plane (one qemu-storage-daemon) dies with every export in it.
    const pid = planePid({ kubelet }) ?? 0;
    process.kill(pid, 'SIGKILL');
    // A killed process stays runnable until the scheduler lets it die: ask once it has.
    await untilExited(pid);
    const stats = await driver.client.node('NodeGetVolumeStats', { volume_id: id, volume_path: target(id, true) });
    expect(stats.volume_condition.abnormal).toBe(true);
    expect(stats.volume_condition.message).toMatch(/not running/);
    await unpublish(id, true);
    await unstage(id);
    expect(leftFor(id)).toEqual([]);
  });

  it('publishes read-only when asked, refusing writes', async () => {
    const cap = mountCap();
    const { id, context } = await provision('pvc-ro', 'raw', cap);
    await stage(id, cap, context);
    await publish(id, cap, false, true);
    expect(() => writeFileSync(join(target(id, false), 'x'), 'no')).toThrow(/EROFS|read-only/);
    await unpublish(id, false);
    await unstage(id);
    expect(leftFor(id)).toEqual([]);
  });

  it.each([
    ['a filesystem of another type', ['mkfs.xfs', '-q', '-f'], /xfs filesystem/],
    ['an unknown signature', ['mkswap'], /refusing to format/],
  ])('never formats over %s', async (_what, mkfs, message) => {
    const cap = mountCap('SINGLE_NODE_WRITER', 'ext4');
    const name = `pvc-foreign-${mkfs[0]}`;
    // mkfs.xfs needs 300 MiB at least.
    const { id, context } = await provision(name, 'raw', cap, 320n * MiB);
    const image = join(share.path, 'filedriver/volumes', id, 'disk.raw');
    execFileSync(mkfs[0]!, [...mkfs.slice(1), image], { stdio: 'ignore' });
    const before = execFileSync('blkid', ['-p', '-o', 'export', image], { encoding: 'utf8' });
    const err = await stage(id, cap, context).catch((e: unknown) => e as { code: number; details: string });
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toMatch(message);
    expect(execFileSync('blkid', ['-p', '-o', 'export', image], { encoding: 'utf8' })).toBe(before);
    expect(leftFor(id)).toEqual([]);
  });

  it.each([['qcow2'], ['raw']])('grows a published %s filesystem online', async (format) => {
    const cap = mountCap('SINGLE_NODE_WRITER', 'xfs');
    const { id, context } = await provision(`pvc-grow-${format}`, format, cap, 320n * MiB);
    await stage(id, cap, context);
    await publish(id, cap, false);
    const before = statfsSync(target(id, false));
    const grown = await driver.client.controller('ControllerExpandVolume', { volume_id: id, capacity_range: { required_bytes: String(960n * MiB) } });
    expect(grown.node_expansion_required).toBe(true);
    const res = await driver.client.node('NodeExpandVolume', {
      volume_id: id,
      volume_path: target(id, false),
      staging_target_path: kubeletPaths(kubelet, id).staging,
      capacity_range: { required_bytes: String(960n * MiB) },
      volume_capability: cap,
    });
    expect(res.capacity_bytes).toBe(String(960n * MiB));
    const after = statfsSync(target(id, false));
    expect(after.blocks * after.bsize).toBeGreaterThan(2.5 * before.blocks * before.bsize);
    await unpublish(id, false);
    await unstage(id);
  });

  it('reports stats and turns abnormal when the image is removed underneath', async () => {
    const cap = mountCap();
    const { id, context } = await provision('pvc-stats', 'raw', cap);
    await stage(id, cap, context);
    await publish(id, cap, false);
    writeFileSync(join(target(id, false), 'f'), randomBytes(4 * 1024 * 1024));
    const stats = await driver.client.node('NodeGetVolumeStats', { volume_id: id, volume_path: target(id, false) });
    const bytes = stats.usage.find((u: any) => u.unit === 'BYTES');
    const inodes = stats.usage.find((u: any) => u.unit === 'INODES');
    const fs = statfsSync(target(id, false));
    expect(BigInt(bytes.total)).toBe(BigInt(fs.blocks) * BigInt(fs.bsize));
    expect(BigInt(bytes.used)).toBeGreaterThanOrEqual(4n * MiB);
    expect(BigInt(inodes.total)).toBe(BigInt(fs.files));
    expect(stats.volume_condition).toEqual({ abnormal: false, message: 'volume is healthy' });
    rmSync(join(share.path, 'filedriver/volumes', id, 'disk.raw'));
    const broken = await driver.client.node('NodeGetVolumeStats', { volume_id: id, volume_path: target(id, false) });
    expect(broken.volume_condition.abnormal).toBe(true);
    expect(broken.volume_condition.message).toMatch(/gone/);
    await unpublish(id, false);
    await unstage(id);
    expect(leftFor(id)).toEqual([]);
  });

  it("reports a block volume's size", async () => {
    const cap = blockCap();
    const { id, context } = await provision('pvc-bstats', 'qcow2', cap);
    await stage(id, cap, context);
    await publish(id, cap, true);
    const stats = await driver.client.node('NodeGetVolumeStats', { volume_id: id, volume_path: target(id, true) });
    expect(stats.usage).toEqual([{ unit: 'BYTES', total: String(64n * MiB), used: '0', available: '0' }]);
    await unpublish(id, true);
    await unstage(id);
  });

  it('is unstaged completely by a fresh server process (restart)', async () => {
    const cap = mountCap();
    const a = await provision('pvc-restart-q', 'qcow2', cap);
    const b = await provision('pvc-restart-r', 'raw', cap);
    for (const v of [a, b]) {
      await stage(v.id, cap, v.context);
      await publish(v.id, cap, false);
      writeFileSync(join(target(v.id, false), 'before'), 'x');
    }
    expect(await driver.stop()).toBe(0);
    driver = await start();
    for (const v of [a, b]) {
      // The pod keeps working across the restart: the kernel and the qemu daemon hold the volume.
      writeFileSync(join(target(v.id, false), 'after'), 'y');
      const stats = await driver.client.node('NodeGetVolumeStats', { volume_id: v.id, volume_path: target(v.id, false) });
      expect(stats.volume_condition.abnormal).toBe(false);
      await unpublish(v.id, false);
      await unstage(v.id);
      expect(leftFor(v.id)).toEqual([]);
    }
  });

  it.each([
    [
      'publish before stage',
      'NodePublishVolume',
      (id: string) => ({
        volume_id: id,
        staging_target_path: kubeletPaths(kubelet, id).staging,
        target_path: kubeletPaths(kubelet, id).target,
        volume_capability: mountCap(),
      }),
      status.FAILED_PRECONDITION,
    ],
    ['stats of a missing path', 'NodeGetVolumeStats', (id: string) => ({ volume_id: id, volume_path: join(kubelet, 'nope') }), status.NOT_FOUND],
    [
      'a staging path outside kubelet',
      'NodeStageVolume',
      (id: string) => ({ volume_id: id, staging_target_path: '/etc/x', volume_capability: mountCap() }),
      status.INVALID_ARGUMENT,
    ],
    [
      'a traversal target',
      'NodePublishVolume',
      (id: string) => ({
        volume_id: id,
        staging_target_path: kubeletPaths(kubelet, id).staging,
        target_path: `${kubelet}/../etc`,
        volume_capability: mountCap(),
      }),
      status.INVALID_ARGUMENT,
    ],
    [
      'no capability',
      'NodeStageVolume',
      (id: string) => ({ volume_id: id, staging_target_path: kubeletPaths(kubelet, id).staging }),
      status.INVALID_ARGUMENT,
    ],
    ['a bad id', 'NodeUnstageVolume', () => ({ volume_id: '../x', staging_target_path: join(kubelet, 'x') }), status.INVALID_ARGUMENT],
    [
      'an unknown volume',
      'NodeStageVolume',
      () => ({ volume_id: 'nope', staging_target_path: kubeletPaths(kubelet, 'nope').staging, volume_capability: mountCap() }),
      status.NOT_FOUND,
    ],
  ])('refuses %s', async (_n, method, req, code) => {
    await driver.client.controller('CreateVolume', createRequest('pvc-order'));
    expect(await codeOf(driver.client.node(method, req('pvc-order')))).toBe(code);
  });
});

describe.skipIf(!isRoot)('qemu image locks as a second fence', () => {
  it('refuses to stage a qcow2 volume a second node already has open', async () => {
    const share = makeScratch('xfs', 512);
    const kubeletA = mkdtempSync(join(tmpdir(), 'fdtest-kubelet-'));
    const kubeletB = mkdtempSync(join(tmpdir(), 'fdtest-kubelet-'));
    const a = await startDriver({ mounts: { s: share.path }, args: ['--kubelet-dir', kubeletA] });
    const b = await startDriver({ mounts: { s: share.path }, args: ['--kubelet-dir', kubeletB, '--node-id', 'node-b'] });
    try {
      const cap = blockCap();
      await a.client.controller('CreateVolume', createRequest('pvc-locked', { volume_capabilities: [cap] }));
      await a.client.controller('ControllerPublishVolume', { volume_id: 'pvc-locked', node_id: 'node-a', volume_capability: cap, readonly: false });
      const stage = (d: Driver, k: string) =>
        d.client.node('NodeStageVolume', {
          volume_id: 'pvc-locked',
          staging_target_path: kubeletPaths(k, 'pvc-locked').staging,
          volume_capability: cap,
        });
      await stage(a, kubeletA);
      // Node B skipped ControllerPublish (a lost fence): qemu's lock still stops it.
      const err = await stage(b, kubeletB).catch((e: unknown) => e as { code: number; details: string });
      expect(err.code).toBe(status.FAILED_PRECONDITION);
      expect(err.details).toMatch(/lock|in use/);
      expect(err.details).toMatch(/published to node\(s\) node-a/);
      // Node B's own paths only: node A holds the same image, legitimately.
      expect(holders((t) => t.includes(kubeletB)).filter((h) => !isDataPlane(h))).toEqual([]);
      await a.client.node('NodeUnstageVolume', { volume_id: 'pvc-locked', staging_target_path: kubeletPaths(kubeletA, 'pvc-locked').staging });
      expect(volumeLeftovers({ kubelet: kubeletA, shares: [share.path] }, 'pvc-locked')).toEqual([]);
      await a.client.controller('ControllerUnpublishVolume', { volume_id: 'pvc-locked', node_id: 'node-a' });
    } finally {
      // A failure above must not leave node A's export holding the share.
      const staging = kubeletPaths(kubeletA, 'pvc-locked').staging;
      await a.client.node('NodeUnstageVolume', { volume_id: 'pvc-locked', staging_target_path: staging }).catch(() => undefined);
      sweepHolders(volumeMatcher({ kubelet: kubeletA, shares: [share.path] }, 'pvc-locked'));
      await a.stop();
      await b.stop();
      share.cleanup();
      rmSync(kubeletA, { recursive: true, force: true });
      rmSync(kubeletB, { recursive: true, force: true });
    }
  });
});
