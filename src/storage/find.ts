/**
 * Finding an object by id on the mounts: one read per mount, in parallel.
 * Not found while a mount that could hold it is unreachable is UNAVAILABLE,
 * never "gone" (ARCHITECTURE.md: unknown vs unreachable).
 */
import { unavailable } from '../domain/errors.js';
import type { Layout } from './layout.js';
import type { Mounts } from './mounts.js';

export interface Found<R> {
  mount: string;
  layout: Layout;
  record: R;
  /** Whether the mount may be written (it may be mounted read-only). */
  writable: boolean;
  /** Why not, when it may not. */
  reason: string | undefined;
}

export async function findOnMounts<R>(
  mounts: Mounts,
  what: string,
  read: (layout: Layout) => Promise<R | undefined>,
  scope?: readonly string[],
  prefer: (hits: Found<R>[]) => Found<R> | undefined = (hits) => hits[0],
): Promise<Found<R> | undefined> {
  const health = await mounts.all();
  const found = await Promise.all(
    health.map(async (h): Promise<Found<R> | undefined> => {
      if (!h.mounted) return undefined;
      const layout = mounts.layout(h.name);
      const record = await read(layout);
      return record === undefined ? undefined : { mount: h.name, layout, record, writable: h.usable, reason: h.reason };
    }),
  );
  const hit = prefer(found.filter((f) => f !== undefined));
  if (hit !== undefined) return hit;
  const down = health.filter((h) => !h.mounted && (scope === undefined || scope.includes(h.name)));
  if (down.length > 0) {
    throw unavailable(
      `${what} is not on any reachable mount, and mount(s) ${down.map((h) => `${h.name} (${h.reason ?? 'unusable'})`).join(', ')} cannot be checked; retry when they are back`,
    );
  }
  return undefined;
}
