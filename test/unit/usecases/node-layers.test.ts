/**
 * NodeLayering with the controller's SnapshotService and Merger on the same
 * fake shares: the node's half of snapshots as layers (the switch of a served
 * export onto the overlay) and of online merges (block-stream), as the files
 * on the shares carry them between the two.
 */
import { resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Merger } from '../../../src/controller/merger.js';
import { internal } from '../../../src/domain/errors.js';
import { MiB } from '../../../src/domain/sizes.js';
import { baseNode, layerNode, nodeVolumeKey } from '../../../src/node/layers.js';
import { volumeTag } from '../../../src/node/state.js';
import { backingReference } from '../../../src/storage/image-header.js';
import { readIntent, readMerge } from '../../../src/storage/layering.js';
import { fsCap, nodeWorld, type NodeWorld } from './node-world.js';
import { log } from './world.js';

const worlds: NodeWorld[] = [];
afterEach(async () => {
  for (const w of worlds.splice(0)) await w.cleanup();
});

const MARK = Buffer.alloc(4096, 0x77);

/** Volume pvc-1 (qcow2) staged and published to node-1, as ControllerPublishVolume recorded it. */
async function served() {
  const w = nodeWorld();
  worlds.push(w);
  const v = await w.volume('pvc-1');
  const layout = w.shares.layout('fast');
  await w.store.update(layout, { ...v.record, publications: [{ node: 'node-1', mode: 'SINGLE_NODE_WRITER', readonly: false }] });
  await w.node.stager.stage(w.stageInput('pvc-1', fsCap()), log);
  const rec = await w.node.stager.requireStaged('pvc-1', w.staging('pvc-1'));
  const device = () => w.device('pvc-1');
  const images = { volume: v.image, snapshot: (id: string) => layout.snapshotImage(id, 'qcow2') };
  return { w, layout, rec, device, images };
}

/** Runs `work` while the node polls, as its timer would. */
async function withNode<T>(w: NodeWorld, work: Promise<T>): Promise<T> {
  const state = { done: false };
  const result = work.finally(() => (state.done = true));
  while (!state.done) {
    await w.node.layers.poll();
    await new Promise((r) => setTimeout(r, 10));
  }
  return result;
}

