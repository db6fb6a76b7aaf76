/** Sources on fake shares: the base a new volume starts from — a snapshot, a volume, or a golden image. */
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cloneBaseId, type ContentSource } from '../../../src/controller/sources.js';
import { parseParameters } from '../../../src/domain/parameters.js';
import { MiB } from '../../../src/domain/sizes.js';
import { log, world, type World, type WorldOptions } from './world.js';

const worlds: World[] = [];
afterEach(() => {
  for (const w of worlds.splice(0)) w.cleanup();
});
const make = (options: WorldOptions = {}) => {
  const w = world({ shares: ['fast', 'slow'], ...options });
  worlds.push(w);
  return w;
};
const params = (p: Record<string, string> = {}) => parseParameters(p, 'qcow2');
const resolve = (w: World, source: ContentSource | undefined, p: Record<string, string> = {}) => w.sources.resolve(source, params(p), 'pvc-new', log);

describe('content sources', () => {
  it('starts a blank volume from nothing', async () => {
    expect(await resolve(make(), undefined)).toBeUndefined();
  });

  it('starts from a snapshot as it is, on its share', async () => {
    const w = make();
    await w.volumes.create(w.request('pvc-src', { parameters: { mounts: 'slow' } }), log);
    await w.snapshots.create('snap-1', 'pvc-src', {}, log);
    expect(await resolve(w, { type: 'snapshot', id: 'snap-1' })).toMatchObject({
      mount: 'slow',
      snapshotId: 'snap-1',
      image: w.shares.layout('slow').snapshotImage('snap-1', 'qcow2'),
      format: 'qcow2',
      sizeBytes: 16n * MiB,
      backing: null,
      internal: false,
    });
  });

  it('starts from a hidden snapshot of a source volume, born deleted so it lives as long as a dependent', async () => {
    const w = make({ reflinks: true });
    await w.volumes.create(w.request('pvc-src'), log);
    const base = await resolve(w, { type: 'volume', id: 'pvc-src' });
    const id = cloneBaseId('pvc-src', 'pvc-new');
    expect(base).toMatchObject({ mount: 'fast', snapshotId: id, internal: true, sizeBytes: 16n * MiB });
    expect(await w.snapshotStore.read(w.shares.layout('fast'), id)).toMatchObject({
      deleted: true,
      internal: true,
      method: 'reflink',
      sourceVolumeId: 'pvc-src',
    });
    // A retry finds it instead of making another.
    const ops = w.files.actions.length;
    expect(await resolve(w, { type: 'volume', id: 'pvc-src' })).toMatchObject({ snapshotId: id });
    expect(w.files.actions.length).toBe(ops);
  });

  it('names the hidden base of long ids by a hash, never by a truncation two clones could share', () => {
    const long = 'p'.repeat(100);
    expect(cloneBaseId('pvc-a', 'pvc-b')).toBe('clone-of-pvc-a-for-pvc-b');
    expect(cloneBaseId(long, `${long}-1`)).toMatch(/^clone-of-[0-9a-f]{40}$/);
    expect(cloneBaseId(long, `${long}-1`)).not.toBe(cloneBaseId(long, `${long}-2`));
  });

  it.each<[string, string, (w: World) => Promise<ContentSource>]>([
    ['a snapshot that does not exist', 'notFound', async () => ({ type: 'snapshot', id: 'snap-nope' })],
    [
      'a deleted snapshot a volume still reads through',
      'notFound',
      async (w) => {
        await w.volumes.create(w.request('pvc-src'), log);
        await w.snapshots.create('snap-1', 'pvc-src', {}, log);
        await w.snapshots.delete('snap-1', log);
        return { type: 'snapshot', id: 'snap-1' };
      },
    ],
    [
      'a snapshot the serving node has yet to switch to',
      'precondition',
      async (w) => {
        const v = await w.volumes.create(w.request('pvc-src'), log);
        await w.store.update(w.shares.layout(v.mount), {
          ...v.record,
          publications: [{ node: 'node-1', mode: 'SINGLE_NODE_WRITER', readonly: false }],
        });
        await w.snapshots.create('snap-1', 'pvc-src', {}, log);
        return { type: 'snapshot', id: 'snap-1' };
      },
    ],
    ['a volume that does not exist', 'notFound', async () => ({ type: 'volume', id: 'pvc-nope' })],
    ['a volume id that could leave the tree', 'invalid', async () => ({ type: 'volume', id: '../x' })],
    [
      'a qcow2 volume its node has yet to freeze for the clone',
      'busy',
      async (w) => {
        const v = await w.volumes.create(w.request('pvc-src'), log);
        await w.store.update(w.shares.layout(v.mount), {
          ...v.record,
          publications: [{ node: 'node-1', mode: 'SINGLE_NODE_WRITER', readonly: false }],
        });
        return { type: 'volume', id: 'pvc-src' };
      },
    ],
  ])('refuses %s (%s)', async (_what, kind, setup) => {
    const w = make();
    const source = await setup(w);
    await expect(resolve(w, source)).rejects.toMatchObject({ kind });
  });
});

