/**
 * Rules every RPC shares: REQUIRED fields missing or empty → INVALID_ARGUMENT
 * (before any lookup, so even for unknown ids); malformed capabilities and ids
 * → INVALID_ARGUMENT; an RPC whose capability is not advertised →
 * UNIMPLEMENTED, and one that is advertised is served. Capabilities are read
 * from the driver at run time, so these rules stay right as capabilities land.
 */
import { credentials, status, type Client, type ServiceError } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { loadCsi } from '../../src/csi/proto.js';
import { blockCap, codeName, failure, mountCap, type Env } from './harness.js';

type Service = 'controller' | 'node';

interface Rpc {
  service: Service;
  rpc: string;
  /** The capability that must be advertised for the RPC to be served; none: always served. */
  gate?: string;
  /** A request well-formed in every field (its ids need not exist). */
  base: (env: Env) => Record<string, unknown>;
  /** REQUIRED fields, and the value that leaves each one out. */
  required: Record<string, unknown>;
}

const cap = mountCap();
const nope = (env: Env) => env.name('does-not-exist');
const inKubelet = (env: Env, what: string) => `${env.kubeletDir}/plugins/kubernetes.io/csi/${env.driverName}/${env.run}-fields/${what}`;

export const RPCS: Rpc[] = [
  {
    service: 'controller',
    rpc: 'CreateVolume',
    gate: 'CREATE_DELETE_VOLUME',
    base: (e) => e.createRequest(e.name('fields-never-created')),
    required: { name: '', volume_capabilities: [] },
  },
  { service: 'controller', rpc: 'DeleteVolume', gate: 'CREATE_DELETE_VOLUME', base: (e) => ({ volume_id: nope(e) }), required: { volume_id: '' } },
  {
    service: 'controller',
    rpc: 'ControllerPublishVolume',
    gate: 'PUBLISH_UNPUBLISH_VOLUME',
    base: (e) => ({ volume_id: nope(e), node_id: e.nodeId || 'node-x', volume_capability: cap }),
    required: { volume_id: '', node_id: '', volume_capability: null },
  },
  {
    service: 'controller',
    rpc: 'ControllerUnpublishVolume',
    gate: 'PUBLISH_UNPUBLISH_VOLUME',
    base: (e) => ({ volume_id: nope(e), node_id: 'node-x' }),
    required: { volume_id: '' },
  },
  {
    service: 'controller',
    rpc: 'ValidateVolumeCapabilities',
    base: (e) => ({ volume_id: nope(e), volume_capabilities: [cap] }),
    required: { volume_id: '', volume_capabilities: [] },
  },
  { service: 'controller', rpc: 'ListVolumes', gate: 'LIST_VOLUMES', base: () => ({}), required: {} },
  { service: 'controller', rpc: 'GetCapacity', gate: 'GET_CAPACITY', base: () => ({}), required: {} },
  { service: 'controller', rpc: 'ControllerGetCapabilities', base: () => ({}), required: {} },
  {
    service: 'controller',
    rpc: 'CreateSnapshot',
    gate: 'CREATE_DELETE_SNAPSHOT',
    base: (e) => ({ name: e.name('fields-snap'), source_volume_id: nope(e) }),
    required: { name: '', source_volume_id: '' },
  },
  {
    service: 'controller',
    rpc: 'DeleteSnapshot',
    gate: 'CREATE_DELETE_SNAPSHOT',
    base: (e) => ({ snapshot_id: nope(e) }),
    required: { snapshot_id: '' },
  },
  { service: 'controller', rpc: 'ListSnapshots', gate: 'LIST_SNAPSHOTS', base: () => ({}), required: {} },
  { service: 'controller', rpc: 'GetSnapshot', gate: 'GET_SNAPSHOT', base: (e) => ({ snapshot_id: nope(e) }), required: { snapshot_id: '' } },
  {
    service: 'controller',
    rpc: 'ControllerExpandVolume',
    gate: 'EXPAND_VOLUME',
    base: (e) => ({ volume_id: nope(e), capacity_range: { required_bytes: String(64n << 20n) } }),
    required: { volume_id: '', capacity_range: null },
  },
  { service: 'controller', rpc: 'ControllerGetVolume', gate: 'GET_VOLUME', base: (e) => ({ volume_id: nope(e) }), required: { volume_id: '' } },
  {
    service: 'controller',
    rpc: 'ControllerModifyVolume',
    gate: 'MODIFY_VOLUME',
    base: (e) => ({ volume_id: nope(e), mutable_parameters: { format: 'raw' } }),
    required: { volume_id: '' },
  },
  {
    service: 'node',
    rpc: 'NodeStageVolume',
    gate: 'STAGE_UNSTAGE_VOLUME',
    base: (e) => ({ volume_id: nope(e), staging_target_path: inKubelet(e, 'staging'), volume_capability: cap }),
    required: { volume_id: '', staging_target_path: '', volume_capability: null },
  },
  {
    service: 'node',
    rpc: 'NodeUnstageVolume',
    gate: 'STAGE_UNSTAGE_VOLUME',
    base: (e) => ({ volume_id: nope(e), staging_target_path: inKubelet(e, 'staging') }),
    required: { volume_id: '', staging_target_path: '' },
  },
  {
    service: 'node',
    rpc: 'NodePublishVolume',
    base: (e) => ({ volume_id: nope(e), staging_target_path: inKubelet(e, 'staging'), target_path: inKubelet(e, 'target'), volume_capability: cap }),
    required: { volume_id: '', target_path: '', volume_capability: null },
  },
  {
    service: 'node',
    rpc: 'NodeUnpublishVolume',
    base: (e) => ({ volume_id: nope(e), target_path: inKubelet(e, 'target') }),
    required: { volume_id: '', target_path: '' },
  },
  {
    service: 'node',
    rpc: 'NodeGetVolumeStats',
    gate: 'GET_VOLUME_STATS',
    base: (e) => ({ volume_id: nope(e), volume_path: inKubelet(e, 'target') }),
    required: { volume_id: '', volume_path: '' },
  },
  {
    service: 'node',
    rpc: 'NodeExpandVolume',
    gate: 'EXPAND_VOLUME',
    base: (e) => ({ volume_id: nope(e), volume_path: inKubelet(e, 'target') }),
    required: { volume_id: '', volume_path: '' },
  },
  { service: 'node', rpc: 'NodeGetCapabilities', base: () => ({}), required: {} },
  { service: 'node', rpc: 'NodeGetInfo', base: () => ({}), required: {} },
];

