/**
 * What kubelet and the sidecars do to bring a volume to this node, shared by
 * the node rules: make it, attach it (ControllerPublishVolume), stage it.
 */
import { readFileSync } from 'node:fs';
import { MiB, SIZE, type Env } from './harness.js';

type Skip = (note?: string) => never;

/** mkfs.xfs makes nothing smaller. */
export const XFS_MIN = 320n * MiB;

/** Mount options of the mount at `path` from this process's mountinfo (undefined: not a mount point). */
export function mountOptions(path: string): string[] | undefined {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[4] === path) return (f[5] ?? '').split(',');
  }
  return undefined;
}
export const isMountPoint = (path: string) => mountOptions(path) !== undefined;

export interface Provisioned {
  id: string;
  capacity: bigint;
  publish_context: Record<string, string>;
}

export function nodeSteps(env: Env) {
  return {
    /** Skips unless both services are served, the staged flow is advertised, and `nodeCaps` too. */
    needNode: (skip: Skip, ...nodeCaps: string[]): void => {
      if (!env.servesNode || !env.servesController || !env.controllerCaps.has('CREATE_DELETE_VOLUME')) skip('needs the Node and Controller services');
      if (!env.nodeCaps.has('STAGE_UNSTAGE_VOLUME')) skip('these rules follow the staged flow');
      for (const c of nodeCaps) if (!env.nodeCaps.has(c)) skip(`node ${c} not advertised`);
    },

    /** A volume made and attached to this node as the sidecars would, with its publish_context. */
    provision: async (what: string, format: 'raw' | 'qcow2', cap: object, readonly = false, size = SIZE): Promise<Provisioned> => {
      const v = await env.createVolume(env.name(what), {
        parameters: { format },
        volume_capabilities: [cap],
        capacity_range: { required_bytes: String(size) },
      });
      let publish_context: Record<string, string> = {};
      if (env.controllerCaps.has('PUBLISH_UNPUBLISH_VOLUME')) {
        env.trackControllerPublish(v.volume_id, env.nodeId);
        const req = { volume_id: v.volume_id, node_id: env.nodeId, volume_capability: cap, readonly };
        publish_context = (await env.controller('ControllerPublishVolume', req)).publish_context;
      }
      return { id: v.volume_id, capacity: BigInt(v.capacity_bytes), publish_context };
    },

    stageWith: (v: Provisioned, cap: object, extra: Record<string, unknown> = {}) => {
      return env.stage(v.id, cap, { publish_context: v.publish_context, ...extra });
    },
  };
}
