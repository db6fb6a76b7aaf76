/**
 * ListVolumes: ids of all mounted mounts in one sorted order, paged by "the
 * last id returned" so entries added or removed between pages neither repeat
 * nor shift the rest. Only the page's metadata is read.
 */
import { mapLimit, PARALLEL_READS } from '../domain/concurrency.js';
import { invalid } from '../domain/errors.js';
import { parseToken, tokenAfter } from '../domain/tokens.js';
import type { Mounts } from '../storage/mounts.js';
import type { FoundVolume, VolumeStore } from '../storage/volume-store.js';

export interface Page {
  entries: FoundVolume[];
  nextToken: string;
}

export async function listVolumes(maxEntries: number, startingToken: string, deps: { mounts: Mounts; store: VolumeStore }): Promise<Page> {
  if (maxEntries < 0) throw invalid('max_entries must not be negative');
  const after = parseToken(startingToken);
  const health = (await deps.mounts.all()).filter((h) => h.mounted);
  const owners = new Map<string, { name: string; usable: boolean; reason: string | undefined }>();
  for (const h of health) {
    for (const id of await deps.store.ids(deps.mounts.layout(h.name))) {
      if (!owners.has(id)) owners.set(id, { name: h.name, usable: h.usable, reason: h.reason });
    }
  }
  const ids = [...owners.keys()].filter((id) => id > after).sort();
  const page = ids.slice(0, maxEntries === 0 ? ids.length : maxEntries);
  const last = page.at(-1) ?? '';
  // Many records at a time: one volume.json after another made a page of 100 cost 100 round trips.
  const read = await mapLimit(page, PARALLEL_READS, async (id): Promise<FoundVolume | undefined> => {
    const owner = owners.get(id);
    if (owner === undefined) return undefined;
    const layout = deps.mounts.layout(owner.name);
    // Removed since the readdir, or unreadable (doctor reports it): one bad record must not fail the page.
    const record = await deps.store.read(layout, id).catch(() => undefined);
    if (record === undefined) return undefined;
    return { mount: owner.name, layout, record, writable: owner.usable, reason: owner.reason };
  });
  const entries = read.filter((e) => e !== undefined);
  const more = ids.length > 0 && last !== '' && last < (ids[ids.length - 1] ?? '');
  return { entries, nextToken: more ? tokenAfter(last) : '' };
}
