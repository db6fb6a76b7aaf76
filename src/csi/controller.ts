/**
 * CSI Controller service: parse → act → reply. Business rules live in
 * src/controller; this file only translates messages.
 */
import type { MountConfig } from '../config.js';
import type { CapacityInput, CapacityView } from '../controller/capacity.js';
import type { Page } from '../controller/listing.js';
import type { PublishService } from '../controller/publish.js';
import { parseMutable, type Relocator } from '../controller/relocate.js';
import type { SnapshotService } from '../controller/snapshots.js';
import { snapshotHandlers } from './snapshots.js';
import { condition, parseContentSource, toCsiVolume } from './messages.js';
import type { VolumeService, VolumeView } from '../controller/volumes.js';
import { view } from '../controller/volumes.js';
import { mapLimit, PARALLEL_READS } from '../domain/concurrency.js';
import { checkId, idFromName } from '../domain/ids.js';
import type { Format } from '../domain/parameters.js';
import type { Handle } from './handle.js';
import { parseCapabilities, parseCapability, parseRange, parseTopology, requireString } from './requests.js';
import type { ControllerService } from './server.js';

export interface ControllerDeps {
  volumes: VolumeService;
  publishing: PublishService;
  snapshots: SnapshotService;
  relocator: Relocator;
  /** controller/listing.ts and controller/capacity.ts, bound to the stores in app.ts. */
  listVolumes: (maxEntries: number, startingToken: string) => Promise<Page>;
  capacity: (input: CapacityInput) => Promise<CapacityView>;
  /** The configured mounts: ModifyVolume may name only these. */
  mounts: readonly MountConfig[];
  driverName: string;
  defaultFormat: Format;
  overSubscription: number;
}

export const CONTROLLER_CAPABILITIES = [
  'CREATE_DELETE_VOLUME',
  'GET_CAPACITY',
  'LIST_VOLUMES',
  'EXPAND_VOLUME',
  'GET_VOLUME',
  'VOLUME_CONDITION',
  'PUBLISH_UNPUBLISH_VOLUME',
  'LIST_VOLUMES_PUBLISHED_NODES',
  'PUBLISH_READONLY',
  'CREATE_DELETE_SNAPSHOT',
  'LIST_SNAPSHOTS',
  'CLONE_VOLUME',
  'MODIFY_VOLUME',
  'SINGLE_NODE_MULTI_WRITER',
] as const;

// Requests arrive with every field set (proto-loader `defaults`), as the generated __Output types say.
const byVolume = (r: { volume_id: string }): string[] => [`volume:${r.volume_id}`];
const volumeIds = (r: { volume_id: string }): Record<string, string> => ({ volumeId: r.volume_id });
const nodeIds = (r: { volume_id: string; node_id: string }): Record<string, string> => ({ volumeId: r.volume_id, nodeId: r.node_id });

