import { describe, expect, it } from 'vitest';
import { checkId, idFromName, isValidId } from '../../src/domain/ids.js';
import { parseClusterSize, parseParameters } from '../../src/domain/parameters.js';
import { place, roomFor, type MountRoom } from '../../src/domain/placement.js';
import { fitsRange, GiB, MiB, parseBytes, sizeFor } from '../../src/domain/sizes.js';

describe('ids', () => {
  it.each([['pvc-1'], ['a.b_c-D'], ['x'.repeat(128)]])('accepts %s', (id) => expect(isValidId(id)).toBe(true));
  it.each([[''], ['.'], ['..'], ['a/b'], ['../x'], ['x'.repeat(129)], ['a\0b'], ['a b']])('rejects %j', (id) => {
    expect(isValidId(id)).toBe(false);
    expect(() => checkId(id, 'volume_id')).toThrow(/volume_id/);
  });
  it('keeps safe names readable and hashes the rest deterministically', () => {
    expect(idFromName('pvc-0f1e')).toBe('pvc-0f1e');
    const hashed = idFromName('weird name/with slash');
    expect(hashed).toMatch(/^h-[0-9a-f]{40}$/);
    expect(idFromName('weird name/with slash')).toBe(hashed);
    expect(isValidId(idFromName('.hidden'))).toBe(true);
    expect(idFromName('.hidden')).not.toBe('.hidden');
  });
});

describe('sizes', () => {
  it.each([
    [{ requiredBytes: 0n, limitBytes: 0n }, GiB],
    [{ requiredBytes: 1n, limitBytes: 0n }, MiB],
    [{ requiredBytes: MiB + 1n, limitBytes: 0n }, 2n * MiB],
    [{ requiredBytes: 0n, limitBytes: 10n * MiB + 3n }, 10n * MiB],
    [{ requiredBytes: MiB, limitBytes: 2n * MiB }, MiB],
    [{ requiredBytes: MiB + 1n, limitBytes: MiB + 2n }, undefined],
    [{ requiredBytes: 0n, limitBytes: 100n }, undefined],
    [{ requiredBytes: 5n, limitBytes: 4n }, undefined],
  ])('sizeFor(%o) = %s', (range, expected) => {
    if (expected === undefined) expect(() => sizeFor(range, GiB)).toThrow(expect.objectContaining({ kind: 'outOfRange' }));
    else expect(sizeFor(range, GiB)).toBe(expected);
  });
  it('parses int64 strings exactly above 2^53', () => {
    expect(parseBytes('9007199254740993', 'required_bytes')).toBe(9007199254740993n);
    expect(() => parseBytes('-1', 'x')).toThrow(/negative/);
    expect(() => parseBytes('9223372036854775808', 'x')).toThrow(/int64/);
  });
  it('checks ranges for reuse', () => {
    expect(fitsRange(2n * MiB, { requiredBytes: MiB, limitBytes: 0n })).toBe(true);
    expect(fitsRange(2n * MiB, { requiredBytes: 3n * MiB, limitBytes: 0n })).toBe(false);
    expect(fitsRange(2n * MiB, { requiredBytes: 0n, limitBytes: MiB })).toBe(false);
  });
});

describe('parameters', () => {
  it('defaults and accepts provisioner metadata keys', () => {
    const p = parseParameters({ 'csi.storage.k8s.io/pvc/name': 'data', 'csi.storage.k8s.io/pvc/namespace': 'ns' }, 'raw');
    expect(p).toMatchObject({ format: 'raw', preallocation: 'off', mounts: undefined, pvcName: 'data', pvcNamespace: 'ns' });
  });
  it.each([
    [{ foo: '1' }, /unknown StorageClass parameter "foo"; valid: format, mounts, preallocation, clusterSize/],
    [{ format: 'vdi' }, /qcow2 or raw/],
    [{ format: 'raw', preallocation: 'metadata' }, /not valid for raw/],
    [{ format: 'raw', clusterSize: '64k' }, /only to format qcow2/],
    [{ mounts: ' , ' }, /at least one mount/],
  ])('rejects %o', (params, message) => expect(() => parseParameters(params, 'qcow2')).toThrow(message));
  it.each([
    ['65536', 65536n],
    ['64k', 65536n],
    ['2M', 2097152n],
  ])('parses cluster size %s', (t, n) => expect(parseClusterSize(t)).toBe(n));
  it.each([['256'], ['4M'], ['3000'], ['x']])('rejects cluster size %s', (t) => expect(() => parseClusterSize(t)).toThrow());
});

