/**
 * Where a new volume goes and how much room a mount has. Pure: the caller
 * supplies each mount's measured state.
 */
export interface MountRoom {
  name: string;
  usable: boolean;
  /** Why the mount is unusable (when it is not). */
  reason: string | undefined;
  freeBytes: bigint;
  totalBytes: bigint;
  /** Sum of the virtual sizes of the volumes already on the mount (and being made there). */
  committedBytes: bigint;
  /** The same for raw and preallocated volumes only. */
  committedThickBytes: bigint;
}

/** Over-subscription ratio as parts per million, so bigint math stays exact. */
function scale(n: bigint, ratio: number): bigint {
  return (n * BigInt(Math.round(ratio * 1_000_000))) / 1_000_000n;
}

/**
 * Bytes one new volume could take on a mount. Every volume promises its full
 * virtual size. Thin qcow2 may over-commit the mount like Cinder's
 * max_over_subscription_ratio (1.0 = the sum of all virtual sizes never
 * exceeds it); raw and preallocated images never over-commit one another, and
 * need the space free now. Free bytes alone would not do: a raw image is a
 * sparse file that takes nothing until written, so any number of them would fit.
 */
export function roomFor(m: MountRoom, thin: boolean, ratio: number): bigint {
  if (!m.usable) return 0n;
  const r = thin ? ratio : 1;
  // Thin promises are the admin's over-commitment: they do not block thick volumes, which are
  // measured against one another (and the free bytes).
  const byCommitment = scale(m.totalBytes, r) - (thin ? m.committedBytes : m.committedThickBytes);
  const byFree = scale(m.freeBytes, r);
  const room = byCommitment < byFree ? byCommitment : byFree;
  return room > 0n ? room : 0n;
}

/** A topology segment: one `<driver>/mount-<name>: "true"` key per mount it holds. */
export type Segment = Record<string, string>;

export interface PlacementRequest {
  sizeBytes: bigint;
  thin: boolean;
  ratio: number;
  /** Mount names the StorageClass allows; undefined = all. */
  allowed: readonly string[] | undefined;
  requisite: readonly Segment[];
  preferred: readonly Segment[];
  /** The topology key a mount is known by. */
  keyOf: (mount: string) => string;
}

export type Placement = { mount: string } | { mount: undefined; reasons: string[] };

function inSegment(seg: Segment, key: string): boolean {
  return seg[key] === 'true';
}

/** Preferred segments first (in order), then the mount with the most room. */
export function place(mounts: readonly MountRoom[], req: PlacementRequest): Placement {
  const reasons: string[] = [];
  const fitting: { name: string; rank: number; room: bigint }[] = [];
  for (const m of mounts) {
    const key = req.keyOf(m.name);
    if (req.allowed !== undefined && !req.allowed.includes(m.name)) continue;
    if (req.requisite.length > 0 && !req.requisite.some((s) => inSegment(s, key))) {
      reasons.push(`${m.name}: outside the requested topology`);
      continue;
    }
    if (!m.usable) {
      reasons.push(`${m.name}: unusable (${m.reason ?? 'unknown'})`);
      continue;
    }
    const room = roomFor(m, req.thin, req.ratio);
    if (room < req.sizeBytes) {
      reasons.push(`${m.name}: room for ${room} bytes, ${req.sizeBytes} needed`);
      continue;
    }
    const idx = req.preferred.findIndex((s) => inSegment(s, key));
    fitting.push({ name: m.name, rank: idx < 0 ? req.preferred.length : idx, room });
  }
  fitting.sort((a, b) => a.rank - b.rank || (a.room > b.room ? -1 : a.room < b.room ? 1 : 0) || a.name.localeCompare(b.name));
  const best = fitting[0];
  if (best !== undefined) return { mount: best.name };
  if (reasons.length === 0) reasons.push(`no mount is allowed (StorageClass mounts: ${req.allowed?.join(',') ?? 'all'})`);
  return { mount: undefined, reasons };
}
