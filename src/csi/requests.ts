/**
 * CSI messages (snake_case, as @grpc/proto-loader hands them over with
 * keepCase, longs as strings, enums as names) → validated domain inputs.
 * Nothing here touches the system.
 */
import { ACCESS_MODES, DEFAULT_FS_TYPE, type AccessMode, type Capability } from '../domain/capabilities.js';
import { invalid } from '../domain/errors.js';
import type { Segment } from '../domain/placement.js';
import { parseBytes, type CapacityRange } from '../domain/sizes.js';
import type { CapacityRange__Output as CsiCapacityRange } from './generated/csi/v1/CapacityRange.js';
import type { Topology__Output as CsiTopology } from './generated/csi/v1/Topology.js';
import type { TopologyRequirement__Output as CsiTopologyRequirement } from './generated/csi/v1/TopologyRequirement.js';
import type { VolumeCapability__Output as CsiCapability } from './generated/csi/v1/VolumeCapability.js';

export type { CsiCapability, CsiCapacityRange, CsiTopology, CsiTopologyRequirement };

/**
 * A message as the parsers take it. The generated __Output types promise every field (the
 * loader's `defaults`), but the parsers are the edge the rest of the driver trusts, and not every
 * request comes through that loader (tests and tools build them by hand): any field may be
 * missing, and is checked. protobufjs hands over an enum value csi.proto does not name as its
 * number, so an enum (a union of names, unlike a plain string) may also be a number. Maps stay.
 */
export type Arriving<T> = T extends (infer U)[]
  ? Arriving<U>[]
  : T extends string
    ? string extends T
      ? T
      : T | number
    : T extends object
      ? string extends keyof T
        ? T
        : { [K in keyof T]?: Arriving<T[K]> }
      : T;

export function parseCapability(c: Arriving<CsiCapability> | null | undefined): Capability {
  if (c === null || c === undefined) throw invalid('volume_capability is required');
  const modeName = String(c.access_mode?.mode ?? 'UNKNOWN');
  if (!(ACCESS_MODES as readonly string[]).includes(modeName)) {
    throw invalid(`access_mode ${modeName} is not supported; use one of ${ACCESS_MODES.join(', ')}`);
  }
  const mode = modeName as AccessMode;
  const kind = c.access_type ?? (c.block ? 'block' : c.mount ? 'mount' : undefined);
  if (kind === 'block') return { access: 'block', mode };
  if (kind !== 'mount' || c.mount === null || c.mount === undefined) {
    throw invalid('volume_capability needs an access type: block or mount');
  }
  // An fs_type we do not make is well-formed, only unsupported: unsupportedReason says so.
  const fsType = c.mount.fs_type === undefined || c.mount.fs_type === '' ? DEFAULT_FS_TYPE : c.mount.fs_type;
  return {
    access: 'mount',
    mode,
    fsType,
    mountFlags: parseMountFlags(c.mount.mount_flags ?? []),
    volumeMountGroup: c.mount.volume_mount_group ?? '',
  };
}

/**
 * Each flag becomes one `-o` item, so it may not be empty or hold a comma.
 * The message names positions, never values: mount_flags may carry
 * credentials (CSI MountVolume), and errors are logged and returned.
 */
function parseMountFlags(flags: string[]): string[] {
  const bad = flags.flatMap((f, i) => (f.trim() === '' || f.includes(',') || f.includes('\0') ? [i] : []));
  if (bad.length > 0) {
    throw invalid(`mount_flags ${bad.map((i) => `#${String(i + 1)}`).join(', ')} must be one non-empty option each, without commas`);
  }
  return flags;
}

export function parseCapabilities(list: Arriving<CsiCapability>[] | undefined | null, required: boolean): Capability[] {
  const caps = (list ?? []).map(parseCapability);
  if (required && caps.length === 0) throw invalid('volume_capabilities is required');
  return caps;
}

export function parseRange(r: Arriving<CsiCapacityRange> | null | undefined): CapacityRange {
  return {
    requiredBytes: parseBytes(r?.required_bytes, 'required_bytes'),
    limitBytes: parseBytes(r?.limit_bytes, 'limit_bytes'),
  };
}

export function parseTopology(t: Arriving<CsiTopologyRequirement> | null | undefined): { requisite: Segment[]; preferred: Segment[] } {
  return {
    requisite: (t?.requisite ?? []).map((s) => s.segments ?? {}),
    preferred: (t?.preferred ?? []).map((s) => s.segments ?? {}),
  };
}

export function requireString(value: string | undefined | null, field: string): string {
  if (value === undefined || value === null || value === '') throw invalid(`${field} is required`);
  return value;
}
