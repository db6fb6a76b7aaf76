/**
 * GetCapacity: room on the usable mounts of a topology segment, for the
 * StorageClass's format, preallocation and allowed mounts.
 */
import { unsupportedReason, type Capability } from '../domain/capabilities.js';
import { isThin, parseParameters, type Format } from '../domain/parameters.js';
import { roomFor, type Segment } from '../domain/placement.js';
import { MiB } from '../domain/sizes.js';
import { mountsInSegment } from '../domain/topology.js';
import type { Ledger } from '../storage/ledger.js';
import type { Mounts } from '../storage/mounts.js';
import { roomsOf } from './rooms.js';

export interface CapacityInput {
  capabilities: Capability[];
  parameters: Record<string, string>;
  topology: Segment | undefined;
}

export interface CapacityView {
  availableBytes: bigint;
  maximumVolumeBytes: bigint;
  minimumVolumeBytes: bigint;
}

export async function capacity(
  input: CapacityInput,
  deps: { mounts: Mounts; ledger: Ledger; driverName: string; defaultFormat: Format; overSubscription: number },
): Promise<CapacityView> {
  const params = parseParameters(input.parameters, deps.defaultFormat);
  const none = { availableBytes: 0n, maximumVolumeBytes: 0n, minimumVolumeBytes: MiB };
  // Capacity for capabilities we cannot serve is zero (CSI GetCapacity).
  if (input.capabilities.some((c) => unsupportedReason(c, params.format) !== undefined)) return none;
  const inTopology = input.topology === undefined ? undefined : mountsInSegment(deps.driverName, input.topology);
  const rooms = await roomsOf(deps.mounts, deps.ledger);
  let availableBytes = 0n;
  let maximumVolumeBytes = 0n;
  for (const r of rooms) {
    if (params.mounts !== undefined && !params.mounts.includes(r.name)) continue;
    if (inTopology !== undefined && !inTopology.includes(r.name)) continue;
    // Volumes are whole MiB: a room of 10.5 MiB holds a 10 MiB volume at most.
    const free = roomFor(r, isThin(params), deps.overSubscription);
    const room = free - (free % MiB);
    availableBytes += room;
    if (room > maximumVolumeBytes) maximumVolumeBytes = room;
  }
  return { availableBytes, maximumVolumeBytes, minimumVolumeBytes: MiB };
}
