/**
 * CSI Node service: parse → act → reply. Paths from kubelet are checked to lie
 * inside the kubelet directory, and to reach it through no symlink, before
 * anything touches them (node/safe-path.ts).
 */
import type { MountConfig } from '../config.js';
import { invalid, notFound, precondition } from '../domain/errors.js';
import { checkId } from '../domain/ids.js';
import { checkMountFlags } from '../domain/mount-flags.js';
import { checkKubeletPath, kubeletPath, overlaps } from '../domain/paths.js';
import { topologyKey } from '../domain/topology.js';
import type { NodeHealth } from '../node/health.js';
import { nodeVolumeKey } from '../node/layers.js';
import { configuredMounts } from '../node/topology.js';
import type { Publisher } from '../node/publish.js';
import { SafePaths } from '../node/safe-path.js';
import type { Stager } from '../node/stage.js';
import type { NodeHandlers } from './generated/csi/v1/Node.js';
import type { VolumeUsage } from './generated/csi/v1/VolumeUsage.js';
import type { Handle } from './handle.js';
import { parseCapability, parseRange, requireString, type CsiCapability } from './requests.js';

export interface NodeDeps {
  stager: Stager;
  publisher: Publisher;
  health: NodeHealth;
  /** The configured mounts (NodeGetInfo offers those whose directory exists here). */
  mounts: readonly MountConfig[];
  nodeId: string;
  driverName: string;
  maxVolumesPerNode: number;
  kubeletDir: string;
}

// Requests arrive with every field set (proto-loader `defaults`), as the generated __Output types say.
const ids = (r: { volume_id: string }): Record<string, string> => ({ volumeId: r.volume_id });
const byVolume = (r: { volume_id: string }): string[] => [nodeVolumeKey(r.volume_id)];

export const NODE_CAPABILITIES = [
  'STAGE_UNSTAGE_VOLUME',
  'GET_VOLUME_STATS',
  'EXPAND_VOLUME',
  'VOLUME_CONDITION',
  'SINGLE_NODE_MULTI_WRITER',
] as const;

export function nodeService(handle: Handle, deps: NodeDeps): NodeHandlers {
  const volumeId = (r: { volume_id: string }) => checkId(requireString(r.volume_id, 'volume_id'), 'volume_id');
  const safe = new SafePaths(deps.kubeletDir);
  const path = (p: string | undefined, field: string) => safe.check(checkKubeletPath(p, field, deps.kubeletDir), field);
  // Stats and expansion only look at volume_path: one the volume cannot be at (relative, or outside the kubelet
  // directory) is NOT_FOUND untouched (CSI: "does not exist on specified volume_path"; csi-sanity sends "some/path").
  // A path through a link stays INVALID_ARGUMENT (safe.check), and a missing one inside is NOT_FOUND (node/health.ts).
  const volumePath = (r: { volume_path: string }, id: string) => {
    const { clean, outside } = kubeletPath(r.volume_path, 'volume_path', deps.kubeletDir);
    if (outside !== undefined) throw notFound(`volume ${id} is not staged or published at ${clean}: ${outside}`);
    return safe.check(clean, 'volume_path');
  };
  // Flags are checked before the volume is touched: mount(8) refusing one after mkfs is too late.
  const capability = (r: { volume_capability: CsiCapability | null }) => {
    const cap = parseCapability(r.volume_capability);
    if (cap.access === 'mount') checkMountFlags(cap.mountFlags);
    return cap;
  };

  return {
    NodeGetCapabilities: handle('NodeGetCapabilities', {}, () => ({
      capabilities: NODE_CAPABILITIES.map((type) => ({ rpc: { type } })),
    })),

    // The shares this node is configured with, healthy or not (node/topology.ts says why).
    NodeGetInfo: handle('NodeGetInfo', {}, async () => {
      const segments: Record<string, string> = {};
      for (const name of await configuredMounts(deps.mounts)) segments[topologyKey(deps.driverName, name)] = 'true';
      return { node_id: deps.nodeId, max_volumes_per_node: String(deps.maxVolumesPerNode), accessible_topology: { segments } };
    }),

    NodeStageVolume: handle('NodeStageVolume', { ids, locks: byVolume }, async (r, log) => {
      const input = {
        volumeId: volumeId(r),
        stagingPath: await path(r.staging_target_path, 'staging_target_path'),
        capability: capability(r),
        readonly: r.publish_context['readonly'] === 'true',
        paths: safe,
      };
      await deps.stager.stage(input, log);
      return {};
    }),

    NodeUnstageVolume: handle('NodeUnstageVolume', { ids, locks: byVolume }, async (r, log) => {
      await deps.stager.unstage(volumeId(r), await path(r.staging_target_path, 'staging_target_path'), log);
      return {};
    }),

    NodePublishVolume: handle('NodePublishVolume', { ids, locks: byVolume }, async (r, log) => {
      const id = volumeId(r);
      const targetPath = await path(r.target_path, 'target_path');
      const cap = capability(r);
      // STAGE_UNSTAGE_VOLUME is advertised, so a missing staging path is the CO's order mistake (CSI: FAILED_PRECONDITION).
      if (r.staging_target_path === '') throw precondition('staging_target_path is not set; NodeStageVolume must come first');
      const stagingPath = await path(r.staging_target_path, 'staging_target_path');
      // Publishing onto (or into) the staging mount would hide it and block the unstage.
      if (overlaps(targetPath, stagingPath))
        throw invalid(`target_path ${targetPath} and staging_target_path ${stagingPath} must be distinct, neither inside the other`);
      const staged = await deps.stager.requireStaged(id, stagingPath);
      await deps.publisher.publish({ volumeId: id, stagingPath, targetPath, capability: cap, readonly: r.readonly, paths: safe }, staged, log);
      return {};
    }),

    NodeUnpublishVolume: handle('NodeUnpublishVolume', { ids, locks: byVolume }, async (r, log) => {
      await deps.publisher.unpublish(volumeId(r), await path(r.target_path, 'target_path'), log);
      return {};
    }),

    NodeGetVolumeStats: handle('NodeGetVolumeStats', { ids }, async (r) => {
      const id = volumeId(r);
      const stats = await deps.health.stats(id, await volumePath(r, id));
      const u = stats.usage;
      const usage: VolumeUsage[] =
        'usedBytes' in u
          ? [
              { unit: 'BYTES', total: String(u.totalBytes), used: String(u.usedBytes), available: String(u.availableBytes) },
              { unit: 'INODES', total: String(u.totalInodes), used: String(u.usedInodes), available: String(u.availableInodes) },
            ]
          : [{ unit: 'BYTES', total: String(u.totalBytes) }];
      return { usage, volume_condition: stats.condition };
    }),

    NodeExpandVolume: handle('NodeExpandVolume', { ids, locks: byVolume }, async (r, log) => {
      const id = volumeId(r);
      const size = await deps.health.expand(id, await volumePath(r, id), parseRange(r.capacity_range), log);
      return { capacity_bytes: size.toString() };
    }),
  };
}
