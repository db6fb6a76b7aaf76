/** CSI message shapes ↔ the driver's views: the snake_case edge of the Controller service. */
import type { SnapshotView } from '../controller/snapshots.js';
import type { ContentSource } from '../controller/sources.js';
import type { VolumeView } from '../controller/volumes.js';
import { invalid } from '../domain/errors.js';
import type { VolumeContentSource__Output as CsiContentSource } from './generated/csi/v1/VolumeContentSource.js';
import { requireString } from './requests.js';

export type { CsiContentSource };

export function parseContentSource(s: CsiContentSource | null | undefined): ContentSource | undefined {
  if (s === null || s === undefined) return undefined;
  if (s.snapshot) return { type: 'snapshot', id: requireString(s.snapshot.snapshot_id, 'volume_content_source.snapshot.snapshot_id') };
  if (s.volume) return { type: 'volume', id: requireString(s.volume.volume_id, 'volume_content_source.volume.volume_id') };
  throw invalid('volume_content_source names neither a snapshot nor a volume');
}

export function toCsiSource(s: ContentSource | null) {
  if (s === null) return null;
  return s.type === 'snapshot' ? { snapshot: { snapshot_id: s.id } } : { volume: { volume_id: s.id } };
}

export function toCsiSnapshot(v: SnapshotView) {
  const ms = Date.parse(v.createdAt);
  return {
    snapshot_id: v.id,
    source_volume_id: v.sourceVolumeId,
    size_bytes: v.sizeBytes.toString(),
    creation_time: { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 },
    ready_to_use: v.readyToUse,
    group_snapshot_id: '',
  };
}

export function toCsiVolume(v: VolumeView, keyOf: (mount: string) => string) {
  return {
    volume_id: v.id,
    capacity_bytes: v.sizeBytes.toString(),
    volume_context: { format: v.record.format, mount: v.mount },
    content_source: toCsiSource(v.record.contentSource),
    accessible_topology: [{ segments: { [keyOf(v.mount)]: 'true' } }],
  };
}

export function condition(c: { abnormal: boolean; message: string }) {
  return { abnormal: c.abnormal, message: c.message };
}
