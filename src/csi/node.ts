/**
 * CSI Node service: parse → act → reply. Paths from kubelet are checked to lie
 * inside the kubelet directory before anything touches them.
 */
import type { Logger } from 'pino';
import { precondition } from '../domain/errors.js';
import { checkId } from '../domain/ids.js';
import { checkKubeletPath } from '../domain/paths.js';
import { topologyKey } from '../domain/topology.js';
import type { NodeHealth } from '../node/health.js';
import { nodeVolumeKey } from '../node/layers.js';
import { configuredMounts } from '../node/topology.js';
import type { Publisher } from '../node/publish.js';
import type { Stager } from '../node/stage.js';
import type { Mounts } from '../storage/mounts.js';
import type { Handle } from './handle.js';
import { parseCapability, parseRange, requireString, type CsiCapability, type CsiCapacityRange } from './requests.js';

export interface NodeDeps {
  stager: Stager;
  publisher: Publisher;
  health: NodeHealth;
  mounts: Mounts;
  nodeId: string;
  driverName: string;
  maxVolumesPerNode: number;
  kubeletDir: string;
}

interface NodeRequest {
  volume_id?: string;
  staging_target_path?: string;
  target_path?: string;
  volume_path?: string;
  volume_capability?: CsiCapability | null;
  publish_context?: Record<string, string>;
  volume_context?: Record<string, string>;
  secrets?: Record<string, string>;
  readonly?: boolean;
  capacity_range?: CsiCapacityRange | null;
}

const ids = (r: NodeRequest): Record<string, string> => ({ volumeId: r.volume_id ?? '' });
const byVolume = (r: NodeRequest): string[] => [nodeVolumeKey(r.volume_id ?? '')];

export const NODE_CAPABILITIES = ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'SINGLE_NODE_MULTI_WRITER'] as const;

export function nodeService(handle: Handle, deps: NodeDeps) {
  const volumeId = (r: NodeRequest) => checkId(requireString(r.volume_id, 'volume_id'), 'volume_id');
  const path = (p: string | undefined, field: string) => checkKubeletPath(p, field, deps.kubeletDir);

  return {
    NodeGetCapabilities: handle('NodeGetCapabilities', {}, async () => ({
      capabilities: NODE_CAPABILITIES.map((type) => ({ rpc: { type } })),
    })),

    // The shares this node is configured with, healthy or not (node/topology.ts says why).
    NodeGetInfo: handle('NodeGetInfo', {}, async () => {
      const segments: Record<string, string> = {};
      for (const name of await configuredMounts(deps.mounts.configs)) segments[topologyKey(deps.driverName, name)] = 'true';
      return { node_id: deps.nodeId, max_volumes_per_node: String(deps.maxVolumesPerNode), accessible_topology: { segments } };
    }),

    NodeStageVolume: handle('NodeStageVolume', { ids, locks: byVolume }, async (r: NodeRequest, log: Logger) => {
      const input = {
        volumeId: volumeId(r),
        stagingPath: path(r.staging_target_path, 'staging_target_path'),
        capability: parseCapability(r.volume_capability),
        readonly: r.publish_context?.['readonly'] === 'true',
      };
      await deps.stager.stage(input, log);
      return {};
    }),

    NodeUnstageVolume: handle('NodeUnstageVolume', { ids, locks: byVolume }, async (r: NodeRequest, log: Logger) => {
      await deps.stager.unstage(volumeId(r), path(r.staging_target_path, 'staging_target_path'), log);
      return {};
    }),

    NodePublishVolume: handle('NodePublishVolume', { ids, locks: byVolume }, async (r: NodeRequest, log: Logger) => {
      const id = volumeId(r);
      const targetPath = path(r.target_path, 'target_path');
      const capability = parseCapability(r.volume_capability);
      // STAGE_UNSTAGE_VOLUME is advertised, so a missing staging path is the CO's order mistake (CSI: FAILED_PRECONDITION).
      if ((r.staging_target_path ?? '') === '') throw precondition('staging_target_path is not set; NodeStageVolume must come first');
      const stagingPath = path(r.staging_target_path, 'staging_target_path');
      const staged = await deps.stager.requireStaged(id, stagingPath);
      await deps.publisher.publish({ volumeId: id, stagingPath, targetPath, capability, readonly: r.readonly ?? false }, staged, log);
      return {};
    }),

    NodeUnpublishVolume: handle('NodeUnpublishVolume', { ids, locks: byVolume }, async (r: NodeRequest, log: Logger) => {
      await deps.publisher.unpublish(volumeId(r), path(r.target_path, 'target_path'), log);
      return {};
    }),

    NodeGetVolumeStats: handle('NodeGetVolumeStats', { ids }, async (r: NodeRequest) => {
      const stats = await deps.health.stats(volumeId(r), path(r.volume_path, 'volume_path'));
      const u = stats.usage;
      const usage =
        'usedBytes' in u
          ? [
              { unit: 'BYTES', total: String(u.totalBytes), used: String(u.usedBytes), available: String(u.availableBytes) },
              { unit: 'INODES', total: String(u.totalInodes), used: String(u.usedInodes), available: String(u.availableInodes) },
            ]
          : [{ unit: 'BYTES', total: String(u.totalBytes) }];
      return { usage, volume_condition: stats.condition };
    }),

    NodeExpandVolume: handle('NodeExpandVolume', { ids, locks: byVolume }, async (r: NodeRequest, log: Logger) => {
      const size = await deps.health.expand(volumeId(r), path(r.volume_path, 'volume_path'), parseRange(r.capacity_range), log);
      return { capacity_bytes: size.toString() };
    }),
  };
}
