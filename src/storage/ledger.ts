/**
 * Sum of virtual sizes per mount, for thin over-subscription. Built by reading
 * each volume.json once; later refreshes only read volumes that appeared since
 * (a readdir diff), so GetCapacity stays cheap with many volumes.
 */
import type { Layout } from './layout.js';
import type { VolumeStore } from './volume-store.js';

interface MountLedger {
  sizes: Map<string, bigint>;
  refreshedAt: number;
}

const REFRESH_MS = 5_000;

export class Ledger {
  private readonly byMount = new Map<string, MountLedger>();

  constructor(private readonly store: VolumeStore) {}

  async committed(mount: string, layout: Layout): Promise<bigint> {
    const ledger = await this.refresh(mount, layout);
    let sum = 0n;
    for (const size of ledger.sizes.values()) sum += size;
    return sum;
  }

  /** Records a size this process just wrote, so the next placement sees it at once. */
  note(mount: string, id: string, sizeBytes: bigint): void {
    this.byMount.get(mount)?.sizes.set(id, sizeBytes);
  }

  forget(mount: string, id: string): void {
    this.byMount.get(mount)?.sizes.delete(id);
  }

  private async refresh(mount: string, layout: Layout): Promise<MountLedger> {
    let ledger = this.byMount.get(mount);
    if (ledger !== undefined && Date.now() - ledger.refreshedAt < REFRESH_MS) return ledger;
    ledger ??= { sizes: new Map(), refreshedAt: 0 };
    const ids = new Set(await this.store.ids(layout));
    for (const id of ledger.sizes.keys()) if (!ids.has(id)) ledger.sizes.delete(id);
    for (const id of ids) {
      if (ledger.sizes.has(id)) continue;
      const record = await this.store.read(layout, id);
      if (record !== undefined) ledger.sizes.set(id, BigInt(record.sizeBytes));
    }
    ledger.refreshedAt = Date.now();
    this.byMount.set(mount, ledger);
    return ledger;
  }
}
