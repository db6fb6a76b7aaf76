/** NodeHealth (NodeGetVolumeStats, NodeExpandVolume) on fake shares and fake node adapters, with ControllerExpandVolume before the node's part. */
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { Capability } from '../../../src/domain/capabilities.js';
import type { Format } from '../../../src/domain/parameters.js';
import { MiB } from '../../../src/domain/sizes.js';
import { volumeTag } from '../../../src/node/state.js';
import { blockCap, fsCap, nodeWorld, type NodeWorld } from './node-world.js';
import { log } from './world.js';

const worlds: NodeWorld[] = [];
afterEach(async () => {
  for (const w of worlds.splice(0)) await w.cleanup();
});

/** Volume pvc-1 (16 MiB) of `format`, staged with `cap` and published to pod-1. */
async function published(format: Format = 'qcow2', cap: Capability = fsCap(), readonly = false) {
  const w = nodeWorld();
  worlds.push(w);
  const v = await w.volume('pvc-1', format);
  await w.node.stager.stage(w.stageInput('pvc-1', cap, readonly), log);
  const rec = await w.node.stager.requireStaged('pvc-1', w.staging('pvc-1'));
  await w.node.publisher.publish(w.publishInput('pvc-1', cap), rec, log);
  return { w, image: v.image, rec };
}

const range = (requiredBytes: bigint, limitBytes = 0n) => ({ requiredBytes, limitBytes });
const healthy = { abnormal: false, message: 'volume is healthy' };

describe('NodeGetVolumeStats', () => {
  it.each(['staging', 'target'] as const)("reports a filesystem volume's usage and health at its %s path", async (where) => {
    const { w } = await published();
    const path = where === 'staging' ? w.staging('pvc-1') : w.target('pvc-1');
    const stats = await w.node.health.stats('pvc-1', path);
    expect(stats.condition).toEqual(healthy);
    expect(stats.usage).toMatchObject({ totalBytes: 16n * MiB });
    expect(w.sys.fs.actions.filter((a) => a.op === 'usage')).toEqual([{ op: 'usage', args: [path] }]);
  });

  it("reports a block volume's size, read from its device", async () => {
    const { w } = await published('raw', blockCap);
    expect(await w.node.health.stats('pvc-1', w.target('pvc-1'))).toEqual({ usage: { totalBytes: 16n * MiB }, condition: healthy });
  });

  it('answers NOT_FOUND for a missing path, a volume not staged here, or a path that does not show the volume', async () => {
    const { w } = await published();
    await expect(w.node.health.stats('pvc-1', w.target('pvc-1', 'pod-9'))).rejects.toMatchObject({ kind: 'notFound' });
    await expect(w.node.health.stats('pvc-none', w.staging('pvc-1'))).rejects.toMatchObject({ kind: 'notFound' });
    await expect(w.node.health.stats('pvc-1', w.kubelet)).rejects.toMatchObject({ kind: 'notFound' });
  });

  it.each<[string, Format, Capability, (w: NodeWorld, image: string) => Promise<void> | void, RegExp]>([
    ['its image is gone', 'raw', fsCap(), (_w, image) => rmSync(image), /image .* is gone/],
    ['its export died', 'qcow2', fsCap(), (w) => w.sys.exports.kill(volumeTag('pvc-1')), /qemu export of .* is not running/],
    ["the node's whole data plane died", 'qcow2', blockCap, (w) => w.sys.exports.kill(), /qemu export of .* is not running/],
    [
      'its loop device was detached',
      'raw',
      blockCap,
      async (w) => {
        for (const d of await w.sys.loops.list()) await w.sys.loops.detach(d.device);
      },
      /loop device .* no longer reads/,
    ],
    [
      'its image was replaced under the loop device',
      'raw',
      blockCap,
      (_w, image) => {
        writeFileSync(`${image}.new`, '');
        renameSync(`${image}.new`, image);
      },
      /the file behind .* was deleted/,
    ],
    ['its staging mount is gone', 'raw', fsCap(), (w) => w.sys.fs.unmount(w.staging('pvc-1')), /staging mount .* is gone/],
  ])('reports the volume abnormal when %s', async (_what, format, cap, breakIt, message) => {
    const { w, image } = await published(format, cap);
    await breakIt(w, image);
    const { condition } = await w.node.health.stats('pvc-1', w.target('pvc-1'));
    expect(condition).toEqual({ abnormal: true, message: expect.stringMatching(message) });
  });
});