export function controllerService(handle: Handle, deps: ControllerDeps): ControllerService {
  const { volumes } = deps;
  const csiVolume = (v: VolumeView) => toCsiVolume(v, volumes.keyOf);
  const isMount = (name: string): boolean => deps.mounts.some((m) => m.name === name);
  return {
    ControllerGetCapabilities: handle('ControllerGetCapabilities', {}, () => ({
      capabilities: CONTROLLER_CAPABILITIES.map((type) => ({ rpc: { type } })),
    })),

    CreateVolume: handle(
      'CreateVolume',
      {
        ids: (r) => ({ name: r.name }),
        // A clone reads its source: a source volume is locked so it cannot be published (and written) mid-copy,
        // a source snapshot so a background merge does not rewrite its image under the copy.
        locks: (r) => {
          const volume = r.volume_content_source?.volume?.volume_id;
          const snapshot = r.volume_content_source?.snapshot?.snapshot_id;
          return [
            `volume:${idFromName(r.name)}`,
            ...(volume === undefined || volume === '' ? [] : [`volume:${volume}`]),
            ...(snapshot === undefined || snapshot === '' ? [] : [`snapshot:${snapshot}`]),
          ];
        },
      },
      async (r, log) => {
        const name = requireString(r.name, 'name');
        const v = await volumes.create(
          {
            name,
            capacity: parseRange(r.capacity_range),
            capabilities: parseCapabilities(r.volume_capabilities, true),
            parameters: r.parameters,
            ...parseTopology(r.accessibility_requirements),
            contentSource: parseContentSource(r.volume_content_source),
            mutable: parseMutable(r.mutable_parameters, isMount),
          },
          log,
        );
        return { volume: csiVolume(v) };
      },
    ),

    DeleteVolume: handle('DeleteVolume', { ids: volumeIds, locks: byVolume }, async (r, log) => {
      await volumes.delete(requireString(r.volume_id, 'volume_id'), log);
      return {};
    }),

    ValidateVolumeCapabilities: handle('ValidateVolumeCapabilities', { ids: volumeIds }, async (r) => {
      const id = requireString(r.volume_id, 'volume_id');
      const caps = parseCapabilities(r.volume_capabilities, true);
      const problem = await volumes.validate(id, caps, r.parameters, r.volume_context);
      if (problem !== undefined) return { confirmed: null, message: problem };
      return {
        confirmed: { volume_context: r.volume_context, volume_capabilities: r.volume_capabilities, parameters: r.parameters },
        message: '',
      };
    }),

    ListVolumes: handle('ListVolumes', {}, async (r) => {
      const page = await deps.listVolumes(r.max_entries, r.starting_token);
      const entries = await mapLimit(page.entries, PARALLEL_READS, async (found) => ({
        volume: csiVolume(view(found)),
        status: {
          published_node_ids: found.record.publications.map((p) => p.node),
          volume_condition: condition(await volumes.condition(found, 'quick')),
        },
      }));
      return { entries, next_token: page.nextToken };
    }),

    GetCapacity: handle('GetCapacity', {}, async (r) => {
      const input: CapacityInput = {
        capabilities: parseCapabilities(r.volume_capabilities, false),
        parameters: r.parameters,
        topology: r.accessible_topology?.segments ?? undefined,
      };
      const c = await deps.capacity(input);
      return {
        available_capacity: c.availableBytes.toString(),
        maximum_volume_size: { value: c.maximumVolumeBytes.toString() },
        minimum_volume_size: { value: c.minimumVolumeBytes.toString() },
      };
    }),

    ControllerExpandVolume: handle('ControllerExpandVolume', { ids: volumeIds, locks: byVolume }, async (r, log) => {
      const v = await volumes.expand(requireString(r.volume_id, 'volume_id'), parseRange(r.capacity_range), log);
      // Block and filesystem volumes alike: the node must refresh the device it attached.
      return { capacity_bytes: v.sizeBytes.toString(), node_expansion_required: true };
    }),

    ControllerPublishVolume: handle('ControllerPublishVolume', { ids: nodeIds, locks: byVolume }, async (r, log) => {
      const publish_context = await deps.publishing.publish(
        {
          volumeId: requireString(r.volume_id, 'volume_id'),
          nodeId: requireString(r.node_id, 'node_id'),
          capability: parseCapability(r.volume_capability),
          readonly: r.readonly,
        },
        log,
      );
      return { publish_context };
    }),

    ControllerUnpublishVolume: handle('ControllerUnpublishVolume', { ids: nodeIds, locks: byVolume }, async (r, log) => {
      await deps.publishing.unpublish(checkId(requireString(r.volume_id, 'volume_id'), 'volume_id'), r.node_id, log);
      return {};
    }),

    ...snapshotHandlers(handle, deps.snapshots),

    ControllerModifyVolume: handle('ControllerModifyVolume', { ids: volumeIds, locks: byVolume }, async (r, log) => {
      const target = parseMutable(r.mutable_parameters, isMount);
      await deps.relocator.relocate(await volumes.require(requireString(r.volume_id, 'volume_id')), target, log);
      return {};
    }),

    // Locked: its `qemu-img check` must not read an image a background merge is rewriting (ABORTED meanwhile).
    ControllerGetVolume: handle('ControllerGetVolume', { ids: volumeIds, locks: byVolume }, async (r) => {
      const found = await volumes.require(requireString(r.volume_id, 'volume_id'));
      return {
        volume: csiVolume(view(found)),
        status: {
          published_node_ids: found.record.publications.map((p) => p.node),
          volume_condition: condition(await volumes.condition(found, 'full')),
        },
      };
    }),
  };
}
