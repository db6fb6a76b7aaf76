/** VolumeService on fake shares: CreateVolume, DeleteVolume and ControllerExpandVolume as the CSI spec asks. */
import { afterEach, describe, expect, it } from 'vitest';
import type { CreateVolumeInput } from '../../../src/controller/volumes.js';
import { GiB, MiB } from '../../../src/domain/sizes.js';
import { toolFailed } from '../../fakes/recorder.js';
import { keyOf, log, mountCap, world, type World, type WorldOptions } from './world.js';

const worlds: World[] = [];
afterEach(() => {
  for (const w of worlds.splice(0)) w.cleanup();
});
const make = (options?: WorldOptions) => {
  const w = world(options);
  worlds.push(w);
  return w;
};

describe('CreateVolume', () => {
  it.each<[string, Partial<CreateVolumeInput>, { mount?: string; format: string; size: bigint }]>([
    ['a thin qcow2 volume on the share with most room', {}, { mount: 'fast', format: 'qcow2', size: 16n * MiB }],
    ['a raw volume', { parameters: { format: 'raw' } }, { format: 'raw', size: 16n * MiB }],
    ['a size rounded up to a whole MiB', { capacity: { requiredBytes: 16n * MiB + 1n, limitBytes: 0n } }, { format: 'qcow2', size: 17n * MiB }],
    ['the default size when none is asked', { capacity: { requiredBytes: 0n, limitBytes: 0n } }, { format: 'qcow2', size: 64n * MiB }],
    [
      'the whole MiB under a limit given alone',
      { capacity: { requiredBytes: 0n, limitBytes: 10n * MiB + 5n } },
      { format: 'qcow2', size: 10n * MiB },
    ],
    ['on the share the StorageClass names', { parameters: { mounts: 'slow' } }, { mount: 'slow', format: 'qcow2', size: 16n * MiB }],
    ['on the share the requisite topology names', { requisite: [{ [keyOf('slow')]: 'true' }] }, { mount: 'slow', format: 'qcow2', size: 16n * MiB }],
    [
      'on a preferred share though another has more room',
      { preferred: [{ [keyOf('slow')]: 'true' }] },
      { mount: 'slow', format: 'qcow2', size: 16n * MiB },
    ],
  ])('creates %s', async (_what, over, expected) => {
    const w = make({ space: { fast: 200n * GiB, slow: 100n * GiB } });
    const v = await w.volumes.create(w.request('pvc-1', over), log);
    expect(v).toMatchObject({ id: 'pvc-1', sizeBytes: expected.size, record: { format: expected.format, name: 'pvc-1' } });
    if (expected.mount !== undefined) expect(v.mount).toBe(expected.mount);
    const layout = w.shares.layout(v.mount);
    expect(await w.qemuImg.info(layout.imagePath('pvc-1', v.record.format))).toMatchObject({ format: expected.format, virtualSize: expected.size });
    expect(await w.store.read(layout, 'pvc-1')).toEqual(v.record);
    expect(w.contents(v.mount).tmp).toEqual([]);
  });

  it.each<[string, Partial<CreateVolumeInput>, string]>([
    ['an empty name', { name: '' }, 'invalid'],
    ['an unknown parameter', { parameters: { fromat: 'raw' } }, 'invalid'],
    ['an unknown format', { parameters: { format: 'vmdk' } }, 'invalid'],
    ['linked clones of raw volumes', { parameters: { format: 'raw', cloneMode: 'linked' } }, 'invalid'],
    ['a cluster size for raw', { parameters: { format: 'raw', clusterSize: '64k' } }, 'invalid'],
    ['a share that is not configured', { parameters: { mounts: 'fast,nope' } }, 'invalid'],
    ['no capability', { capabilities: [] }, 'invalid'],
    ['an access mode it does not serve', { capabilities: [{ ...mountCap, mode: 'MULTI_NODE_SINGLE_WRITER' }] }, 'invalid'],
    ['a filesystem shared by many writers', { capabilities: [{ ...mountCap, mode: 'MULTI_NODE_MULTI_WRITER' }] }, 'invalid'],
    ['a required size above the limit', { capacity: { requiredBytes: 2n * MiB, limitBytes: MiB } }, 'outOfRange'],
    ['a range no whole MiB fits', { capacity: { requiredBytes: 1n, limitBytes: 1000n } }, 'outOfRange'],
    ['more than any share holds', { capacity: { requiredBytes: 1024n * GiB, limitBytes: 0n } }, 'exhausted'],
    ['a topology no share is in', { requisite: [{ [keyOf('elsewhere')]: 'true' }] }, 'exhausted'],
    ['a snapshot source that does not exist', { contentSource: { type: 'snapshot', id: 'snap-nope' } }, 'notFound'],
    ['a volume source that does not exist', { contentSource: { type: 'volume', id: 'pvc-nope' } }, 'notFound'],
  ])('refuses %s (%s) and creates nothing', async (_what, over, kind) => {
    const w = make();
    await expect(w.volumes.create(w.request('pvc-1', over), log)).rejects.toMatchObject({ kind });
    expect(w.contents('fast')).toEqual({ volumes: [], snapshots: [], tmp: [] });
    expect(w.contents('slow')).toEqual({ volumes: [], snapshots: [], tmp: [] });
  });

  it('answers a retry with the same volume, making the image once', async () => {
    const w = make();
    const first = await w.volumes.create(w.request('pvc-1'), log);
    // The provisioner's metadata keys do not define the volume.
    const again = await w.volumes.create(w.request('pvc-1', { parameters: { 'csi.storage.k8s.io/pvc/name': 'data' } }), log);
    expect(again).toEqual(first);
    expect(w.qemuImg.ops().filter((op) => op === 'create')).toHaveLength(1);
  });

  it.each<[string, Partial<CreateVolumeInput>]>([
    ["a size outside the first one's", { capacity: { requiredBytes: 32n * MiB, limitBytes: 0n } }],
    ['other StorageClass parameters', { parameters: { format: 'raw' } }],
    ['a content source the first did not have', { contentSource: { type: 'volume', id: 'pvc-0' } }],
    ['a topology the volume is outside of', { requisite: [{ [keyOf('slow')]: 'true' }] }],
  ])('answers ALREADY_EXISTS to the same name with %s', async (_what, over) => {
    const w = make();
    await w.volumes.create(w.request('pvc-1', { parameters: { mounts: 'fast' } }), log);
    const retry = w.request('pvc-1', { parameters: { mounts: 'fast' }, ...over });
    await expect(w.volumes.create(retry, log)).rejects.toMatchObject({ kind: 'alreadyExists', message: expect.stringMatching(/pvc-1/) });
  });

  it('answers RESOURCE_EXHAUSTED when the share fills up while the image is made, leaving nothing, and a retry then succeeds', async () => {
    const w = make({ shares: ['fast'] });
    w.qemuImg.failOn('create', toolFailed('qemu-img', 'qemu-img: pvc-1: No space left on device'), { times: 1 });
    await expect(w.volumes.create(w.request('pvc-1'), log)).rejects.toMatchObject({ kind: 'exhausted' });
    expect(w.contents('fast')).toEqual({ volumes: [], snapshots: [], tmp: [] });
    expect((await w.ledger.committed('fast', w.shares.layout('fast'))).all).toBe(0n);
    expect((await w.volumes.create(w.request('pvc-1'), log)).mount).toBe('fast');
  });

  it('answers UNAVAILABLE while a share the volume could be on is unmounted, and creates where the class allows', async () => {
    const w = make();
    w.shares.probes.set(w.shares.path('fast'), { mounted: false });
    await expect(w.volumes.create(w.request('pvc-1'), log)).rejects.toMatchObject({ kind: 'unavailable' });
    expect((await w.volumes.create(w.request('pvc-2', { parameters: { mounts: 'slow' } }), log)).mount).toBe('slow');
    expect(w.contents('fast').volumes).toEqual([]);
  });

  it("places thick volumes by what is promised, not by the sparse files' use of free space", async () => {
    const w = make({ shares: ['fast'], space: { fast: 100n * MiB } });
    w.shares.probes.set(w.shares.path('fast'), { totalBytes: 100n * MiB }); // an empty share: all free
    const raw = (name: string) => w.request(name, { parameters: { format: 'raw' }, capacity: { requiredBytes: 60n * MiB, limitBytes: 0n } });
    await w.volumes.create(raw('pvc-1'), log);
    await expect(w.volumes.create(raw('pvc-2'), log)).rejects.toMatchObject({ kind: 'exhausted', message: expect.stringMatching(/fast: room for/) });
  });

  it('clones a snapshot as a linked qcow2 overlay on it, and a raw volume as a copy', async () => {
    const w = make({ shares: ['fast'] });
    await w.volumes.create(w.request('pvc-src'), log);
    await w.snapshots.create('snap-1', 'pvc-src', {}, log);
    const linked = await w.volumes.create(w.request('pvc-linked', { contentSource: { type: 'snapshot', id: 'snap-1' } }), log);
    expect(linked.record.backing).toBe('snap-1');
    const layout = w.shares.layout('fast');
    expect((await w.qemuImg.info(layout.imagePath('pvc-linked', 'qcow2'))).backingFile).toBe('../../snapshots/snap-1/disk.qcow2');
    expect(await w.snapshotStore.dependents(layout, 'snap-1')).toContain('pvc-linked');
    const full = await w.volumes.create(
      w.request('pvc-full', { parameters: { format: 'raw' }, contentSource: { type: 'snapshot', id: 'snap-1' } }),
      log,
    );
    expect(full.record.backing).toBeNull();
    expect(await w.qemuImg.info(layout.imagePath('pvc-full', 'raw'), 'raw')).toMatchObject({ format: 'raw', virtualSize: 16n * MiB });
  });
});