describe('snapshot layers on a served volume', () => {
  it("switches the export's writes onto the overlay the controller made; the snapshot keeps what was there", async () => {
    const { w, device, images } = await served();
    await device().write(8 * Number(MiB), MARK);
    const s = await withNode(w, w.snapshots.create('snap-1', 'pvc-1', {}, log));
    expect(s.readyToUse).toBe(true);
    const rec = await w.state.read('pvc-1');
    expect(await w.sys.exports.top(rec!.export!)).toBe(layerNode('pvc-1', 'snap-1'));
    // The old top is the snapshot's image now: named so merges can address it.
    expect(rec?.layers).toEqual({ 'snap-1': `t${volumeTag('pvc-1')}` });
    expect(await backingReference(images.volume)).toBe('../../snapshots/snap-1/disk.qcow2');
    // New writes land in the overlay; the snapshot keeps the data of its moment.
    await device().write(12 * Number(MiB), MARK);
    expect(await w.qemuImg.same(images.volume, images.snapshot('snap-1'))).toBe(false);
    expect((await device().read(8 * Number(MiB), 4096)).equals(MARK)).toBe(true);
    expect(await w.sys.fs.probe(rec!.device!)).toEqual({ kind: 'filesystem', fsType: 'ext4' });
    // qemu's write lock moved with the writes.
    expect(await w.qemuImg.holds(images.volume)).toBe(true);
    expect(await w.qemuImg.holds(images.snapshot('snap-1'))).toBe(false);
    expect(await w.node.layers.poll()).toBe(false);
  });

  it('writes a failed switch into the intent, and the controller undoes the snapshot on the retry', async () => {
    const { w, layout, rec } = await served();
    w.sys.exports.failOn('switchTo', internal('blockdev-snapshot failed: Permission denied'));
    expect((await withNode(w, w.snapshots.create('snap-1', 'pvc-1', {}, log))).readyToUse).toBe(false);
    expect(await readIntent(layout, 'pvc-1')).toMatchObject({ snapshotId: 'snap-1', error: expect.stringMatching(/blockdev-snapshot failed/) });
    expect(await w.sys.exports.top(rec.export!)).toBe(`t${volumeTag('pvc-1')}`);
    await expect(w.snapshots.create('snap-1', 'pvc-1', {}, log)).rejects.toMatchObject({
      kind: 'internal',
      message: expect.stringMatching(/could not switch it to a new layer: blockdev-snapshot failed/),
    });
    expect(await readIntent(layout, 'pvc-1')).toBeUndefined();
    expect(w.contents('fast').snapshots).toEqual([]);
  });

  it('leaves a volume whose lock an RPC holds for the next poll', async () => {
    const { w, layout, rec } = await served();
    const made = w.snapshots.create('snap-1', 'pvc-1', {}, log);
    await new Promise((r) => setTimeout(r, 100));
    const release = w.node.locks.acquire([nodeVolumeKey('pvc-1')]);
    expect(await w.node.layers.poll()).toBe(true);
    expect(await w.sys.exports.top(rec.export!)).toBe(`t${volumeTag('pvc-1')}`);
    release();
    expect((await withNode(w, made)).readyToUse).toBe(true);
    expect(await readIntent(layout, 'pvc-1')).toBeUndefined();
  });

  it('restages onto a second snapshot the controller has yet to record, reading the data under it', async () => {
    const { w, device } = await served();
    const OTHER = Buffer.alloc(4096, 0x42);
    await device().write(8 * Number(MiB), MARK);
    await withNode(w, w.snapshots.create('snap-0', 'pvc-1', {}, log));
    await device().write(12 * Number(MiB), OTHER); // lands in the layer that becomes snap-1
    expect((await w.snapshots.create('snap-1', 'pvc-1', {}, log)).readyToUse).toBe(false);
    await w.reboot();
    await w.node.stager.stage(w.stageInput('pvc-1', fsCap()), log);
    const rec = await w.node.stager.requireStaged('pvc-1', w.staging('pvc-1'));
    // volume.json still says snap-0 is under the image; the image's header says snap-1.
    expect(rec.layers).toEqual({ 'snap-1': baseNode('pvc-1', 'snap-1'), 'snap-0': baseNode('pvc-1', 'snap-0') });
    expect((await device().read(12 * Number(MiB), 4096)).equals(OTHER)).toBe(true);
    expect((await device().read(8 * Number(MiB), 4096)).equals(MARK)).toBe(true);
    expect((await w.snapshots.create('snap-1', 'pvc-1', {}, log)).readyToUse).toBe(true);
  });

  it('starts the export of a restaged volume on the overlay when the switch was ready but nothing served it', async () => {
    const { w, images } = await served();
    // The controller asks; the node goes down before it switches.
    const pending = await w.snapshots.create('snap-1', 'pvc-1', {}, log);
    expect(pending.readyToUse).toBe(false);
    await w.reboot();
    await w.node.stager.stage(w.stageInput('pvc-1', fsCap()), log);
    const rec = await w.node.stager.requireStaged('pvc-1', w.staging('pvc-1'));
    // The export serves the overlay over the snapshot, named as merges expect, though volume.json
    // names its backing only once the controller records the layer.
    const nodes = w.sys.exports.nodes(volumeTag('pvc-1'));
    expect(nodes[`t${volumeTag('pvc-1')}`]).toBe(images.volume);
    expect(resolve(nodes[baseNode('pvc-1', 'snap-1')] ?? '')).toBe(images.snapshot('snap-1'));
    expect(rec.layers).toEqual({ 'snap-1': baseNode('pvc-1', 'snap-1') });
    expect((await w.snapshots.create('snap-1', 'pvc-1', {}, log)).readyToUse).toBe(true);
    expect(await w.sys.fs.probe(rec.device!)).toEqual({ kind: 'filesystem', fsType: 'ext4' });
  });
});

