/**
 * Snapshots, clones and golden images through the real server, on an xfs
 * mount with reflink and one without, checked with qemu-io reads of the data.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf } from '../helpers/client.js';
import { createRequest, MiB, mountCap } from '../helpers/csi.js';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { startDriver, type Driver } from '../helpers/server.js';
import { ifMade } from '../helpers/teardown.js';

/** Writes or checks a byte pattern with qemu-io (exit 0 only when the read matches). */
function qemuIo(image: string, format: string, command: string): string {
  // Reads open read-only and share the image: a background merge may hold it, and never changes what it reads.
  const shared = command.startsWith('read') ? ['-r', '-U'] : [];
  return execFileSync('qemu-io', [...shared, '-f', format, '-c', command, image], { encoding: 'utf8' });
}
/** qemu-io exits 1 and says so on stdout when the data differs from the pattern. */
function matches(image: string, format: string, pattern: number, offset = 0, len = '1M'): boolean {
  try {
    return !/Pattern verification failed/.test(qemuIo(image, format, `read -P 0x${pattern.toString(16)} ${offset} ${len}`));
  } catch (e) {
    if (/Pattern verification failed/.test(String((e as { stdout?: string }).stdout))) return false;
    throw e;
  }
}

describe.skipIf(!isRoot)('snapshots and clones', () => {
  let fast: Scratch;
  let plain: Scratch;
  let driver: Driver;
  /** As the sidecars call: ABORTED (the volume is busy, e.g. with a background merge) is retried. */
  const c = async (method: string, req: object): Promise<Record<string, any>> => {
    for (let i = 0; ; i++) {
      try {
        return await driver.client.controller(method, req);
      } catch (e) {
        if ((e as { code?: number }).code !== status.ABORTED || i >= 100) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  /** Waits for the background merge to take a deleted snapshot into its one dependent and remove it. */
  const mergedAway = async (dir: string) => {
    for (let i = 0; i < 300 && existsSync(dir); i++) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(dir)).toBe(false);
  };
  const volImage = (s: Scratch, id: string, format = 'qcow2') => join(s.path, 'filedriver/volumes', id, `disk.${format}`);
  const snapDir = (s: Scratch, id: string) => join(s.path, 'filedriver/snapshots', id);
  const snapMeta = (s: Scratch, id: string) => JSON.parse(readFileSync(join(snapDir(s, id), 'snapshot.json'), 'utf8'));
  const onFast = (name: string, extra: Record<string, unknown> = {}) =>
    c('CreateVolume', createRequest(name, { parameters: { mounts: 'fast' }, ...extra }));

  beforeAll(async () => {
    rootOnlyReason();
    fast = makeScratch('xfs', 1024);
    plain = makeScratch('xfs-noreflink', 1024);
    driver = await startDriver({ mounts: { fast: fast.path, plain: plain.path }, args: ['--over-subscription', '10'] });
  });
  afterAll(async () => {
    await ifMade(driver)?.stop();
    ifMade(fast)?.cleanup();
    ifMade(plain)?.cleanup();
  });

  it('snapshots by reflink, immutably, and idempotently by name', async () => {
    await onFast('pvc-src');
    qemuIo(volImage(fast, 'pvc-src'), 'qcow2', 'write -P 0xab 0 1M');
    const res = await c('CreateSnapshot', { name: 'snap-1', source_volume_id: 'pvc-src' });
    expect(res.snapshot).toMatchObject({ snapshot_id: 'snap-1', source_volume_id: 'pvc-src', size_bytes: String(64n * MiB), ready_to_use: true });
    expect(Number(res.snapshot.creation_time.seconds)).toBeGreaterThan(1_700_000_000);
    expect(snapMeta(fast, 'snap-1').method).toBe('reflink');
    expect(await c('CreateSnapshot', { name: 'snap-1', source_volume_id: 'pvc-src' })).toEqual(res);
    qemuIo(volImage(fast, 'pvc-src'), 'qcow2', 'write -P 0xcd 0 1M');
    expect(matches(join(snapDir(fast, 'snap-1'), 'disk.qcow2'), 'qcow2', 0xab)).toBe(true);
    expect(matches(volImage(fast, 'pvc-src'), 'qcow2', 0xcd)).toBe(true);
  });

  it('falls back to a copy where the mount has no reflink', async () => {
    await c('CreateVolume', createRequest('pvc-plain', { parameters: { mounts: 'plain', format: 'raw' } }));
    qemuIo(volImage(plain, 'pvc-plain', 'raw'), 'raw', 'write -P 0x11 1M 1M');
    await c('CreateSnapshot', { name: 'snap-plain', source_volume_id: 'pvc-plain' });
    expect(snapMeta(plain, 'snap-plain')).toMatchObject({ method: 'copy', format: 'raw' });
    expect(matches(join(snapDir(plain, 'snap-plain'), 'disk.raw'), 'raw', 0x11, 1024 * 1024)).toBe(true);
  });

  it('refuses to copy an attached raw volume where the mount cannot reflink, and reflinks one where it can', async () => {
    const publish = (volume_id: string) =>
      c('ControllerPublishVolume', { volume_id, node_id: 'node-a', volume_capability: mountCap(), readonly: false });
    const raw = { mounts: 'plain', format: 'raw' };
    await c('CreateVolume', createRequest('pvc-plain-busy', { parameters: raw }));
    await publish('pvc-plain-busy');
    const refused = c('CreateSnapshot', { name: 'snap-plain-busy', source_volume_id: 'pvc-plain-busy' });
    await expect(refused).rejects.toMatchObject({
      code: status.FAILED_PRECONDITION,
      details: expect.stringMatching(/attached to node\(s\) node-a.*cannot reflink/),
    });
    expect(
      await codeOf(
        c('CreateVolume', createRequest('pvc-plain-clone', { parameters: raw, volume_content_source: { volume: { volume_id: 'pvc-plain-busy' } } })),
      ),
    ).toBe(status.FAILED_PRECONDITION);
    // Nothing half-made is left: no snapshot, no hidden base, no clone.
    expect(readdirNames(join(plain.path, 'filedriver/snapshots')).filter((n) => n.includes('plain-busy'))).toEqual([]);
    expect(existsSync(join(plain.path, 'filedriver/volumes/pvc-plain-clone'))).toBe(false);
    await c('ControllerUnpublishVolume', { volume_id: 'pvc-plain-busy', node_id: 'node-a' });
    expect((await c('CreateSnapshot', { name: 'snap-plain-busy', source_volume_id: 'pvc-plain-busy' })).snapshot.ready_to_use).toBe(true);
    await onFast('pvc-fast-busy');
    await publish('pvc-fast-busy');
    await c('CreateSnapshot', { name: 'snap-fast-busy', source_volume_id: 'pvc-fast-busy' });
    expect(snapMeta(fast, 'snap-fast-busy').method).toBe('reflink');
    await c('ControllerUnpublishVolume', { volume_id: 'pvc-fast-busy', node_id: 'node-a' });
    for (const id of ['snap-plain-busy', 'snap-fast-busy']) await c('DeleteSnapshot', { snapshot_id: id });
    for (const id of ['pvc-plain-busy', 'pvc-fast-busy']) await c('DeleteVolume', { volume_id: id });
  });

  it.each([
    ['no name', { source_volume_id: 'pvc-src' }, status.INVALID_ARGUMENT],
    ['no source', { name: 'snap-x' }, status.INVALID_ARGUMENT],
    ['unknown source', { name: 'snap-x', source_volume_id: 'nope' }, status.NOT_FOUND],
    ['a name taken by another source', { name: 'snap-1', source_volume_id: 'pvc-plain' }, status.ALREADY_EXISTS],
    ['an unknown parameter', { name: 'snap-y', source_volume_id: 'pvc-src', parameters: { x: '1' } }, status.INVALID_ARGUMENT],
  ])('refuses a snapshot with %s', async (_n, req, code) => {
    expect(await codeOf(c('CreateSnapshot', req))).toBe(code);
  });

  it('makes O(1) linked clones of a snapshot that outlive its deletion', async () => {
    const res = await onFast('pvc-clone', {
      capacity_range: { required_bytes: String(128n * MiB) },
      volume_content_source: { snapshot: { snapshot_id: 'snap-1' } },
    });
    expect(res.volume.content_source).toEqual({ snapshot: { snapshot_id: 'snap-1' }, type: 'snapshot' });
    expect(res.volume.capacity_bytes).toBe(String(128n * MiB));
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', volImage(fast, 'pvc-clone')], { encoding: 'utf8' }));
    expect(info['backing-filename']).toBe('../../snapshots/snap-1/disk.qcow2');
    expect(info['virtual-size']).toBe(128 * 1024 * 1024);
    expect(matches(volImage(fast, 'pvc-clone'), 'qcow2', 0xab)).toBe(true);

    await c('DeleteSnapshot', { snapshot_id: 'snap-1' });
    await c('DeleteSnapshot', { snapshot_id: 'snap-1' });
    expect((await c('ListSnapshots', { snapshot_id: 'snap-1' })).entries).toEqual([]);
    expect(await codeOf(onFast('pvc-late', { volume_content_source: { snapshot: { snapshot_id: 'snap-1' } } }))).toBe(status.NOT_FOUND);
    // Its one dependent takes its data (a merge in the background), then it goes.
    await mergedAway(snapDir(fast, 'snap-1'));
    expect(JSON.parse(readFileSync(join(fast.path, 'filedriver/volumes/pvc-clone/volume.json'), 'utf8')).backing).toBeNull();
    expect(matches(volImage(fast, 'pvc-clone'), 'qcow2', 0xab)).toBe(true);
    await c('DeleteVolume', { volume_id: 'pvc-clone' });
  });

  it('makes full clones, also into another format', async () => {
    await c('CreateSnapshot', { name: 'snap-2', source_volume_id: 'pvc-src' });
    const res = await onFast('pvc-full', {
      parameters: { mounts: 'fast', format: 'raw' },
      volume_content_source: { snapshot: { snapshot_id: 'snap-2' } },
    });
    expect(res.volume.volume_context.format).toBe('raw');
    expect(matches(volImage(fast, 'pvc-full', 'raw'), 'raw', 0xcd)).toBe(true);
    await c('DeleteSnapshot', { snapshot_id: 'snap-2' });
    expect(existsSync(snapDir(fast, 'snap-2'))).toBe(false); // nothing depends on it
    expect(matches(volImage(fast, 'pvc-full', 'raw'), 'raw', 0xcd)).toBe(true);
  });

  it('clones a live volume through a hidden base that goes with the clone', async () => {
    const res = await onFast('pvc-vclone', { volume_content_source: { volume: { volume_id: 'pvc-src' } } });
    expect(res.volume.content_source.volume.volume_id).toBe('pvc-src');
    qemuIo(volImage(fast, 'pvc-src'), 'qcow2', 'write -P 0xee 0 1M');
    expect(matches(volImage(fast, 'pvc-vclone'), 'qcow2', 0xcd)).toBe(true);
    const listed = await c('ListSnapshots', {});
    expect(listed.entries.map((e: any) => e.snapshot.snapshot_id)).not.toContain(expect.stringMatching(/^clone-of/));
    await c('DeleteVolume', { volume_id: 'pvc-vclone' });
    expect(readdirNames(join(fast.path, 'filedriver/snapshots')).filter((n) => n.startsWith('clone-of'))).toEqual([]);
  });

  it('starts every volume of a golden-image class as a linked clone of one adopted base', async () => {
    const dir = join(fast.path, 'images');
    mkdirSync(dir, { recursive: true });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '32M']);
    qemuIo(join(dir, 'base.qcow2'), 'qcow2', 'write -P 0x5a 0 1M');
    const params = { mounts: 'fast', sourceImage: 'fast/images/base.qcow2' };
    await onFast('pvc-gold-1', { parameters: params });
    await onFast('pvc-gold-2', { parameters: params });
    for (const id of ['pvc-gold-1', 'pvc-gold-2']) expect(matches(volImage(fast, id), 'qcow2', 0x5a)).toBe(true);
    const bases = readdirNames(join(fast.path, 'filedriver/snapshots')).filter((n) => n.startsWith('image-'));
    expect(bases).toHaveLength(1);
    expect(readdirNames(join(fast.path, 'filedriver/snapshots', bases[0]!, 'refs')).sort()).toEqual(['pvc-gold-1', 'pvc-gold-2']);
    await c('DeleteVolume', { volume_id: 'pvc-gold-1' });
    expect(existsSync(join(fast.path, 'filedriver/snapshots', bases[0]!))).toBe(true);
    await c('DeleteVolume', { volume_id: 'pvc-gold-2' });
    expect(existsSync(join(fast.path, 'filedriver/snapshots', bases[0]!))).toBe(false);
    expect(existsSync(join(dir, 'base.qcow2'))).toBe(true); // the admin's image is never touched
    expect(await codeOf(onFast('pvc-gold-bad', { parameters: { mounts: 'fast', sourceImage: 'fast/../etc/passwd' } }))).toBe(status.INVALID_ARGUMENT);
  });

  it('adopts a golden image that is itself an overlay as a flattened base, never keeping its backing reference', async () => {
    const dir = join(fast.path, 'images');
    mkdirSync(dir, { recursive: true });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'os.qcow2'), '32M']);
    qemuIo(join(dir, 'os.qcow2'), 'qcow2', 'write -P 0x61 0 1M');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'os.qcow2', '-F', 'qcow2', join(dir, 'app.qcow2')]);
    qemuIo(join(dir, 'app.qcow2'), 'qcow2', 'write -P 0x62 1M 1M');
    await onFast('pvc-gold-overlay', { parameters: { mounts: 'fast', sourceImage: 'fast/images/app.qcow2' } });
    const base = readdirNames(join(fast.path, 'filedriver/snapshots')).find((n) => n.startsWith('image-'));
    expect(base).toBeDefined();
    const baseImage = join(fast.path, 'filedriver/snapshots', base!, 'disk.qcow2');
    const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', baseImage], { encoding: 'utf8' })) as Record<string, unknown>;
    expect(info['backing-filename']).toBeUndefined();
    expect(snapMeta(fast, base!).method).toBe('copy');
    // The clone reads both layers' data, and keeps reading it after the admin's files are gone.
    execFileSync('rm', [join(dir, 'app.qcow2'), join(dir, 'os.qcow2')]);
    expect(matches(volImage(fast, 'pvc-gold-overlay'), 'qcow2', 0x61, 0)).toBe(true);
    expect(matches(volImage(fast, 'pvc-gold-overlay'), 'qcow2', 0x62, 1024 * 1024)).toBe(true);
    await c('DeleteVolume', { volume_id: 'pvc-gold-overlay' });
  });

  it('lists snapshots with filters and pagination', async () => {
    for (const n of ['snap-a', 'snap-b', 'snap-c']) await c('CreateSnapshot', { name: n, source_volume_id: 'pvc-src' });
    const ids: string[] = [];
    let token = '';
    do {
      const page = await c('ListSnapshots', { max_entries: 2, starting_token: token, source_volume_id: 'pvc-src' });
      ids.push(...page.entries.map((e: any) => e.snapshot.snapshot_id));
      token = page.next_token;
    } while (token !== '');
    expect(ids).toEqual(['snap-a', 'snap-b', 'snap-c']);
    expect((await c('ListSnapshots', { source_volume_id: 'pvc-plain' })).entries.map((e: any) => e.snapshot.snapshot_id)).toEqual(['snap-plain']);
    expect((await c('ListSnapshots', { snapshot_id: 'snap-b' })).entries).toHaveLength(1);
    expect((await c('ListSnapshots', { snapshot_id: 'no-such' })).entries).toEqual([]);
    expect(await codeOf(c('ListSnapshots', { starting_token: '../x' }))).toBe(status.ABORTED);
    await c('DeleteSnapshot', { snapshot_id: 'never-was' });
  });

  it('keeps a linked clone readable after its source volume is deleted', async () => {
    await c('CreateSnapshot', { name: 'snap-keep', source_volume_id: 'pvc-src' });
    await onFast('pvc-keep', { volume_content_source: { snapshot: { snapshot_id: 'snap-keep' } } });
    await c('DeleteSnapshot', { snapshot_id: 'snap-keep' });
    for (const n of ['snap-a', 'snap-b', 'snap-c']) await c('DeleteSnapshot', { snapshot_id: n });
    await c('DeleteVolume', { volume_id: 'pvc-src' });
    await mergedAway(snapDir(fast, 'snap-keep'));
    expect(matches(volImage(fast, 'pvc-keep'), 'qcow2', 0xee)).toBe(true);
    const check = execFileSync('qemu-img', ['check', volImage(fast, 'pvc-keep')], { encoding: 'utf8' });
    expect(check).toMatch(/No errors/);
  });
});