describe('DeleteVolume', () => {
  it('removes a volume and forgets its size, and answers OK again and for ids it never had', async () => {
    const w = make({ shares: ['fast'] });
    await w.volumes.create(w.request('pvc-1'), log);
    const layout = w.shares.layout('fast');
    expect((await w.ledger.committed('fast', layout)).all).toBe(16n * MiB);
    await w.volumes.delete('pvc-1', log);
    expect(w.contents('fast')).toEqual({ volumes: [], snapshots: [], tmp: [] });
    expect((await w.ledger.committed('fast', layout)).all).toBe(0n);
    await w.volumes.delete('pvc-1', log);
    await w.volumes.delete('pvc-never', log);
  });

  it.each<[string, string, (w: World) => Promise<string>]>([
    ['an id that could leave the tree', 'invalid', async () => '../etc'],
    [
      'a volume still published to a node',
      'precondition',
      async (w) => {
        const v = await w.volumes.create(w.request('pvc-1'), log);
        await w.store.update(w.shares.layout(v.mount), {
          ...v.record,
          publications: [{ node: 'node-1', mode: 'SINGLE_NODE_WRITER', readonly: false }],
        });
        return 'pvc-1';
      },
    ],
    [
      'an unknown volume while a share is unmounted',
      'unavailable',
      async (w) => {
        w.shares.probes.set(w.shares.path('slow'), { mounted: false });
        return 'pvc-1';
      },
    ],
  ])('refuses %s (%s), removing nothing', async (_what, kind, setup) => {
    const w = make();
    const id = await setup(w);
    const before = [w.contents('fast'), w.contents('slow')];
    await expect(w.volumes.delete(id, log)).rejects.toMatchObject({ kind });
    expect([w.contents('fast'), w.contents('slow')]).toEqual(before);
  });

  it('removes a hidden snapshot with the last volume that depended on it', async () => {
    const w = make({ shares: ['fast'] });
    await w.volumes.create(w.request('pvc-src'), log);
    await w.snapshots.create('snap-1', 'pvc-src', {}, log);
    await w.volumes.create(w.request('pvc-clone', { contentSource: { type: 'snapshot', id: 'snap-1' } }), log);
    await w.volumes.delete('pvc-src', log); // the source's own image is backed by snap-1 too (a layer)
    await w.snapshots.delete('snap-1', log);
    expect(w.contents('fast').snapshots).toEqual(['snap-1']); // hidden: pvc-clone reads through it
    await w.volumes.delete('pvc-clone', log);
    expect(w.contents('fast')).toEqual({ volumes: [], snapshots: [], tmp: [] });
  });
});