describe('online merges', () => {
  it('streams a deleted snapshot into the layer above it with the export, after which the controller removes it', async () => {
    const { w, layout, device, images } = await served();
    const merger = new Merger(w.mounts, w.store, w.snapshotStore, w.qemuImg, w.node.locks, log);
    await device().write(8 * Number(MiB), MARK);
    await withNode(w, w.snapshots.create('snap-1', 'pvc-1', {}, log));
    await withNode(w, w.snapshots.create('snap-2', 'pvc-1', {}, log));
    const before = await device().read(0, Number(16n * MiB));
    await w.snapshots.delete('snap-1', log);
    expect(await merger.mergeAt('fast', 'snap-1')).toBe('waiting');
    expect(await readMerge(layout, 'pvc-1')).toMatchObject({ layer: 'snap-1', into: 'snap-2', backing: null });
    await w.node.layers.poll();
    const rec = await w.state.read('pvc-1');
    expect(await w.sys.exports.jobs(rec!.export!)).toHaveLength(1);
    // Not finished: the controller waits, the node does not start it twice.
    expect(await merger.mergeAt('fast', 'snap-1')).toBe('waiting');
    await w.node.layers.poll();
    expect(w.sys.exports.ops().filter((op) => op === 'stream')).toHaveLength(1);
    await w.sys.exports.finishJobs();
    expect(await backingReference(images.snapshot('snap-2'))).toBeUndefined();
    expect(await merger.mergeAt('fast', 'snap-1')).toBe('merged');
    expect(w.contents('fast').snapshots).toEqual(['snap-2']);
    expect(await readMerge(layout, 'pvc-1')).toBeUndefined();
    expect((await device().read(0, Number(16n * MiB))).equals(before)).toBe(true);
  });

  it('merges a snapshot whose switch a restage finished before the controller recorded it', async () => {
    const { w, images, device } = await served();
    const merger = new Merger(w.mounts, w.store, w.snapshotStore, w.qemuImg, w.node.locks, log);
    await device().write(8 * Number(MiB), MARK);
    expect((await w.snapshots.create('snap-1', 'pvc-1', {}, log)).readyToUse).toBe(false);
    await w.reboot();
    await w.node.stager.stage(w.stageInput('pvc-1', fsCap()), log);
    expect((await w.snapshots.create('snap-1', 'pvc-1', {}, log)).readyToUse).toBe(true);
    await withNode(w, w.snapshots.create('snap-2', 'pvc-1', {}, log));
    const before = await device().read(0, Number(16n * MiB));
    expect(before.subarray(8 * Number(MiB), 8 * Number(MiB) + 4096).equals(MARK)).toBe(true);
    await w.snapshots.delete('snap-1', log);
    expect(await merger.mergeAt('fast', 'snap-1')).toBe('waiting');
    await w.node.layers.poll();
    await w.sys.exports.finishJobs();
    expect(await merger.mergeAt('fast', 'snap-1')).toBe('merged');
    expect(await backingReference(images.snapshot('snap-2'))).toBeUndefined();
    expect((await device().read(0, Number(16n * MiB))).equals(before)).toBe(true);
  });

  it('reports a stream it cannot start in the request, and the controller tries again later', async () => {
    const { w, layout } = await served();
    const merger = new Merger(w.mounts, w.store, w.snapshotStore, w.qemuImg, w.node.locks, log);
    await withNode(w, w.snapshots.create('snap-1', 'pvc-1', {}, log));
    await withNode(w, w.snapshots.create('snap-2', 'pvc-1', {}, log));
    await w.snapshots.delete('snap-1', log);
    await merger.mergeAt('fast', 'snap-1');
    w.sys.exports.failOn('stream', internal('block-stream failed: Device is busy'));
    await w.node.layers.poll();
    expect(await readMerge(layout, 'pvc-1')).toMatchObject({ layer: 'snap-1', error: expect.stringMatching(/Device is busy/) });
    expect(await merger.mergeAt('fast', 'snap-1')).toBe('waiting');
    expect(await readMerge(layout, 'pvc-1')).toBeUndefined();
  });
});
