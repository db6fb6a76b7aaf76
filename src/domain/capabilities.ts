/**
 * Volume capabilities filedriver serves, and the rules that reject the rest
 * with a reason (CSI CreateVolume / ValidateVolumeCapabilities).
 */
import { invalid } from './errors.js';
import type { Format } from './parameters.js';

export const ACCESS_MODES = [
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_READER_ONLY',
  'MULTI_NODE_READER_ONLY',
  'MULTI_NODE_SINGLE_WRITER',
  'MULTI_NODE_MULTI_WRITER',
  'SINGLE_NODE_SINGLE_WRITER',
  'SINGLE_NODE_MULTI_WRITER',
] as const;
export type AccessMode = (typeof ACCESS_MODES)[number];

export const FS_TYPES = ['ext4', 'xfs'] as const;
export type FsType = (typeof FS_TYPES)[number];
export const DEFAULT_FS_TYPE: FsType = 'ext4';

/**
 * A capability as asked for. `fsType` is whatever was asked: a well-formed
 * request for a filesystem filedriver does not make is not malformed, only
 * unsupported (ValidateVolumeCapabilities answers it unconfirmed, GetCapacity 0).
 */
export type Capability =
  { access: 'block'; mode: AccessMode } | { access: 'mount'; mode: AccessMode; fsType: string; mountFlags: string[]; volumeMountGroup: string };

const SERVED: ReadonlySet<AccessMode> = new Set([
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_SINGLE_WRITER',
  'SINGLE_NODE_MULTI_WRITER',
  'SINGLE_NODE_READER_ONLY',
  'MULTI_NODE_READER_ONLY',
  'MULTI_NODE_MULTI_WRITER',
]);

export function isFsType(s: string): s is FsType {
  return (FS_TYPES as readonly string[]).includes(s);
}

export function isReadOnlyMode(mode: AccessMode): boolean {
  return mode === 'SINGLE_NODE_READER_ONLY' || mode === 'MULTI_NODE_READER_ONLY';
}

export function isMultiNode(mode: AccessMode): boolean {
  return mode.startsWith('MULTI_NODE_');
}

/**
 * Modes a node publishes at one target path only (CSI NodePublishVolume: a
 * second target for a non-MULTI_NODE volume is FAILED_PRECONDITION).
 * SINGLE_NODE_WRITER is left out on purpose: it is Kubernetes' ReadWriteOnce,
 * which the pods of one node share, and kubelets that do not map it to
 * SINGLE_NODE_MULTI_WRITER still send it for that.
 */
export function publishesOnce(mode: AccessMode): boolean {
  return mode === 'SINGLE_NODE_SINGLE_WRITER' || mode === 'SINGLE_NODE_READER_ONLY';
}

/** Why this capability cannot be served for a volume of `format`, or undefined when it can. */
export function unsupportedReason(cap: Capability, format: Format): string | undefined {
  if (!SERVED.has(cap.mode)) return `access mode ${cap.mode} is not supported`;
  if (cap.access === 'mount' && !isFsType(cap.fsType)) return `fs_type ${cap.fsType} is not supported; use ${FS_TYPES.join(' or ')}`;
  if (cap.mode === 'MULTI_NODE_MULTI_WRITER') {
    if (cap.access !== 'block') {
      return 'MULTI_NODE_MULTI_WRITER needs a block volume: a filesystem mounted on two nodes at once is corrupted';
    }
    if (format !== 'raw') return 'MULTI_NODE_MULTI_WRITER needs format raw: a qcow2 image cannot be written by two hosts';
  }
  return undefined;
}

export function checkCapabilities(caps: readonly Capability[], format: Format): void {
  if (caps.length === 0) throw invalid('volume_capabilities is required');
  for (const cap of caps) {
    const reason = unsupportedReason(cap, format);
    if (reason !== undefined) throw invalid(reason);
  }
}
