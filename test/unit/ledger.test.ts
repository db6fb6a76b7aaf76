import { describe, expect, it } from 'vitest';
import { Layout } from '../../src/storage/layout.js';
import { Ledger } from '../../src/storage/ledger.js';
import type { VolumeStore } from '../../src/storage/volume-store.js';
import type { VolumeRecord } from '../../src/storage/records.js';

/** A store of `n` volumes of 1 MiB each that counts its reads. */
function fakeStore(n: number) {
  const sizes = new Map(Array.from({ length: n }, (_, i) => [`v${String(i).padStart(5, '0')}`, 1n << 20n]));
  const counts = { ids: 0, reads: 0 };
  let gate: Promise<void> = Promise.resolve();
  const store = {
    async ids() {
      counts.ids++;
      await gate;
      return [...sizes.keys()].sort();
    },
    async read(_layout: Layout, id: string) {
      counts.reads++;
      const size = sizes.get(id);
      return size === undefined ? undefined : ({ id, sizeBytes: size.toString() } as VolumeRecord);
    },
  } as unknown as VolumeStore;
  return { store, sizes, counts, hold: (p: Promise<void>) => (gate = p) };
}

const layout = new Layout('/nowhere');

describe('committed-bytes ledger', () => {
  it('reads every volume once, however many ask at once', async () => {
    const f = fakeStore(500);
    const ledger = new Ledger(f.store);
    const sums = await Promise.all(Array.from({ length: 10 }, () => ledger.committed('a', layout)));
    expect(sums).toEqual(Array(10).fill(500n << 20n));
    expect(f.counts).toEqual({ ids: 1, reads: 500 });
  });

  it('keeps what this process created or deleted while a build was reading the disk', async () => {
    const f = fakeStore(3);
    const ledger = new Ledger(f.store);
    let release = (): void => undefined;
    f.hold(new Promise<void>((r) => (release = r)));
    const building = ledger.warm('a', layout);
    // The readdir is in flight: a create and a delete by this process happen meanwhile (the readdir still lists v00000).
    await Promise.resolve();
    ledger.note('a', 'new', 5n << 20n);
    ledger.forget('a', 'v00000');
    release();
    await building;
    expect(await ledger.committed('a', layout)).toBe((2n << 20n) + (5n << 20n));
  });

  it('sees a volume another process wrote only after a refresh, and drops removed ones', async () => {
    const f = fakeStore(2);
    const ledger = new Ledger(f.store);
    expect(await ledger.committed('a', layout)).toBe(2n << 20n);
    ledger.note('a', 'mine', 1n << 20n);
    expect(await ledger.committed('a', layout)).toBe(3n << 20n);
    ledger.forget('a', 'mine');
    expect(await ledger.committed('a', layout)).toBe(2n << 20n);
  });
});
