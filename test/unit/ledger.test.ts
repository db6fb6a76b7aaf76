import { describe, expect, it } from 'vitest';
import { Layout } from '../../src/storage/layout.js';
import { Ledger } from '../../src/storage/ledger.js';
import { SCHEMA, type VolumeRecord } from '../../src/storage/records.js';
import type { VolumeStore } from '../../src/storage/volume-store.js';

const rec = (id: string, size: bigint, format: 'qcow2' | 'raw' = 'qcow2'): VolumeRecord => ({
  schema: SCHEMA,
  id,
  name: id,
  format,
  sizeBytes: size.toString(),
  createdAt: '2025-01-01T00:00:00.000Z',
  parameters: {},
  contentSource: null,
  backing: null,
  pvc: null,
  publications: [],
});

/** A store of `n` volumes of 1 MiB each that counts its reads (the part of VolumeStore the ledger uses). */
function fakeStore(n: number) {
  const sizes = new Map(Array.from({ length: n }, (_, i) => [`v${String(i).padStart(5, '0')}`, 1n << 20n]));
  const counts = { ids: 0, reads: 0 };
  let gate: Promise<void> = Promise.resolve();
  const store: Pick<VolumeStore, 'ids' | 'read'> = {
    async ids() {
      counts.ids++;
      await gate;
      return [...sizes.keys()].sort();
    },
    async read(_layout: Layout, id: string) {
      counts.reads++;
      const size = sizes.get(id);
      return size === undefined ? undefined : rec(id, size);
    },
  };
  return {
    store,
    sizes,
    counts,
    hold: (p: Promise<void>): void => {
      gate = p;
    },
  };
}

const layout = new Layout('/nowhere');
const all = async (l: Ledger) => (await l.committed('a', layout)).all;

describe('committed-bytes ledger', () => {
  it('reads every volume once, however many ask at once', async () => {
    const f = fakeStore(500);
    const ledger = new Ledger(f.store);
    const sums = await Promise.all(Array.from({ length: 10 }, () => all(ledger)));
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
    ledger.note('a', rec('new', 5n << 20n));
    ledger.forget('a', 'v00000');
    release();
    await building;
    expect(await all(ledger)).toBe((2n << 20n) + (5n << 20n));
  });

  it('counts what this process notes at once, thick volumes apart, and forgets at once', async () => {
    const f = fakeStore(2);
    const ledger = new Ledger(f.store);
    expect(await all(ledger)).toBe(2n << 20n);
    ledger.note('a', rec('mine', 1n << 20n, 'raw'));
    expect(await ledger.committed('a', layout)).toEqual({ all: 3n << 20n, thick: 1n << 20n });
    ledger.forget('a', 'mine');
    expect(await ledger.committed('a', layout)).toEqual({ all: 2n << 20n, thick: 0n });
  });

  it('counts a reservation until it is released, once', async () => {
    const f = fakeStore(1);
    const ledger = new Ledger(f.store);
    await ledger.warm('a', layout);
    const release = ledger.reserve('a', 'building', 7n << 20n, true);
    expect(await ledger.committed('a', layout)).toEqual({ all: 8n << 20n, thick: 7n << 20n });
    ledger.note('a', rec('building', 7n << 20n, 'raw'));
    expect(await all(ledger)).toBe(8n << 20n); // built: counted once, not twice
    release();
    expect(await all(ledger)).toBe(8n << 20n);
  });
});