describe('placement', () => {
  const key = (m: string) => `d/mount-${m}`;
  const room = (name: string, free: bigint, extra: Partial<MountRoom> = {}): MountRoom => ({
    name,
    usable: true,
    reason: undefined,
    freeBytes: free,
    totalBytes: 10n * GiB,
    committedBytes: 0n,
    committedThickBytes: 0n,
    ...extra,
  });
  const req = { sizeBytes: GiB, thin: false, ratio: 1, allowed: undefined, requisite: [], preferred: [], keyOf: key };

  it('picks the mount with most free space', () => {
    expect(place([room('a', 2n * GiB), room('b', 5n * GiB)], req)).toEqual({ mount: 'b' });
  });
  it('puts preferred segments first, within requisite', () => {
    const mounts = [room('a', 2n * GiB), room('b', 5n * GiB), room('c', 9n * GiB)];
    const r = { ...req, requisite: [{ [key('a')]: 'true', [key('b')]: 'true' }], preferred: [{ [key('a')]: 'true' }] };
    expect(place(mounts, r)).toEqual({ mount: 'a' });
  });
  it('explains per mount why nothing fits', () => {
    const result = place([room('a', MiB), room('b', 5n * GiB, { usable: false, reason: 'not mounted' })], req);
    expect(result.mount).toBeUndefined();
    if (result.mount === undefined) {
      expect(result.reasons.join('\n')).toMatch(/a: room for/);
      expect(result.reasons.join('\n')).toMatch(/b: unusable \(not mounted\)/);
    }
  });
  it('limits thin volumes by commitment times the over-subscription ratio', () => {
    const m = room('a', 10n * GiB, { committedBytes: 9n * GiB });
    expect(roomFor(m, true, 1)).toBe(GiB);
    expect(roomFor(m, true, 2)).toBe(11n * GiB);
    expect(roomFor({ ...m, usable: false }, true, 2)).toBe(0n);
  });
  it('never over-commits thick volumes, though sparse raw images leave the free space untouched', () => {
    // Nine 1 GiB raw volumes, never written: 9 GiB promised, nothing used.
    const m = room('a', 10n * GiB, { committedBytes: 9n * GiB, committedThickBytes: 9n * GiB });
    expect(roomFor(m, false, 2)).toBe(GiB);
    expect(roomFor({ ...m, committedBytes: 0n, committedThickBytes: 0n, freeBytes: 3n * GiB }, false, 2)).toBe(3n * GiB);
    expect(place([m], { ...req, sizeBytes: 2n * GiB }).mount).toBeUndefined();
    // Thin volumes over-committed by the admin's ratio do not block a thick one the free space can hold.
    const thinHeavy = room('b', 10n * GiB, { committedBytes: 30n * GiB, committedThickBytes: 0n });
    expect(roomFor(thinHeavy, false, 4)).toBe(10n * GiB);
    expect(roomFor(thinHeavy, true, 4)).toBe(10n * GiB);
    expect(roomFor(thinHeavy, true, 3)).toBe(0n);
  });
  it('respects the allowed mounts', () => {
    expect(place([room('a', GiB), room('b', 5n * GiB)], { ...req, allowed: ['a'] })).toEqual({ mount: 'a' });
  });
});

describe('hidden clone bases', () => {
  it('keeps short names readable and hashes long ones apart', async () => {
    const { cloneBaseId } = await import('../../src/controller/sources.js');
    expect(cloneBaseId('pvc-a', 'pvc-b')).toBe('clone-of-pvc-a-for-pvc-b');
    const long = 'p'.repeat(100);
    const one = cloneBaseId(long, `${long}-1`);
    const two = cloneBaseId(long, `${long}-2`);
    expect(one).not.toBe(two);
    for (const id of [one, two]) expect(id.length).toBeLessThanOrEqual(128);
  });
});
