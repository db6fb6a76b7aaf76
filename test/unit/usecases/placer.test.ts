/** Placer on fake shares: which share a volume goes to, by room, topology and class, one claim at a time. */
import { afterEach, describe, expect, it } from 'vitest';
import type { Claim } from '../../../src/controller/placer.js';
import { MiB } from '../../../src/domain/sizes.js';
import { keyOf, log, world, type World, type WorldOptions } from './world.js';

const worlds: World[] = [];
afterEach(() => {
  for (const w of worlds.splice(0)) w.cleanup();
});
/** Shares whose free bytes are also their size (empty shares), in MiB. */
function shares(space: Record<string, number>, options: WorldOptions = {}) {
  const w = world({ ...options, shares: Object.keys(space), space: Object.fromEntries(Object.entries(space).map(([n, m]) => [n, BigInt(m) * MiB])) });
  worlds.push(w);
  for (const [name, m] of Object.entries(space)) w.shares.probes.set(w.shares.path(name), { totalBytes: BigInt(m) * MiB });
  return w;
}
const claim = (over: Partial<Claim> = {}): Claim => ({
  id: 'pvc-1',
  name: 'pvc-1',
  sizeBytes: 10n * MiB,
  thin: true,
  allowed: undefined,
  requisite: [],
  preferred: [],
  ...over,
});
const seg = (...mounts: string[]) => Object.fromEntries(mounts.map((m) => [keyOf(m), 'true']));

describe('placement', () => {
  it.each<[string, Record<string, number>, Partial<Claim>, string]>([
    ['the share with most room', { a: 100, b: 300, c: 200 }, {}, 'b'],
    ['the first by name between equals', { b: 100, a: 100 }, {}, 'a'],
    ['a share the class allows', { a: 100, b: 300 }, { allowed: ['a'] }, 'a'],
    ['a share in the requisite topology', { a: 100, b: 300 }, { requisite: [seg('a')] }, 'a'],
    ['the preferred segment first, in its order', { a: 100, b: 300, c: 200 }, { preferred: [seg('c'), seg('b')] }, 'c'],
    ['a share with room when a preferred one has none', { a: 5, b: 300 }, { preferred: [seg('a')] }, 'b'],
    ['the one share a big volume fits on', { a: 100, b: 50 }, { sizeBytes: 80n * MiB }, 'a'],
  ])('puts a volume on %s', async (_what, space, over, expected) => {
    const w = shares(space);
    const placed = await w.placer.claim(claim(over));
    expect(placed.mount).toBe(expected);
    placed.release();
  });

  it.each<[string, Record<string, number>, Partial<Claim>, RegExp]>([
    ['no share has the room', { a: 10, b: 20 }, { sizeBytes: 30n * MiB }, /a: room for 10485760 bytes.*b: room for 20971520 bytes/],
    ['the requisite topology has no share', { a: 100 }, { requisite: [seg('x')] }, /a: outside the requested topology/],
    ['the class allows no configured share', { a: 100 }, { allowed: ['x'] }, /no mount is allowed/],
  ])('answers RESOURCE_EXHAUSTED, saying why per share, when %s', async (_what, space, over, why) => {
    const w = shares(space);
    await expect(w.placer.claim(claim(over))).rejects.toMatchObject({ kind: 'exhausted', message: expect.stringMatching(why) });
  });

  it('leaves out a share that is unusable, saying why', async () => {
    const w = shares({ a: 300, b: 100 });
    w.shares.probes.set(w.shares.path('a'), { writable: false });
    expect((await w.placer.claim(claim())).mount).toBe('b');
    await expect(w.placer.claim(claim({ allowed: ['a'] }))).rejects.toMatchObject({
      kind: 'exhausted',
      message: expect.stringMatching(/a: unusable \(cannot write/),
    });
  });

  it('lets thin volumes over-commit a share by the ratio, and thick ones not at all', async () => {
    const w = shares({ a: 100 }, { overSubscription: 2 });
    await expect(w.placer.claim(claim({ sizeBytes: 150n * MiB, thin: true }))).resolves.toMatchObject({ mount: 'a' });
    await expect(w.placer.claim(claim({ id: 'pvc-2', sizeBytes: 150n * MiB, thin: false }))).rejects.toMatchObject({ kind: 'exhausted' });
  });

  it('gives concurrent claims different room, until their volumes are recorded or they fail', async () => {
    const w = shares({ a: 100, b: 100 });
    const thick = (id: string) => claim({ id, name: id, sizeBytes: 60n * MiB, thin: false });
    const [one, two] = await Promise.all([w.placer.claim(thick('pvc-1')), w.placer.claim(thick('pvc-2'))]);
    expect([one.mount, two.mount].sort()).toEqual(['a', 'b']);
    await expect(w.placer.claim(thick('pvc-3'))).rejects.toMatchObject({ kind: 'exhausted' });
    one.release();
    expect((await w.placer.claim(thick('pvc-3'))).mount).toBe(one.mount);
  });

  it("reserves room for growth on the volume's own share, or refuses", async () => {
    const w = shares({ a: 100, b: 1000 });
    await w.volumes.create(
      w.request('pvc-1', { parameters: { mounts: 'a', format: 'raw' }, capacity: { requiredBytes: 50n * MiB, limitBytes: 0n } }),
      log,
    );
    const release = await w.placer.grow('a', 'pvc-1', 40n * MiB, false);
    await expect(w.placer.grow('a', 'pvc-1', 20n * MiB, false)).rejects.toMatchObject({
      kind: 'exhausted',
      message: expect.stringMatching(/mount a has no room to grow volume pvc-1/),
    });
    release();
    (await w.placer.grow('a', 'pvc-1', 20n * MiB, false))();
  });
});
