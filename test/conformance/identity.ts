/**
 * Identity rules (CSI spec, "Identity Service RPC"), and the capability lists
 * of every service: what a plugin says about itself must match what it serves.
 */
import { describe, expect, it } from 'vitest';
import type { CsiClient } from '../helpers/client.js';
import { external, failure, type Env, type Mode } from './harness.js';

/** Domain-name notation, at most 63 characters, alphanumeric at both ends (GetPluginInfo.name). */
export const PLUGIN_NAME = /^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
/** Topology key prefix: lower-case domain name of at most 63 characters. */
const KEY_PREFIX = /^(?=.{1,63}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
/** Topology key name and value: at most 63 characters, alphanumeric at both ends, - _ . between. */
const KEY_NAME = /^(?=.{1,63}$)[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?$/;

const CONTROLLER_TYPES = [
  'CREATE_DELETE_VOLUME',
  'PUBLISH_UNPUBLISH_VOLUME',
  'LIST_VOLUMES',
  'GET_CAPACITY',
  'CREATE_DELETE_SNAPSHOT',
  'LIST_SNAPSHOTS',
  'CLONE_VOLUME',
  'PUBLISH_READONLY',
  'EXPAND_VOLUME',
  'LIST_VOLUMES_PUBLISHED_NODES',
  'VOLUME_CONDITION',
  'GET_VOLUME',
  'SINGLE_NODE_MULTI_WRITER',
  'MODIFY_VOLUME',
  'GET_SNAPSHOT',
];
const NODE_TYPES = [
  'STAGE_UNSTAGE_VOLUME',
  'GET_VOLUME_STATS',
  'EXPAND_VOLUME',
  'VOLUME_CONDITION',
  'SINGLE_NODE_MULTI_WRITER',
  'VOLUME_MOUNT_GROUP',
];

/** The topology rules of the spec's `Topology` message. */
export function checkTopologyKeys(segments: Record<string, string>): void {
  const prefixes = new Set<string>();
  for (const [key, value] of Object.entries(segments)) {
    const slash = key.indexOf('/');
    const prefix = slash < 0 ? undefined : key.slice(0, slash);
    const name = slash < 0 ? key : key.slice(slash + 1);
    if (prefix !== undefined) {
      expect(prefix, `prefix of ${key}`).toMatch(KEY_PREFIX);
      prefixes.add(prefix);
    }
    expect(name, `name of ${key}`).toMatch(KEY_NAME);
    expect(value, `value of ${key}`).toMatch(KEY_NAME);
  }
  // "If a key prefix is specified, it MUST be identical across all topology keys returned by the SP."
  expect(prefixes.size).toBeLessThanOrEqual(1);
}

async function pluginCapabilities(client: CsiClient): Promise<string[]> {
  const res = await client.identity('GetPluginCapabilities');
  return res.capabilities.map((c: any) => {
    // Exactly one member of the oneof is set.
    expect(Number(c.service != null) + Number(c.volume_expansion != null)).toBe(1);
    return c.service?.type ?? `volume_expansion:${c.volume_expansion?.type}`;
  });
}

/** The capability claims of `client` hold against what it actually serves. */
async function checkConsistency(client: CsiClient): Promise<void> {
  const plugin = await pluginCapabilities(client);
  expect(new Set(plugin).size).toBe(plugin.length);
  expect(plugin).not.toContain('UNKNOWN');
  const ctrl = await failure(client.controller('ControllerGetCapabilities'));
  const node = await failure(client.node('NodeGetCapabilities'));
  // CONTROLLER_SERVICE: advertised exactly when the Controller service answers.
  expect(plugin.includes('CONTROLLER_SERVICE')).toBe(ctrl.code === 'OK');
  if (ctrl.code !== 'OK') expect(ctrl.name).toBe('UNIMPLEMENTED');
  if (node.code !== 'OK') expect(node.name).toBe('UNIMPLEMENTED');
  const ctrlCaps: string[] =
    ctrl.code === 'OK' ? (await client.controller('ControllerGetCapabilities')).capabilities.map((c: any) => c.rpc.type) : [];
  const nodeCaps: string[] = node.code === 'OK' ? (await client.node('NodeGetCapabilities')).capabilities.map((c: any) => c.rpc.type) : [];
  // Volume expansion is claimed only with an RPC that expands, and at most one kind.
  const expansion = plugin.filter((p) => p.startsWith('volume_expansion:'));
  expect(expansion.length).toBeLessThanOrEqual(1);
  if (expansion.length > 0) expect(ctrlCaps.includes('EXPAND_VOLUME') || nodeCaps.includes('EXPAND_VOLUME')).toBe(true);
  // VOLUME_ACCESSIBILITY_CONSTRAINTS: a node says where it is.
  if (node.code === 'OK' && plugin.includes('VOLUME_ACCESSIBILITY_CONSTRAINTS')) {
    const info = await client.node('NodeGetInfo');
    expect(Object.keys(info.accessible_topology?.segments ?? {}).length).toBeGreaterThan(0);
  }
}

export function identityRules(env: Env): void {
  describe('Identity', () => {
    it('names itself in domain notation, at most 63 characters, with a vendor version', async () => {
      const info = await env.identity('GetPluginInfo');
      expect(info.name).toMatch(PLUGIN_NAME);
      expect(info.vendor_version).not.toBe('');
      expect(await env.identity('GetPluginInfo')).toEqual(info);
    });

    it('lists each plugin capability once, as one known service or expansion type', async () => {
      const caps = await pluginCapabilities(env.client);
      for (const c of caps) {
        expect([
          'CONTROLLER_SERVICE',
          'VOLUME_ACCESSIBILITY_CONSTRAINTS',
          'GROUP_CONTROLLER_SERVICE',
          'SNAPSHOT_METADATA_SERVICE',
          'volume_expansion:ONLINE',
          'volume_expansion:OFFLINE',
        ]).toContain(c);
      }
      expect(await pluginCapabilities(env.client)).toEqual(caps);
    });

    it('claims only capabilities that the services it serves back up', async () => {
      await checkConsistency(env.client);
    });

    it('answers Probe with ready, and again the same', async () => {
      const a = await env.identity('Probe');
      expect(a.ready?.value ?? true).toBe(true);
      expect(await env.identity('Probe')).toEqual(a);
    });

    it('lists each controller capability once, every one a known RPC type', async ({ skip }) => {
      if (!env.servesController) skip('no Controller service');
      const types: string[] = (await env.controller('ControllerGetCapabilities')).capabilities.map((c: any) => c.rpc.type);
      for (const t of types) expect(CONTROLLER_TYPES).toContain(t);
      expect(new Set(types).size).toBe(types.length);
      // LIST_VOLUMES_PUBLISHED_NODES extends ListVolumes and PUBLISH_READONLY extends publishing.
      if (types.includes('LIST_VOLUMES_PUBLISHED_NODES')) expect(types).toContain('LIST_VOLUMES');
      if (types.includes('PUBLISH_READONLY')) expect(types).toContain('PUBLISH_UNPUBLISH_VOLUME');
    });

    it('lists each node capability once, every one a known RPC type', async ({ skip }) => {
      if (!env.servesNode) skip('no Node service');
      const types: string[] = (await env.node('NodeGetCapabilities')).capabilities.map((c: any) => c.rpc.type);
      for (const t of types) expect(NODE_TYPES).toContain(t);
      expect(new Set(types).size).toBe(types.length);
    });

    it('reports a node id, a non-negative volume limit and well-formed topology keys', async ({ skip }) => {
      if (!env.servesNode) skip('no Node service');
      const info = await env.node('NodeGetInfo');
      expect(info.node_id).not.toBe('');
      expect(Buffer.byteLength(info.node_id)).toBeLessThanOrEqual(256);
      expect(BigInt(info.max_volumes_per_node)).toBeGreaterThanOrEqual(0n);
      checkTopologyKeys(info.accessible_topology?.segments ?? {});
      expect(await env.node('NodeGetInfo')).toEqual(info);
    });

    it.for<Mode>(['controller', 'node'])('claims only what it serves when run with --mode %s', async (mode, { skip }) => {
      if (external !== undefined) skip('needs a self-started driver');
      const client = await env.startMode(mode);
      await checkConsistency(client);
      const ctrl = await failure(client.controller('ControllerGetCapabilities'));
      const node = await failure(client.node('NodeGetCapabilities'));
      expect([ctrl.code === 'OK', node.code === 'OK']).toEqual([mode === 'controller', mode === 'node']);
      expect((await client.identity('GetPluginInfo')).name).toBe(env.driverName);
    });
  });
}