const serves = (env: Env, s: Service) => (s === 'controller' ? env.servesController : env.servesNode);
const advertised = (env: Env, r: Rpc) => r.gate === undefined || (r.service === 'controller' ? env.controllerCaps : env.nodeCaps).has(r.gate);
const call = (env: Env, r: Rpc, req: object) => (r.service === 'controller' ? env.controller(r.rpc, req) : env.node(r.rpc, req));

const missing = RPCS.flatMap((r) => Object.entries(r.required).map(([field, empty]) => ({ r, field, empty })));
const withVolumeId = RPCS.filter((r) => 'volume_id' in r.required);
const withCapability = RPCS.filter((r) => 'volume_capability' in r.required || 'volume_capabilities' in r.required);

/** Capabilities missing a REQUIRED part, or with a part that is not valid. */
const BAD_CAPABILITIES: [string, object][] = [
  ['an empty capability', {}],
  ['no access type', { access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
  ['no access mode', { mount: { fs_type: 'ext4' } }],
  ['access mode UNKNOWN', { block: {}, access_mode: { mode: 'UNKNOWN' } }],
  ['an empty mount flag', mountCap('SINGLE_NODE_WRITER', 'ext4', [''])],
];

export function fieldRules(env: Env): void {
  describe('every RPC', () => {
    it.for(RPCS.map((r) => [r.rpc, r] as const))('%s is UNIMPLEMENTED exactly when its capability is not advertised', async ([, r], { skip }) => {
      if (!serves(env, r.service)) skip(`no ${r.service} service`);
      const got = await codeName(call(env, r, {}));
      if (advertised(env, r)) expect(got).not.toBe('UNIMPLEMENTED');
      else expect(got).toBe('UNIMPLEMENTED');
    });

    it.for(missing.map((m) => [m.r.rpc, m.field, m] as const))('%s without %s is INVALID_ARGUMENT naming the field', async ([, , m], { skip }) => {
      if (!serves(env, m.r.service) || !advertised(env, m.r)) skip(`${m.r.rpc} is not served`);
      const req = { ...m.r.base(env), [m.field]: m.empty };
      const f = await failure(call(env, m.r, req));
      expect(f.name).toBe('INVALID_ARGUMENT');
      expect(f.details).toContain(m.field);
    });

    it.for(
      withVolumeId
        .flatMap(
          (r) =>
            [
              ['../escape', r],
              ['x'.repeat(129), r],
              ['a/b', r],
            ] as const,
        )
        .map(([id, r]) => [r.rpc, id, r] as const),
    )('%s refuses the malformed volume id %j with INVALID_ARGUMENT', async ([, id, r], { skip }) => {
      if (!serves(env, r.service) || !advertised(env, r)) skip(`${r.rpc} is not served`);
      expect(await codeName(call(env, r, { ...r.base(env), volume_id: id }))).toBe('INVALID_ARGUMENT');
    });

    it.for(withCapability.flatMap((r) => BAD_CAPABILITIES.map(([what, c]) => [r.rpc, what, r, c] as const)))(
      '%s refuses a capability with %s as INVALID_ARGUMENT',
      async ([, , r, c], { skip }) => {
        if (!serves(env, r.service) || !advertised(env, r)) skip(`${r.rpc} is not served`);
        const field = 'volume_capability' in r.required ? 'volume_capability' : 'volume_capabilities';
        const req = { ...r.base(env), [field]: field === 'volume_capability' ? c : [c] };
        expect(await codeName(call(env, r, req))).toBe('INVALID_ARGUMENT');
      },
    );

    it('GetCapacity refuses a malformed capability too, though capabilities are optional there', async ({ skip }) => {
      if (!env.controllerCaps.has('GET_CAPACITY')) skip('GET_CAPACITY not advertised');
      for (const [, c] of BAD_CAPABILITIES)
        expect(await codeName(env.controller('GetCapacity', { volume_capabilities: [c] }))).toBe('INVALID_ARGUMENT');
      expect(await codeName(env.controller('GetCapacity', { volume_capabilities: [blockCap()] }))).toBe('OK');
    });

    it.for([
      ['GroupController', 'GroupControllerGetCapabilities', 'GROUP_CONTROLLER_SERVICE'],
      ['SnapshotMetadata', 'GetMetadataAllocated', 'SNAPSHOT_METADATA_SERVICE'],
    ] as const)('the %s service is UNIMPLEMENTED unless its plugin capability is advertised', async ([service, method, capability]) => {
      const got = await statusOf(env.endpoint, service, method);
      if (env.pluginCaps.has(capability)) expect(got).not.toBe('UNIMPLEMENTED');
      else expect(got).toBe('UNIMPLEMENTED');
    });
  });
}

/** The status of an empty call to a service our client helper does not cover (unary or server-streaming). */
function statusOf(endpoint: string, service: 'GroupController' | 'SnapshotMetadata', method: string): Promise<string> {
  const client: Client = new (loadCsi()[service])(endpoint, credentials.createInsecure());
  // Called by name: the method is the test's parameter.
  const fn = (client as unknown as Record<string, (...args: unknown[]) => unknown>)[method];
  if (fn === undefined) throw new Error(`${service} has no method ${method}`);
  const name = (err: ServiceError | null) => (err === null ? 'OK' : err.code in status ? status[err.code] : String(err.code));
  return new Promise((resolve) => {
    const done = (err: ServiceError | null) => {
      client.close();
      resolve(name(err));
    };
    const options = { deadline: Date.now() + 30_000 };
    if ((fn as { responseStream?: boolean }).responseStream === true) {
      const stream = fn.call(client, {}, options) as NodeJS.EventEmitter;
      stream.on('data', () => undefined);
      stream.on('error', (e: ServiceError) => done(e));
      stream.on('end', () => done(null));
    } else {
      fn.call(client, {}, options, (err: ServiceError | null) => done(err));
    }
  });
}