describe.skipIf(!isRoot)('a snapshot on a full share', () => {
  let small: Scratch;
  let driver: Driver;
  beforeAll(async () => {
    rootOnlyReason();
    small = makeScratch('tmpfs', 64);
    driver = await startDriver({ mounts: { small: small.path } });
  });
  afterAll(async () => {
    await ifMade(driver)?.stop();
    ifMade(small)?.cleanup();
  });

  it('is RESOURCE_EXHAUSTED, not INTERNAL, and leaves nothing half-made', async () => {
    await driver.client.controller(
      'CreateVolume',
      createRequest('pvc-full', { parameters: { format: 'raw' }, capacity_range: { required_bytes: String(40n * MiB) } }),
    );
    qemuIo(join(small.path, 'filedriver/volumes/pvc-full/disk.raw'), 'raw', 'write -P 0x5a 0 40M');
    const err = await driver.client
      .controller('CreateSnapshot', { name: 'snap-full', source_volume_id: 'pvc-full' })
      .catch((e: unknown) => e as { code: number; details: string });
    expect(err).toMatchObject({ code: status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/no room left for snapshot snap-full/) });
    expect(readdirNames(join(small.path, 'filedriver/snapshots'))).toEqual([]);
    expect(readdirNames(join(small.path, 'filedriver/tmp')).filter((n) => !n.startsWith('.probe'))).toEqual([]);
  });
});

function readdirNames(dir: string): string[] {
  return existsSync(dir) ? execFileSync('ls', ['-1', dir], { encoding: 'utf8' }).split('\n').filter(Boolean) : [];
}
