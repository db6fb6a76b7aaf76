/**
 * The Controller and Identity services through the real server and socket,
 * on real mounts, with real qemu-img.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf } from '../helpers/client.js';
import { blockCap, createRequest, GiB, MiB, mountCap } from '../helpers/csi.js';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { startDriver, type Driver } from '../helpers/server.js';
import { ifMade } from '../helpers/teardown.js';

const DRIVER = 'filedriver.dev';
const key = (mount: string) => `${DRIVER}/mount-${mount}`;

function info(path: string): { format: string; 'virtual-size': number } {
  return JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path], { encoding: 'utf8' }));
}

describe.skipIf(!isRoot)('controller over the socket', () => {
  let big: Scratch;
  let small: Scratch;
  let driver: Driver;
  const vol = (s: Scratch, id: string) => join(s.path, 'filedriver', 'volumes', id);

  beforeAll(async () => {
    rootOnlyReason();
    big = makeScratch('xfs', 2048);
    small = makeScratch('ext4', 200);
    // No health cache: capacity figures must match statfs taken right before.
    driver = await startDriver({ mounts: { big: big.path, small: small.path }, args: ['--health-cache-seconds', '0'] });
  });
  afterAll(async () => {
    await ifMade(driver)?.stop();
    ifMade(big)?.cleanup();
    ifMade(small)?.cleanup();
  });

  it('reports plugin info, capabilities and readiness', async () => {
    const info = await driver.client.identity('GetPluginInfo');
    expect(info.name).toBe(DRIVER);
    expect(info.vendor_version).toMatch(/^\d+\.\d+\.\d+/);
    const caps = await driver.client.identity('GetPluginCapabilities');
    const types = caps.capabilities.map((c: any) => c.service?.type ?? c.volume_expansion?.type);
    expect(types).toEqual(['CONTROLLER_SERVICE', 'VOLUME_ACCESSIBILITY_CONSTRAINTS', 'ONLINE']);
    expect((await driver.client.identity('Probe')).ready.value).toBe(true);
    const ctrl = await driver.client.controller('ControllerGetCapabilities');
    expect(ctrl.capabilities.map((c: any) => c.rpc.type)).toEqual(
      expect.arrayContaining(['CREATE_DELETE_VOLUME', 'GET_CAPACITY', 'LIST_VOLUMES', 'EXPAND_VOLUME', 'GET_VOLUME', 'VOLUME_CONDITION']),
    );
  });

  it('creates a qcow2 volume by default on the mount with most room', async () => {
    const res = await driver.client.controller('CreateVolume', createRequest('pvc-default'));
    const v = res.volume;
    expect(v.volume_id).toBe('pvc-default');
    expect(v.capacity_bytes).toBe(String(64n * MiB));
    expect(v.volume_context).toEqual({ format: 'qcow2', mount: 'big' });
    expect(v.accessible_topology).toEqual([{ segments: { [key('big')]: 'true' } }]);
    const image = join(vol(big, 'pvc-default'), 'disk.qcow2');
    expect(info(image)).toMatchObject({ format: 'qcow2', 'virtual-size': 64 * 1024 * 1024 });
    const meta = JSON.parse(readFileSync(join(vol(big, 'pvc-default'), 'volume.json'), 'utf8'));
    expect(meta).toMatchObject({ id: 'pvc-default', name: 'pvc-default', format: 'qcow2', sizeBytes: String(64n * MiB) });
  });

  it('creates raw volumes, rounds sizes up to a MiB and honours the mounts parameter', async () => {
    const res = await driver.client.controller(
      'CreateVolume',
      createRequest('pvc-raw', { capacity_range: { required_bytes: String(10n * MiB + 1n) }, parameters: { format: 'raw', mounts: 'small' } }),
    );
    expect(res.volume.capacity_bytes).toBe(String(11n * MiB));
    expect(res.volume.volume_context).toEqual({ format: 'raw', mount: 'small' });
    expect(info(join(vol(small, 'pvc-raw'), 'disk.raw'))).toMatchObject({ format: 'raw', 'virtual-size': 11 * 1024 * 1024 });
  });

  it('is idempotent by name and refuses an incompatible repeat', async () => {
    const req = createRequest('pvc-idem', { parameters: { 'csi.storage.k8s.io/pvc/name': 'data', 'csi.storage.k8s.io/pvc/namespace': 'ns' } });
    const a = await driver.client.controller('CreateVolume', req);
    const b = await driver.client.controller('CreateVolume', req);
    expect(b).toEqual(a);
    expect(await codeOf(driver.client.controller('CreateVolume', { ...req, capacity_range: { required_bytes: String(GiB) } }))).toBe(
      status.ALREADY_EXISTS,
    );
    expect(await codeOf(driver.client.controller('CreateVolume', { ...req, parameters: { format: 'raw' } }))).toBe(status.ALREADY_EXISTS);
  });

  it('creates exactly one image for 50 concurrent identical requests', async () => {
    const req = createRequest('pvc-race');
    const results = await Promise.allSettled(Array.from({ length: 50 }, () => driver.client.controller('CreateVolume', req)));
    const ok = results.filter((r) => r.status === 'fulfilled');
    const aborted = results.filter((r) => r.status === 'rejected' && (r.reason as { code: status }).code === status.ABORTED);
    expect(ok.length).toBeGreaterThanOrEqual(1);
    expect(ok.length + aborted.length).toBe(50);
    const again = await driver.client.controller('CreateVolume', req);
    expect(again.volume.volume_id).toBe('pvc-race');
    const where = [big, small].filter((s) => existsSync(vol(s, 'pvc-race')));
    expect(where).toHaveLength(1);
    expect(readdirSync(vol(where[0]!, 'pvc-race')).sort()).toEqual(['disk.qcow2', 'volume.json']);
    expect(readdirSync(join(where[0]!.path, 'filedriver', 'tmp'))).toEqual([]);
  });

  it.each([
    ['no name', { ...createRequest(''), name: '' }, /name is required/],
    ['no capabilities', createRequest('pvc-x', { volume_capabilities: [] }), /volume_capabilities/],
    ['unknown parameter', createRequest('pvc-x', { parameters: { fromat: 'raw' } }), /"fromat".*valid: format, mounts/],
    ['bad format', createRequest('pvc-x', { parameters: { format: 'vmdk' } }), /qcow2 or raw/],
    ['bad preallocation for raw', createRequest('pvc-x', { parameters: { format: 'raw', preallocation: 'metadata' } }), /preallocation/],
    ['bad cluster size', createRequest('pvc-x', { parameters: { clusterSize: '3000' } }), /power of two/],
    ['unsupported fs', createRequest('pvc-x', { volume_capabilities: [mountCap('SINGLE_NODE_WRITER', 'btrfs')] }), /btrfs/],
    ['multi-writer filesystem', createRequest('pvc-x', { volume_capabilities: [mountCap('MULTI_NODE_MULTI_WRITER')] }), /block volume/],
    ['multi-writer qcow2 block', createRequest('pvc-x', { volume_capabilities: [blockCap('MULTI_NODE_MULTI_WRITER')] }), /format raw/],
    ['unknown mount', createRequest('pvc-x', { parameters: { mounts: 'nope' } }), /nope/],
  ])('rejects %s with INVALID_ARGUMENT', async (_name, req, message) => {
    const err = await driver.client.controller('CreateVolume', req).catch((e: unknown) => e as { code: number; details: string });
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).toMatch(message);
  });

  it('serves multi-node multi-writer for raw block volumes', async () => {
    const res = await driver.client.controller(
      'CreateVolume',
      createRequest('pvc-shared', { volume_capabilities: [blockCap('MULTI_NODE_MULTI_WRITER')], parameters: { format: 'raw' } }),
    );
    expect(res.volume.volume_context.format).toBe('raw');
  });

  it.each([
    ['limit below required', { required_bytes: String(10n * MiB), limit_bytes: String(5n * MiB) }, status.OUT_OF_RANGE],
    ['limit under a MiB', { limit_bytes: '1000' }, status.OUT_OF_RANGE],
    ['more than any mount holds', { required_bytes: String(10n * GiB) }, status.RESOURCE_EXHAUSTED],
  ])('refuses a capacity range: %s', async (_n, range, code) => {
    expect(await codeOf(driver.client.controller('CreateVolume', createRequest(`pvc-range-${code}`, { capacity_range: range })))).toBe(code);
  });

  it('uses the default size when no range is given, and the limit when only it is', async () => {
    const small1 = await driver.client.controller(
      'CreateVolume',
      createRequest('pvc-limit', { capacity_range: { limit_bytes: String(20n * MiB + 5n) } }),
    );
    expect(small1.volume.capacity_bytes).toBe(String(20n * MiB));
    const d = await driver.client.controller('CreateVolume', createRequest('pvc-nosize', { capacity_range: null, parameters: { mounts: 'big' } }));
    expect(d.volume.capacity_bytes).toBe(String(GiB));
  });

  it('places by requisite and preferred topology', async () => {
    const res = await driver.client.controller(
      'CreateVolume',
      createRequest('pvc-topo', { accessibility_requirements: { requisite: [{ segments: { [key('small')]: 'true' } }], preferred: [] } }),
    );
    expect(res.volume.volume_context.mount).toBe('small');
    const pref = await driver.client.controller(
      'CreateVolume',
      createRequest('pvc-pref', { accessibility_requirements: { requisite: [], preferred: [{ segments: { [key('small')]: 'true' } }] } }),
    );
    expect(pref.volume.volume_context.mount).toBe('small');
  });

  it('expands images, never shrinks, and asks the node to follow', async () => {
    await driver.client.controller('CreateVolume', createRequest('pvc-grow', { parameters: { mounts: 'big' } }));
    const res = await driver.client.controller('ControllerExpandVolume', {
      volume_id: 'pvc-grow',
      capacity_range: { required_bytes: String(100n * MiB) },
    });
    expect(res).toEqual({ capacity_bytes: String(100n * MiB), node_expansion_required: true });
    expect(info(join(vol(big, 'pvc-grow'), 'disk.qcow2'))['virtual-size']).toBe(100 * 1024 * 1024);
    const same = await driver.client.controller('ControllerExpandVolume', { volume_id: 'pvc-grow', capacity_range: { required_bytes: String(MiB) } });
    expect(same.capacity_bytes).toBe(String(100n * MiB));
    expect(
      await codeOf(
        driver.client.controller('ControllerExpandVolume', {
          volume_id: 'pvc-grow',
          capacity_range: { required_bytes: String(200n * MiB), limit_bytes: String(150n * MiB) },
        }),
      ),
    ).toBe(status.OUT_OF_RANGE);
    expect(await codeOf(driver.client.controller('ControllerExpandVolume', { volume_id: 'nope', capacity_range: { required_bytes: '1' } }))).toBe(
      status.NOT_FOUND,
    );
    expect(await codeOf(driver.client.controller('ControllerExpandVolume', { volume_id: 'pvc-grow' }))).toBe(status.INVALID_ARGUMENT);
  });

  it('reports volume condition: healthy, corrupted, image missing', async () => {
    await driver.client.controller('CreateVolume', createRequest('pvc-cond', { parameters: { mounts: 'big' } }));
    const ok = await driver.client.controller('ControllerGetVolume', { volume_id: 'pvc-cond' });
    expect(ok.volume.volume_id).toBe('pvc-cond');
    expect(ok.status.volume_condition.abnormal).toBe(false);
    const image = join(vol(big, 'pvc-cond'), 'disk.qcow2');
    // Break the qcow2 header's L1 table offset: qemu-img check must fail.
    const header = readFileSync(image);
    header.writeBigUInt64BE(0xffffffff00n, 40);
    writeFileSync(image, header);
    const bad = await driver.client.controller('ControllerGetVolume', { volume_id: 'pvc-cond' });
    expect(bad.status.volume_condition.abnormal).toBe(true);
    expect(bad.status.volume_condition.message).toMatch(/qemu-img check/);
    execFileSync('rm', [image]);
    const gone = await driver.client.controller('ControllerGetVolume', { volume_id: 'pvc-cond' });
    expect(gone.status.volume_condition).toEqual({ abnormal: true, message: expect.stringMatching(/missing/) });
    expect(await codeOf(driver.client.controller('ControllerGetVolume', { volume_id: 'nope' }))).toBe(status.NOT_FOUND);
  });

  it('reports in ListVolumes, from the image header, a qcow2 qemu marked corrupt and a missing image', async () => {
    for (const name of ['pvc-lc-ok', 'pvc-lc-corrupt', 'pvc-lc-gone']) {
      await driver.client.controller('CreateVolume', createRequest(name, { parameters: { mounts: 'big' } }));
    }
    await driver.client.controller('CreateVolume', createRequest('pvc-lc-rawgone', { parameters: { mounts: 'big', format: 'raw' } }));
    execFileSync('rm', [join(vol(big, 'pvc-lc-rawgone'), 'disk.raw')]);
    const corrupt = join(vol(big, 'pvc-lc-corrupt'), 'disk.qcow2');
    const header = readFileSync(corrupt);
    header.writeBigUInt64BE(header.readBigUInt64BE(72) | 2n, 72); // the "corrupt" incompatible-feature bit
    writeFileSync(corrupt, header);
    execFileSync('rm', [join(vol(big, 'pvc-lc-gone'), 'disk.qcow2')]);
    const conditions: Record<string, { abnormal: boolean; message: string }> = {};
    let token = '';
    do {
      const page = await driver.client.controller('ListVolumes', { max_entries: 50, starting_token: token });
      for (const e of page.entries) conditions[e.volume.volume_id] = e.status.volume_condition;
      token = page.next_token;
    } while (token !== '');
    expect(conditions['pvc-lc-ok']).toEqual({ abnormal: false, message: 'volume is healthy' });
    expect(conditions['pvc-lc-corrupt']).toEqual({ abnormal: true, message: expect.stringMatching(/marked the qcow2 image corrupt/) });
    expect(conditions['pvc-lc-gone']).toEqual({ abnormal: true, message: expect.stringMatching(/missing/) });
    expect(conditions['pvc-lc-rawgone']).toEqual({ abnormal: true, message: expect.stringMatching(/missing/) });
    const raw = await driver.client.controller('ControllerGetVolume', { volume_id: 'pvc-lc-rawgone' });
    expect(raw.status.volume_condition).toEqual({ abnormal: true, message: expect.stringMatching(/missing/) });
    for (const name of ['pvc-lc-ok', 'pvc-lc-corrupt', 'pvc-lc-gone', 'pvc-lc-rawgone'])
      await driver.client.controller('DeleteVolume', { volume_id: name });
  });

  it('never over-commits a mount with sparse raw images, even when many creates arrive at once', async () => {
    const tight = makeScratch('ext4', 200);
    const d = await startDriver({ mounts: { tight: tight.path }, args: ['--health-cache-seconds', '0'] });
    try {
      const make = (name: string, format: string) =>
        d.client.controller('CreateVolume', createRequest(name, { capacity_range: { required_bytes: String(120n * MiB) }, parameters: { format } }));
      // Eight at once, each larger than half the mount: exactly one fits, whatever the format.
      for (const format of ['raw', 'qcow2']) {
        const codes = await Promise.all(Array.from({ length: 8 }, (_, i) => codeOf(make(`pvc-tight-${format}-${i}`, format))));
        expect(
          codes.filter((c) => c === 'OK'),
          JSON.stringify(codes),
        ).toHaveLength(1);
        expect(
          codes.filter((c) => c === status.RESOURCE_EXHAUSTED),
          JSON.stringify(codes),
        ).toHaveLength(7);
        const left = await d.client.controller('GetCapacity', { parameters: { format } });
        expect(BigInt(left.available_capacity)).toBeLessThan(120n * MiB);
        const made = codes.findIndex((c) => c === 'OK');
        await d.client.controller('DeleteVolume', { volume_id: `pvc-tight-${format}-${made}` });
      }
      // Growth claims room the same way: two raw volumes may not both grow into the last 80-odd MiB.
      for (const n of ['a', 'b']) {
        await d.client.controller(
          'CreateVolume',
          createRequest(`pvc-grow-${n}`, { capacity_range: { required_bytes: String(50n * MiB) }, parameters: { format: 'raw' } }),
        );
      }
      const grown = await Promise.all(
        ['a', 'b'].map((n) =>
          codeOf(
            d.client.controller('ControllerExpandVolume', { volume_id: `pvc-grow-${n}`, capacity_range: { required_bytes: String(120n * MiB) } }),
          ),
        ),
      );
      expect(grown.sort()).toEqual([status.RESOURCE_EXHAUSTED, 'OK'].sort());
      for (const n of ['a', 'b']) await d.client.controller('DeleteVolume', { volume_id: `pvc-grow-${n}` });
    } finally {
      await d.stop();
      tight.cleanup();
    }
  });

  it('keeps serving a mount where one volume.json is corrupt, and names that file', async () => {
    const bad = join(vol(big, 'pvc-torn'), 'volume.json');
    await driver.client.controller('CreateVolume', createRequest('pvc-torn', { parameters: { mounts: 'big' } }));
    writeFileSync(bad, '{"schema": 1, "id": "pvc-to');
    await driver.client.controller('CreateVolume', createRequest('pvc-after-torn', { parameters: { mounts: 'big' } }));
    await driver.client.controller('GetCapacity', { parameters: { mounts: 'big' } });
    const listed: string[] = [];
    let token = '';
    do {
      const page = await driver.client.controller('ListVolumes', { max_entries: 100, starting_token: token });
      listed.push(...page.entries.map((e: { volume: { volume_id: string } }) => e.volume.volume_id));
      token = page.next_token;
    } while (token !== '');
    expect(listed).toContain('pvc-after-torn');
    expect(listed).not.toContain('pvc-torn');
    const err = await driver.client
      .controller('ControllerGetVolume', { volume_id: 'pvc-torn' })
      .catch((e: unknown) => e as { code: number; details: string });
    expect(err).toMatchObject({ code: status.INTERNAL, details: expect.stringMatching(/pvc-torn\/volume\.json is not valid JSON/) });
    // A record whose backing is not an id is refused before any path is built from it.
    writeFileSync(bad, JSON.stringify({ schema: 1, id: 'pvc-torn', name: 'pvc-torn', format: 'qcow2', sizeBytes: '1', backing: '../../../etc' }));
    expect(await codeOf(driver.client.controller('DeleteVolume', { volume_id: 'pvc-torn' }))).toBe(status.INTERNAL);
    expect(existsSync(join(vol(big, 'pvc-torn'), 'disk.qcow2'))).toBe(true);
    writeFileSync(bad, JSON.stringify({ schema: 1, id: 'pvc-torn', name: 'pvc-torn', format: 'qcow2', sizeBytes: String(64n * MiB), backing: null }));
    await driver.client.controller('DeleteVolume', { volume_id: 'pvc-torn' });
    await driver.client.controller('DeleteVolume', { volume_id: 'pvc-after-torn' });
  });

  it.each(['raw', 'qcow2'])('keeps a preallocated %s volume allocated when it grows', async (format) => {
    const name = `pvc-falloc-${format}`;
    await driver.client.controller(
      'CreateVolume',
      createRequest(name, { capacity_range: { required_bytes: String(16n * MiB) }, parameters: { mounts: 'big', format, preallocation: 'falloc' } }),
    );
    await driver.client.controller('ControllerExpandVolume', { volume_id: name, capacity_range: { required_bytes: String(48n * MiB) } });
    const image = join(vol(big, name), `disk.${format}`);
    const allocated = execFileSync('stat', ['-c', '%b*%B', image], { encoding: 'utf8' })
      .trim()
      .split('*')
      .map(BigInt)
      .reduce((a, b) => a * b);
    expect(allocated).toBeGreaterThanOrEqual(48n * MiB);
    await driver.client.controller('DeleteVolume', { volume_id: name });
  });

  it('validates capabilities against the volume', async () => {
    await driver.client.controller('CreateVolume', createRequest('pvc-val'));
    const ok = await driver.client.controller('ValidateVolumeCapabilities', { volume_id: 'pvc-val', volume_capabilities: [mountCap()] });
    expect(ok.confirmed.volume_capabilities).toHaveLength(1);
    const no = await driver.client.controller('ValidateVolumeCapabilities', {
      volume_id: 'pvc-val',
      volume_capabilities: [blockCap('MULTI_NODE_MULTI_WRITER')],
    });
    expect(no.confirmed).toBeNull();
    expect(no.message).toMatch(/raw/);
    expect(await codeOf(driver.client.controller('ValidateVolumeCapabilities', { volume_id: 'nope', volume_capabilities: [mountCap()] }))).toBe(
      status.NOT_FOUND,
    );
    expect(await codeOf(driver.client.controller('ValidateVolumeCapabilities', { volume_id: 'pvc-val' }))).toBe(status.INVALID_ARGUMENT);
  });

  it('deletes idempotently and only inside the driver tree', async () => {
    await driver.client.controller('CreateVolume', createRequest('pvc-del'));
    await driver.client.controller('DeleteVolume', { volume_id: 'pvc-del' });
    await driver.client.controller('DeleteVolume', { volume_id: 'pvc-del' });
    expect(existsSync(vol(big, 'pvc-del')) || existsSync(vol(small, 'pvc-del'))).toBe(false);
    await driver.client.controller('DeleteVolume', { volume_id: 'never-existed' });
  });

  it.each([['../etc'], ['a/b'], ['.'], ['..'], ['x'.repeat(129)], ['bad\0id'], ['']])(
    'rejects the malformed id %j before touching the filesystem',
    async (id) => {
      for (const method of ['DeleteVolume', 'ControllerGetVolume']) {
        expect(await codeOf(driver.client.controller(method, { volume_id: id }))).toBe(status.INVALID_ARGUMENT);
      }
      expect(await codeOf(driver.client.controller('ControllerExpandVolume', { volume_id: id, capacity_range: { required_bytes: '1' } }))).toBe(
        status.INVALID_ARGUMENT,
      );
    },
  );

  it('lists volumes in pages that survive changes between pages', async () => {
    const all: string[] = [];
    let token = '';
    let pages = 0;
    do {
      const page = await driver.client.controller('ListVolumes', { max_entries: 3, starting_token: token });
      expect(page.entries.length).toBeLessThanOrEqual(3);
      for (const e of page.entries) all.push(e.volume.volume_id);
      if (pages === 0) {
        await driver.client.controller('DeleteVolume', { volume_id: all[0] }); // already returned
        await driver.client.controller('CreateVolume', createRequest('zzz-added-later'));
      }
      token = page.next_token;
      pages++;
    } while (token !== '');
    expect(pages).toBeGreaterThan(1);
    expect(new Set(all).size).toBe(all.length);
    expect(all).toEqual([...all].sort());
    expect(all).toContain('zzz-added-later');
    expect(all).toContain('pvc-raw');
    expect(await codeOf(driver.client.controller('ListVolumes', { starting_token: 'not/a/token' }))).toBe(status.ABORTED);
    const one = await driver.client.controller('ListVolumes', { max_entries: 1 });
    expect(one.entries[0].status.volume_condition).toBeDefined();
  });

  it('reports capacity per topology segment, format and mounts', async () => {
    // Raw images may not over-commit: a mount's room is the lesser of its free bytes and its
    // size less the raw and preallocated volumes' sizes (sparse raw files take no space until written).
    const room = (sc: Scratch) => {
      const [free, total, bsize] = execFileSync('stat', ['-f', '-c', '%a %b %S', sc.path], { encoding: 'utf8' }).trim().split(' ').map(BigInt);
      const dir = join(sc.path, 'filedriver', 'volumes');
      const records = readdirSync(dir).map(
        (id) =>
          JSON.parse(readFileSync(join(dir, id, 'volume.json'), 'utf8')) as {
            format: string;
            sizeBytes: string;
            parameters?: Record<string, string>;
          },
      );
      const thick = records.filter((r) => r.format === 'raw' || ['falloc', 'full'].includes(r.parameters?.preallocation ?? ''));
      const committed = thick.reduce((sum, r) => sum + BigInt(r.sizeBytes), 0n);
      const byCommitment = total! * bsize! - committed;
      const byFree = free! * bsize!;
      return byCommitment < byFree ? byCommitment : byFree;
    };
    const raw = await driver.client.controller('GetCapacity', { parameters: { format: 'raw' } });
    const expected = room(big) + room(small);
    // Free space moves a little as the filesystems settle, and each room is whole MiB: within 2 MiB.
    expect(Number(BigInt(raw.available_capacity) - expected)).toBeLessThan(Number(2n * MiB));
    expect(Number(expected - BigInt(raw.available_capacity))).toBeLessThan(Number(2n * MiB));
    const onlySmall = await driver.client.controller('GetCapacity', {
      parameters: { format: 'raw' },
      accessible_topology: { segments: { [key('small')]: 'true' } },
    });
    expect(BigInt(onlySmall.available_capacity)).toBeLessThan(BigInt(raw.available_capacity));
    expect(onlySmall.maximum_volume_size.value).toBe(onlySmall.available_capacity);
    expect(onlySmall.minimum_volume_size.value).toBe(String(MiB));
    const classSmall = await driver.client.controller('GetCapacity', { parameters: { format: 'raw', mounts: 'small' } });
    expect(classSmall.available_capacity).toBe(onlySmall.available_capacity);
    const unsupported = await driver.client.controller('GetCapacity', { volume_capabilities: [blockCap('MULTI_NODE_MULTI_WRITER')] });
    expect(unsupported.available_capacity).toBe('0');
    expect(await codeOf(driver.client.controller('GetCapacity', { parameters: { nope: '1' } }))).toBe(status.INVALID_ARGUMENT);
  });
});