describe('NodeExpandVolume', () => {
  it.each<[string, Format, Capability, boolean]>([
    ['raw ext4', 'raw', fsCap(), true],
    ['qcow2 ext4', 'qcow2', fsCap(), true],
    ['qcow2 xfs', 'qcow2', fsCap({ fsType: 'xfs' }), true],
    ['raw block', 'raw', blockCap, false],
    ['qcow2 block', 'qcow2', blockCap, false],
  ])('grows a staged %s volume after ControllerExpandVolume', async (_what, format, cap, grows) => {
    const { w, image } = await published(format, cap);
    await w.volumes.expand('pvc-1', range(32n * MiB), log);
    // The controller grows a raw image itself; a qcow2 image the node's export holds is left to the node.
    expect((await w.qemuImg.info(image, format)).virtualSize).toBe(format === 'raw' ? 32n * MiB : 16n * MiB);
    expect(await w.node.health.expand('pvc-1', w.target('pvc-1'), range(32n * MiB), log)).toBe(32n * MiB);
    expect((await w.qemuImg.info(image, format)).virtualSize).toBe(32n * MiB);
    expect(w.sys.exports.ops().includes('resize')).toBe(format === 'qcow2');
    expect(w.sys.fs.ops().includes('grow')).toBe(grows);
    const stats = await w.node.health.stats('pvc-1', w.target('pvc-1'));
    expect(stats.usage.totalBytes).toBe(32n * MiB);
  });

  it('answers a repeat with the size it already has', async () => {
    const { w } = await published('qcow2');
    await w.volumes.expand('pvc-1', range(32n * MiB), log);
    await w.node.health.expand('pvc-1', w.staging('pvc-1'), range(32n * MiB), log);
    w.sys.exports.reset();
    expect(await w.node.health.expand('pvc-1', w.staging('pvc-1'), range(32n * MiB), log)).toBe(32n * MiB);
    expect(w.sys.exports.ops()).not.toContain('resize');
  });

  it('answers FAILED_PRECONDITION for a raw volume the controller has not grown yet', async () => {
    const { w } = await published('raw');
    await expect(w.node.health.expand('pvc-1', w.staging('pvc-1'), range(32n * MiB), log)).rejects.toMatchObject({
      kind: 'precondition',
      message: expect.stringMatching(/ControllerExpandVolume must grow its image first/),
    });
  });

  it('answers OUT_OF_RANGE for a limit below the size asked for, and FAILED_PRECONDITION for a read-only stage', async () => {
    const { w } = await published('qcow2');
    await expect(w.node.health.expand('pvc-1', w.staging('pvc-1'), range(32n * MiB, 24n * MiB), log)).rejects.toMatchObject({ kind: 'outOfRange' });
    await w.node.publisher.unpublish('pvc-1', w.target('pvc-1'), log);
    await w.node.stager.unstage('pvc-1', w.staging('pvc-1'), log);
    await w.node.stager.stage(w.stageInput('pvc-1', fsCap(), true), log);
    await expect(w.node.health.expand('pvc-1', w.staging('pvc-1'), range(32n * MiB), log)).rejects.toMatchObject({
      kind: 'precondition',
      message: expect.stringMatching(/staged read-only and cannot grow/),
    });
    expect(w.sys.exports.ops()).not.toContain('resize');
  });
});
