/** Each mount's measured room for placement and capacity. */
import type { MountRoom } from '../domain/placement.js';
import type { Ledger } from '../storage/ledger.js';
import type { Mounts } from '../storage/mounts.js';

export async function roomsOf(mounts: Mounts, ledger: Ledger): Promise<MountRoom[]> {
  const health = await mounts.all();
  return Promise.all(
    health.map(async (h) => {
      const committed = h.usable ? await ledger.committed(h.name, mounts.layout(h.name)) : { all: 0n, thick: 0n };
      return {
        name: h.name,
        usable: h.usable,
        reason: h.reason,
        freeBytes: h.freeBytes,
        totalBytes: h.totalBytes,
        committedBytes: committed.all,
        committedThickBytes: committed.thick,
      };
    }),
  );
}
