/**
 * ListVolumes: ids of all mounted mounts in one sorted order, paged by "the
 * last id returned" so entries added or removed between pages neither repeat
 * nor shift the rest. Only the page's metadata is read.
 */
import { invalid } from '../domain/errors.js';
import { parseToken, tokenAfter } from '../domain/tokens.js';
import type { Mounts } from '../storage/mounts.js';
import type { FoundVolume, VolumeStore } from '../storage/volume-store.js';

export interface Page {
  entries: FoundVolume[];
  nextToken: string;
}

export async function listVolumes(
  maxEntries: number,
  startingToken: string,
  deps: { mounts: Mounts; store: VolumeStore },
): Promise<Page> {
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
  const limit = maxEntries === 0 ? ids.length : maxEntries;
  const entries: FoundVolume[] = [];
  let last = '';
  for (const id of ids) {
    if (entries.length >= limit) break;
    last = id;
    const owner = owners.get(id);
    if (owner === undefined) continue;
    const layout = deps.mounts.layout(owner.name);
    const record = await deps.store.read(layout, id);
    if (record === undefined) continue; // removed since the readdir
    entries.push({ mount: owner.name, layout, record, writable: owner.usable, reason: owner.reason });
  }
  const more = ids.length > 0 && last !== '' && last < (ids[ids.length - 1] ?? '');
  return { entries, nextToken: more ? tokenAfter(last) : '' };
}
