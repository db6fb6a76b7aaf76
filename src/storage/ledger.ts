/**
 * Sum of virtual sizes per mount, for thin over-subscription. Built by reading
 * each volume.json once (many at a time, and ahead of the first request when
 * warmed at start-up); later refreshes only read volumes that appeared since
 * (a readdir diff), so GetCapacity and CreateVolume stay cheap with many volumes.
 */
import { mapLimit, PARALLEL_READS } from '../domain/concurrency.js';
import { isThin, type Preallocation } from '../domain/parameters.js';
import type { Layout } from './layout.js';
import type { VolumeRecord } from './records.js';
import type { VolumeStore } from './volume-store.js';

/** A volume's promise: its virtual size, and whether it is thick (raw or preallocated: never over-committed). */
interface Promised {
  size: bigint;
  thick: boolean;
}

export interface Committed {
  /** Every volume's size: what thin volumes are measured against. */
  all: bigint;
  /** Raw and preallocated volumes only: these never over-commit among themselves. */
  thick: bigint;
}

/** The placement rule's thin/thick, from a record (its StorageClass parameters, preallocation defaulting to off). */
export function isThick(r: Pick<VolumeRecord, 'format' | 'parameters'>): boolean {
  return !isThin({ format: r.format, preallocation: (r.parameters['preallocation'] ?? 'off') as Preallocation });
}

interface MountLedger {
  sizes: Map<string, Promised>;
  refreshedAt: number;
  /** The refresh in flight, shared by everyone who asks meanwhile. */
  refreshing: Promise<void> | undefined;
  /** What this process created or deleted while a refresh was in flight; it wins over the refresh's readdir. */
  changes: Map<string, Promised | null>;
  /** Volumes being built: counted already, though no readdir shows them yet. */
  reserved: Map<string, Promised>;
}

const REFRESH_MS = 5_000;

export class Ledger {
  private readonly byMount = new Map<string, MountLedger>();

  /** Only ids and records are read: a test can count them. */
  constructor(private readonly store: Pick<VolumeStore, 'ids' | 'read'>) {}

  async committed(mount: string, layout: Layout): Promise<Committed> {
    const ledger = await this.fresh(mount, layout);
    const sum: Committed = { all: 0n, thick: 0n };
    const add = (p: Promised): void => {
      sum.all += p.size;
      if (p.thick) sum.thick += p.size;
    };
    for (const p of ledger.sizes.values()) add(p);
    for (const [id, p] of ledger.reserved) if (!ledger.sizes.has(id)) add(p);
    return sum;
  }

  /**
   * Counts a volume being built from now on, so concurrent placements cannot
   * all claim the same room. Call with the ledger built (after committed()).
   * Returns the release, for when the build is done or failed.
   */
  reserve(mount: string, id: string, size: bigint, thick: boolean): () => void {
    const ledger = this.byMount.get(mount);
    if (ledger === undefined) return () => undefined;
    ledger.reserved.set(id, { size, thick });
    return () => {
      ledger.reserved.delete(id);
    };
  }

  /** Records a volume this process just wrote, so the next placement sees it at once. */
  note(mount: string, record: Pick<VolumeRecord, 'id' | 'sizeBytes' | 'format' | 'parameters'>): void {
    this.change(mount, record.id, { size: BigInt(record.sizeBytes), thick: isThick(record) });
  }

  forget(mount: string, id: string): void {
    this.change(mount, id, null);
  }

  /** Builds a mount's ledger now, so the first placement does not wait for it. */
  async warm(mount: string, layout: Layout): Promise<void> {
    await this.fresh(mount, layout);
  }

  private change(mount: string, id: string, size: Promised | null): void {
    const ledger = this.byMount.get(mount);
    if (ledger === undefined) return; // not built yet: its first refresh reads the disk
    if (size === null) ledger.sizes.delete(id);
    else ledger.sizes.set(id, size);
    if (ledger.refreshing !== undefined) ledger.changes.set(id, size);
  }

  private async fresh(mount: string, layout: Layout): Promise<MountLedger> {
    let ledger = this.byMount.get(mount);
    if (ledger === undefined) {
      ledger = { sizes: new Map(), refreshedAt: 0, refreshing: undefined, changes: new Map(), reserved: new Map() };
      this.byMount.set(mount, ledger);
    }
    if (ledger.refreshing === undefined && Date.now() - ledger.refreshedAt >= REFRESH_MS) {
      const l = ledger;
      const run = this.refresh(l, layout).finally(() => {
        l.refreshing = undefined;
        l.changes.clear();
      });
      // A failed background refresh keeps the old sizes and the next request retries; a first build's failure reaches its caller.
      run.catch(() => undefined);
      l.refreshing = run;
    }
    // Stale sizes are fine for a request that arrives while a refresh of a built ledger runs.
    if (ledger.refreshing !== undefined && ledger.refreshedAt === 0) await ledger.refreshing;
    return ledger;
  }

  private async refresh(ledger: MountLedger, layout: Layout): Promise<void> {
    const ids = await this.store.ids(layout);
    const present = new Set(ids);
    for (const id of ledger.sizes.keys()) if (!present.has(id)) ledger.sizes.delete(id);
    const unknown = ids.filter((id) => !ledger.sizes.has(id));
    await mapLimit(unknown, PARALLEL_READS, async (id) => {
      // One unreadable volume.json must not stop placement on the mount; doctor reports it.
      const record = await this.store.read(layout, id).catch(() => undefined);
      if (record !== undefined) ledger.sizes.set(id, { size: BigInt(record.sizeBytes), thick: isThick(record) });
    });
    // This process's own creates and deletes during the readdir are newer than it.
    for (const [id, size] of ledger.changes) {
      if (size === null) ledger.sizes.delete(id);
      else ledger.sizes.set(id, size);
    }
    ledger.refreshedAt = Date.now();
  }
}