describe('golden images', () => {
  /** An admin's image at `images/<name>` on share fast, made by the (fake) qemu-img. */
  async function golden(w: World, name = 'golden.qcow2') {
    const dir = join(w.shares.path('fast'), 'images');
    mkdirSync(dir, { recursive: true });
    await w.qemuImg.create(join(dir, name), 'qcow2', 8n * MiB);
    w.qemuImg.reset();
    return `fast/images/${name}`;
  }

  it('adopts the image once as a hidden base in the driver tree, keyed by path, size and time', async () => {
    const w = make({ reflinks: true });
    const sourceImage = await golden(w);
    const base = await resolve(w, undefined, { sourceImage });
    expect(base).toMatchObject({ mount: 'fast', format: 'qcow2', sizeBytes: 8n * MiB, internal: true, backing: null });
    expect(base?.snapshotId).toMatch(/^image-[0-9a-f]{24}$/);
    expect(await w.snapshotStore.read(w.shares.layout('fast'), base?.snapshotId ?? '')).toMatchObject({ internal: true, deleted: true });
    expect(w.files.ops()).toEqual(['reflink']);
    await resolve(w, undefined, { sourceImage });
    expect(w.files.ops()).toEqual(['reflink']);
  });

  it('flattens an image that has a backing file of its own, which the driver does not own', async () => {
    const w = make({ reflinks: true });
    const sourceImage = await golden(w);
    const dir = join(w.shares.path('fast'), 'images');
    await w.qemuImg.createOverlay(join(dir, 'top.qcow2'), 'golden.qcow2', 'qcow2', 8n * MiB);
    w.qemuImg.reset();
    const base = await resolve(w, undefined, { sourceImage: sourceImage.replace('golden', 'top') });
    expect(w.files.ops()).toEqual([]);
    expect(w.qemuImg.ops()).toContain('convert');
    expect((await w.qemuImg.info(base?.image ?? '')).backingFile).toBeUndefined();
  });

  it.each<[string, string, (w: World) => Promise<string>]>([
    ['a share that is not configured', 'invalid', async () => 'nope/images/golden.qcow2'],
    ['a file that does not exist', 'notFound', async () => 'fast/images/none.qcow2'],
    [
      'a link out of the share',
      'invalid',
      async (w) => {
        writeFileSync(join(w.shares.root, 'outside.qcow2'), 'x');
        symlinkSync(join(w.shares.root, 'outside.qcow2'), join(w.shares.path('fast'), 'escape.qcow2'));
        return 'fast/escape.qcow2';
      },
    ],
    [
      "a file inside the driver's own tree",
      'invalid',
      async (w) => {
        await w.volumes.create(w.request('pvc-1', { parameters: { mounts: 'fast' } }), log);
        return 'fast/filedriver/volumes/pvc-1/disk.qcow2';
      },
    ],
  ])('refuses %s (%s)', async (_what, kind, setup) => {
    const w = make();
    const sourceImage = await setup(w);
    await expect(resolve(w, undefined, { sourceImage })).rejects.toMatchObject({ kind });
  });
});
