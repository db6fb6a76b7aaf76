/** SnapshotService on fake shares: CreateSnapshot, DeleteSnapshot and ListSnapshots, with and without reflinks. */
import { afterEach, describe, expect, it } from 'vitest';
import { MiB } from '../../../src/domain/sizes.js';
import type { Format } from '../../../src/domain/parameters.js';
import { toolFailed } from '../../fakes/recorder.js';
import { log, world, type World, type WorldOptions } from './world.js';

const worlds: World[] = [];
afterEach(() => {
  for (const w of worlds.splice(0)) w.cleanup();
});
/** One share, `fast`, with a volume pvc-1 of `format` on it. */
async function withVolume(format: Format = 'qcow2', options: WorldOptions = {}) {
  const w = world({ shares: ['fast'], ...options });
  worlds.push(w);
  await w.volumes.create(w.request('pvc-1', { parameters: { format } }), log);
  return { w, layout: w.shares.layout('fast') };
}

describe('CreateSnapshot', () => {
  it.each<[string, Format, boolean, string, string[]]>([
    ['a qcow2 volume where the share reflinks', 'qcow2', true, 'reflink', ['reflink']],
    ['a raw volume where the share reflinks', 'raw', true, 'reflink', ['reflink']],
    ['a qcow2 volume where it cannot, as a layer: nothing copied', 'qcow2', false, 'layer', ['reflink', 'info', 'createOverlay', 'inUse']],
    ['a raw volume where it cannot, as a copy', 'raw', false, 'copy', ['reflink', 'convert']],
  ])('snapshots %s', async (_what, format, reflinks, method, calls) => {
    const { w, layout } = await withVolume(format, { reflinks });
    w.qemuImg.reset();
    w.files.reset();
    const s = await w.snapshots.create('snap-1', 'pvc-1', {}, log);
    expect(s).toMatchObject({ id: 'snap-1', sourceVolumeId: 'pvc-1', sizeBytes: 16n * MiB, readyToUse: true });
    expect(await w.snapshotStore.read(layout, 'snap-1')).toMatchObject({ method, format, deleted: false });
    expect([...w.files.ops(), ...w.qemuImg.ops()]).toEqual(calls);
    expect(await w.qemuImg.info(layout.snapshotImage('snap-1', format), format)).toMatchObject({ virtualSize: 16n * MiB });
    // A layer leaves the volume in a new overlay on the snapshot, which now backs it.
    const volume = await w.store.read(layout, 'pvc-1');
    expect(volume?.backing).toBe(method === 'layer' ? 'snap-1' : null);
    if (method === 'layer') expect((await w.qemuImg.info(layout.imagePath('pvc-1', 'qcow2'))).backingFile).toBe('../../snapshots/snap-1/disk.qcow2');
    expect(w.contents('fast').tmp).toEqual([]);
  });

  it('answers a retry with the same snapshot, making it once', async () => {
    const { w } = await withVolume();
    const first = await w.snapshots.create('snap-1', 'pvc-1', {}, log);
    const ops = w.qemuImg.actions.length;
    expect(await w.snapshots.create('snap-1', 'pvc-1', { 'csi.storage.k8s.io/volumesnapshot/name': 's' }, log)).toEqual(first);
    expect(w.qemuImg.actions.length).toBe(ops);
  });

  it.each<[string, string, string, Record<string, string>, string]>([
    ['an empty name', '', 'pvc-1', {}, 'invalid'],
    ['a source id that could leave the tree', 'snap-1', '../x', {}, 'invalid'],
    ['a VolumeSnapshotClass parameter', 'snap-1', 'pvc-1', { speed: 'fast' }, 'invalid'],
    ['a source volume that does not exist', 'snap-1', 'pvc-nope', {}, 'notFound'],
    ['a name taken by a snapshot of another volume', 'snap-0', 'pvc-1', {}, 'alreadyExists'],
  ])('refuses %s (%s)', async (_what, name, source, params, kind) => {
    const { w } = await withVolume();
    await w.volumes.create(w.request('pvc-0'), log);
    await w.snapshots.create('snap-0', 'pvc-0', {}, log);
    const before = w.contents('fast');
    await expect(w.snapshots.create(name, source, params, log)).rejects.toMatchObject({ kind });
    expect(w.contents('fast')).toEqual(before);
  });

  it('answers RESOURCE_EXHAUSTED when the share fills up during a copy, leaving nothing', async () => {
    const { w } = await withVolume('raw');
    w.qemuImg.failOn('convert', toolFailed('qemu-img', 'qemu-img: error while writing at byte 0: No space left on device'));
    await expect(w.snapshots.create('snap-1', 'pvc-1', {}, log)).rejects.toMatchObject({ kind: 'exhausted' });
    expect(w.contents('fast')).toEqual({ volumes: ['pvc-1'], snapshots: [], tmp: [] });
  });

  it('refuses to copy a raw volume a node has attached: the copy would not be consistent', async () => {
    const { w, layout } = await withVolume('raw');
    const record = await w.store.read(layout, 'pvc-1');
    if (record === undefined) throw new Error('no record');
    await w.store.update(layout, { ...record, publications: [{ node: 'node-1', mode: 'SINGLE_NODE_WRITER', readonly: false }] });
    await expect(w.snapshots.create('snap-1', 'pvc-1', {}, log)).rejects.toMatchObject({
      kind: 'precondition',
      message: expect.stringMatching(/node-1/),
    });
  });

  it('answers "not ready" while the node serving a qcow2 volume has yet to switch layers', async () => {
    const { w, layout } = await withVolume();
    const record = await w.store.read(layout, 'pvc-1');
    if (record === undefined) throw new Error('no record');
    await w.store.update(layout, { ...record, publications: [{ node: 'node-1', mode: 'SINGLE_NODE_WRITER', readonly: false }] });
    const s = await w.snapshots.create('snap-1', 'pvc-1', {}, log);
    expect(s.readyToUse).toBe(false);
    await expect(w.snapshots.require('snap-1')).rejects.toMatchObject({ kind: 'precondition' });
    // The volume's other changes wait for the switch too.
    await expect(w.volumes.expand('pvc-1', { requiredBytes: 32n * MiB, limitBytes: 0n }, log)).rejects.toMatchObject({ kind: 'busy' });
  });
});