describe('ControllerExpandVolume', () => {
  it.each<[string, { requiredBytes: bigint; limitBytes: bigint }, bigint]>([
    ['grows to the size asked', { requiredBytes: 32n * MiB, limitBytes: 0n }, 32n * MiB],
    ['rounds up to a whole MiB', { requiredBytes: 32n * MiB + 1n, limitBytes: 0n }, 33n * MiB],
    ['grows up to a limit', { requiredBytes: 20n * MiB, limitBytes: 20n * MiB }, 20n * MiB],
    ['never shrinks: a smaller size leaves it as it is', { requiredBytes: 8n * MiB, limitBytes: 0n }, 16n * MiB],
  ])('%s', async (_what, range, size) => {
    const w = make({ shares: ['fast'] });
    await w.volumes.create(w.request('pvc-1'), log);
    w.qemuImg.reset();
    const v = await w.volumes.expand('pvc-1', range, log);
    expect(v.sizeBytes).toBe(size);
    const layout = w.shares.layout('fast');
    expect((await w.qemuImg.info(layout.imagePath('pvc-1', 'qcow2'))).virtualSize).toBe(size);
    expect((await w.store.read(layout, 'pvc-1'))?.sizeBytes).toBe(size.toString());
    expect(w.qemuImg.ops().includes('resize')).toBe(size > 16n * MiB);
  });

  it.each<[string, string, { requiredBytes: bigint; limitBytes: bigint }, string]>([
    ['no capacity range', 'pvc-1', { requiredBytes: 0n, limitBytes: 0n }, 'invalid'],
    ['a size above the limit', 'pvc-1', { requiredBytes: 64n * MiB, limitBytes: 32n * MiB }, 'outOfRange'],
    ['a limit below the current size', 'pvc-1', { requiredBytes: 8n * MiB, limitBytes: 8n * MiB }, 'outOfRange'],
    ['an unknown volume', 'pvc-nope', { requiredBytes: 32n * MiB, limitBytes: 0n }, 'notFound'],
    ['more than the share can take', 'pvc-1', { requiredBytes: 1024n * GiB, limitBytes: 0n }, 'exhausted'],
  ])('refuses %s', async (_what, id, range, kind) => {
    const w = make({ shares: ['fast'] });
    await w.volumes.create(w.request('pvc-1'), log);
    await expect(w.volumes.expand(id, range, log)).rejects.toMatchObject({ kind });
    expect((await w.store.read(w.shares.layout('fast'), 'pvc-1'))?.sizeBytes).toBe((16n * MiB).toString());
  });

  it("records the new size of a qcow2 volume a node's qemu holds, leaving the image to that node", async () => {
    const w = make({ shares: ['fast'] });
    await w.volumes.create(w.request('pvc-1'), log);
    const image = w.shares.layout('fast').imagePath('pvc-1', 'qcow2');
    const release = await w.qemuImg.hold(image);
    const v = await w.volumes.expand('pvc-1', { requiredBytes: 32n * MiB, limitBytes: 0n }, log);
    release();
    expect(v.sizeBytes).toBe(32n * MiB);
    expect((await w.qemuImg.info(image)).virtualSize).toBe(16n * MiB);
  });

  it('answers FAILED_PRECONDITION for a raw volume something holds, and keeps its size', async () => {
    const w = make({ shares: ['fast'] });
    await w.volumes.create(w.request('pvc-1', { parameters: { format: 'raw' } }), log);
    const release = await w.qemuImg.hold(w.shares.layout('fast').imagePath('pvc-1', 'raw'));
    await expect(w.volumes.expand('pvc-1', { requiredBytes: 32n * MiB, limitBytes: 0n }, log)).rejects.toMatchObject({ kind: 'precondition' });
    release();
    expect((await w.store.read(w.shares.layout('fast'), 'pvc-1'))?.sizeBytes).toBe((16n * MiB).toString());
  });
});