describe('DeleteSnapshot', () => {
  it('removes a snapshot, and answers OK again and for ids it never had', async () => {
    const { w } = await withVolume('raw');
    await w.snapshots.create('snap-1', 'pvc-1', {}, log);
    await w.snapshots.delete('snap-1', log);
    expect(w.contents('fast').snapshots).toEqual([]);
    await w.snapshots.delete('snap-1', log);
    await w.snapshots.delete('snap-never', log);
    await expect(w.snapshots.delete('../x', log)).rejects.toMatchObject({ kind: 'invalid' });
  });

  it('hides a snapshot a volume still reads through, which then no longer lists or clones', async () => {
    const { w } = await withVolume();
    await w.snapshots.create('snap-1', 'pvc-1', {}, log); // a layer: pvc-1 now reads through it
    await w.snapshots.delete('snap-1', log);
    expect(w.contents('fast').snapshots).toEqual(['snap-1']);
    expect((await w.snapshots.list(0, '', { snapshotId: '', sourceVolumeId: '' })).entries).toEqual([]);
    await expect(w.volumes.create(w.request('pvc-2', { contentSource: { type: 'snapshot', id: 'snap-1' } }), log)).rejects.toMatchObject({
      kind: 'notFound',
    });
    await w.volumes.delete('pvc-1', log);
    expect(w.contents('fast').snapshots).toEqual([]);
  });
});

describe('ListSnapshots', () => {
  async function three() {
    const { w } = await withVolume('raw', { reflinks: true });
    await w.volumes.create(w.request('pvc-2', { parameters: { format: 'raw' } }), log);
    for (const [name, source] of [
      ['snap-a', 'pvc-1'],
      ['snap-b', 'pvc-2'],
      ['snap-c', 'pvc-1'],
    ] as const)
      await w.snapshots.create(name, source, {}, log);
    return w;
  }
  const ids = (r: { entries: { id: string }[] }) => r.entries.map((e) => e.id);

  it.each<[string, number, { snapshotId: string; sourceVolumeId: string }, string[]]>([
    ['all, in id order', 0, { snapshotId: '', sourceVolumeId: '' }, ['snap-a', 'snap-b', 'snap-c']],
    ['those of one source volume', 0, { snapshotId: '', sourceVolumeId: 'pvc-1' }, ['snap-a', 'snap-c']],
    ['one by id', 0, { snapshotId: 'snap-b', sourceVolumeId: '' }, ['snap-b']],
    ['one by id, when its source is another', 0, { snapshotId: 'snap-b', sourceVolumeId: 'pvc-1' }, []],
    ['none for an unknown id', 0, { snapshotId: 'snap-x', sourceVolumeId: '' }, []],
    ['none for an id that is not one', 0, { snapshotId: '../x', sourceVolumeId: '' }, []],
    ['a first page', 2, { snapshotId: '', sourceVolumeId: '' }, ['snap-a', 'snap-b']],
  ])('lists %s', async (_what, max, filter, expected) => {
    const w = await three();
    expect(ids(await w.snapshots.list(max, '', filter))).toEqual(expected);
  });

  it('pages with the token it gives, to the end', async () => {
    const w = await three();
    const first = await w.snapshots.list(2, '', { snapshotId: '', sourceVolumeId: '' });
    expect(first.nextToken).not.toBe('');
    const second = await w.snapshots.list(2, first.nextToken, { snapshotId: '', sourceVolumeId: '' });
    expect(ids(second)).toEqual(['snap-c']);
    expect(second.nextToken).toBe('');
  });

  it('refuses a negative page size', async () => {
    const w = await three();
    await expect(w.snapshots.list(-1, '', { snapshotId: '', sourceVolumeId: '' })).rejects.toMatchObject({ kind: 'invalid' });
  });
});
