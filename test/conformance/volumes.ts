/**
 * CreateVolume, DeleteVolume, ValidateVolumeCapabilities and ControllerGetVolume
 * (CSI spec, "Controller Service RPC"): every capability combination filedriver
 * claims, capacity ranges, idempotent repeats and ALREADY_EXISTS, topology.
 */
import { describe, expect, it } from 'vitest';
import { checkTopologyKeys } from './identity.js';
import { blockCap, codeName, failure, MiB, mountCap, need, SIZE, type Env } from './harness.js';

const MODES = [
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_READER_ONLY',
  'MULTI_NODE_READER_ONLY',
  'MULTI_NODE_SINGLE_WRITER',
  'MULTI_NODE_MULTI_WRITER',
  'SINGLE_NODE_SINGLE_WRITER',
  'SINGLE_NODE_MULTI_WRITER',
] as const;
const ACCESS = {
  'ext4 filesystem': (m: string) => mountCap(m, 'ext4'),
  'xfs filesystem': (m: string) => mountCap(m, 'xfs'),
  block: (m: string) => blockCap(m),
};
type Access = keyof typeof ACCESS;

/**
 * What filedriver claims (README, "Access modes"): every single-node mode and
 * multi-node readers for both formats and access types; multi-node writers
 * only as raw block volumes; MULTI_NODE_SINGLE_WRITER never.
 */
function claimed(format: string, access: Access, mode: string): boolean {
  if (mode === 'MULTI_NODE_SINGLE_WRITER') return false;
  if (mode === 'MULTI_NODE_MULTI_WRITER') return access === 'block' && format === 'raw';
  return true;
}

const COMBINATIONS = (['qcow2', 'raw'] as const).flatMap((format) =>
  (Object.keys(ACCESS) as Access[]).flatMap((access) => MODES.map((mode) => [format, access, mode, claimed(format, access, mode)] as const)),
);

/** A capacity range and what CreateVolume must answer for it. */
const RANGES: [string, string, { required_bytes?: string; limit_bytes?: string } | null][] = [
  ['no range (the default size)', 'OK', null],
  ['required only', 'OK', { required_bytes: String(10n * MiB) }],
  ['required only, not a whole MiB', 'OK', { required_bytes: String(10n * MiB + 1n) }],
  ['limit only', 'OK', { limit_bytes: String(20n * MiB) }],
  ['limit only, not a whole MiB', 'OK', { limit_bytes: String(20n * MiB + 5n) }],
  ['required below limit', 'OK', { required_bytes: String(10n * MiB), limit_bytes: String(20n * MiB) }],
  ['required equal to limit', 'OK', { required_bytes: String(16n * MiB), limit_bytes: String(16n * MiB) }],
  ['required equal to limit, between two MiB', 'OUT_OF_RANGE', { required_bytes: String(16n * MiB + 1n), limit_bytes: String(16n * MiB + 1n) }],
  ['required above limit', 'OUT_OF_RANGE', { required_bytes: String(20n * MiB), limit_bytes: String(10n * MiB) }],
  ['limit below the smallest volume', 'OUT_OF_RANGE', { limit_bytes: '1000' }],
  ['more than any mount holds', 'RESOURCE_EXHAUSTED', { required_bytes: String(4n << 60n) }],
  ['a negative required size', 'INVALID_ARGUMENT', { required_bytes: '-1' }],
  ['a negative limit', 'INVALID_ARGUMENT', { limit_bytes: '-5' }],
];

function fits(capacity: bigint, range: { required_bytes?: string; limit_bytes?: string } | null): boolean {
  const req = BigInt(range?.required_bytes ?? '0');
  const lim = BigInt(range?.limit_bytes ?? '0');
  return capacity > 0n && capacity >= req && (lim === 0n || capacity <= lim);
}

export function volumeRules(env: Env): void {
  describe('CreateVolume and DeleteVolume', () => {
    it.for(COMBINATIONS)('%s %s %s: created and deleted when claimed, INVALID_ARGUMENT otherwise', async ([format, access, mode, ok], { skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      const name = env.name(`cap-${format}-${access.split(' ')[0]}-${mode.toLowerCase()}`);
      const cap = ACCESS[access](mode);
      const created = await failure(env.createVolume(name, { parameters: { format }, volume_capabilities: [cap] }));
      if (!ok) {
        expect(created.name).toBe('INVALID_ARGUMENT');
        expect(created.details).not.toBe('');
        return;
      }
      expect(created.name).toBe('OK');
      const confirmed = await env.controller('ValidateVolumeCapabilities', { volume_id: name, volume_capabilities: [cap] });
      expect(confirmed.confirmed?.volume_capabilities).toHaveLength(1);
      await env.controller('DeleteVolume', { volume_id: name });
      await env.controller('DeleteVolume', { volume_id: name });
    });

    it.for([
      ['a filesystem and a block capability', 'qcow2', [mountCap(), blockCap()], 'OK'],
      ['a filesystem reader and a block multi-writer, raw', 'raw', [mountCap('MULTI_NODE_READER_ONLY'), blockCap('MULTI_NODE_MULTI_WRITER')], 'OK'],
      ['one capability the format cannot serve among others', 'qcow2', [mountCap(), blockCap('MULTI_NODE_MULTI_WRITER')], 'INVALID_ARGUMENT'],
    ] as const)('a volume asked to serve %s (%s) is %s', async ([, format, caps, expected], { skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      const name = env.name(`multi-${format}-${expected.toLowerCase()}`);
      expect(await codeName(env.createVolume(name, { parameters: { format }, volume_capabilities: caps }))).toBe(expected);
      await env.controller('DeleteVolume', { volume_id: name });
    });

    it.for(RANGES)('a capacity range with %s is %s, and the volume fits the range', async ([what, expected, range], { skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      const name = env.name(`range-${RANGES.findIndex(([w]) => w === what)}`);
      expect(await codeName(env.createVolume(name, { capacity_range: range }))).toBe(expected);
      if (expected !== 'OK') return;
      const again = await env.controller('CreateVolume', env.createRequest(name, { capacity_range: range }));
      expect(fits(BigInt(again.volume.capacity_bytes), range)).toBe(true);
      await env.controller('DeleteVolume', { volume_id: name });
    });

    it('answers a repeated request with the same volume, and a compatible narrower range with it too', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      const name = env.name('repeat');
      const req = env.createRequest(name, { capacity_range: { required_bytes: String(SIZE) } });
      const first = await env.controller('CreateVolume', req);
      env.trackVolume(first.volume.volume_id);
      expect(await env.controller('CreateVolume', req)).toEqual(first);
      const narrower = await env.controller('CreateVolume', { ...req, capacity_range: { required_bytes: String(SIZE / 2n) } });
      expect(narrower).toEqual(first);
      const byLimit = await env.controller('CreateVolume', { ...req, capacity_range: { limit_bytes: String(SIZE * 2n) } });
      expect(byLimit).toEqual(first);
    });

    it.for([
      [
        'a different size (required and limit twice as big)',
        { capacity_range: { required_bytes: String(2n * SIZE), limit_bytes: String(2n * SIZE) } },
      ],
      ['a limit below its size', { capacity_range: { limit_bytes: String(SIZE / 2n) } }],
      ['different parameters', { parameters: { format: 'raw' } }],
    ] as const)('answers ALREADY_EXISTS to the same name with %s', async ([, change], { skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      const name = env.name('conflict');
      await env.createVolume(name, { capacity_range: { required_bytes: String(SIZE), limit_bytes: String(SIZE) }, parameters: { format: 'qcow2' } });
      const req = env.createRequest(name, {
        capacity_range: { required_bytes: String(SIZE), limit_bytes: String(SIZE) },
        parameters: { format: 'qcow2' },
      });
      expect(await codeName(env.controller('CreateVolume', { ...req, ...change }))).toBe('ALREADY_EXISTS');
    });

    it('answers ALREADY_EXISTS to the same name when the volume lies outside the requisite topology', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      const mounts = env.topologyMounts();
      if (mounts.length < 2) skip('needs two mounts in the node topology');
      const name = env.name('conflict-topology');
      await env.createVolume(name, { accessibility_requirements: { requisite: [{ segments: { [env.key(mounts[0]!)]: 'true' } }] } });
      const elsewhere = { requisite: [{ segments: { [env.key(mounts[1]!)]: 'true' } }] };
      expect(await codeName(env.controller('CreateVolume', env.createRequest(name, { accessibility_requirements: elsewhere })))).toBe(
        'ALREADY_EXISTS',
      );
    });

    it('answers ALREADY_EXISTS to the same name with different mutable_parameters', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'MODIFY_VOLUME');
      const name = env.name('conflict-mutable');
      await env.createVolume(name, { mutable_parameters: { format: 'raw' } });
      expect(await codeName(env.controller('CreateVolume', env.createRequest(name, { mutable_parameters: { format: 'qcow2' } })))).toBe(
        'ALREADY_EXISTS',
      );
    });

    it('advertises SINGLE_NODE_MULTI_WRITER when it serves the single-node single- and multi-writer modes', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      const caps = [mountCap('SINGLE_NODE_SINGLE_WRITER'), mountCap('SINGLE_NODE_MULTI_WRITER')];
      const served = await codeName(env.createVolume(env.name('snmw'), { volume_capabilities: caps }));
      if (served !== 'OK') skip('the modes are not served');
      expect(env.controllerCaps.has('SINGLE_NODE_MULTI_WRITER')).toBe(true);
    });

    it('creates where the requisite topology allows, and reports topology a node reports', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      if (!env.pluginCaps.has('VOLUME_ACCESSIBILITY_CONSTRAINTS')) skip('no topology');
      for (const mount of env.topologyMounts()) {
        const requisite = [{ segments: { [env.key(mount)]: 'true' } }];
        const v = await env.createVolume(env.name(`topology-${mount}`), { accessibility_requirements: { requisite, preferred: requisite } });
        expect(v.accessible_topology.length).toBeGreaterThan(0);
        for (const t of v.accessible_topology) {
          checkTopologyKeys(t.segments);
          // Each segment the volume is reachable from is one the requisite names.
          expect(requisite.some((r) => Object.entries(r.segments).every(([k, val]) => t.segments[k] === val))).toBe(true);
          for (const [k, val] of Object.entries(t.segments)) expect(env.nodeSegments[k]).toBe(val);
        }
        await env.controller('DeleteVolume', { volume_id: v.volume_id });
      }
    });

    it('answers RESOURCE_EXHAUSTED when the requisite topology names nowhere it can provision', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      if (!env.pluginCaps.has('VOLUME_ACCESSIBILITY_CONSTRAINTS')) skip('no topology');
      const requisite = [{ segments: { [env.key('no-such-mount')]: 'true' } }];
      expect(await codeName(env.createVolume(env.name('topology-none'), { accessibility_requirements: { requisite } }))).toBe('RESOURCE_EXHAUSTED');
    });

    it('deletes unknown ids and repeats with OK, and a deleted name can be created afresh', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      expect(await codeName(env.controller('DeleteVolume', { volume_id: env.name('never-created') }))).toBe('OK');
      const name = env.name('recreate');
      const v = await env.createVolume(name);
      await env.controller('DeleteVolume', { volume_id: v.volume_id });
      expect(await codeName(env.controller('DeleteVolume', { volume_id: v.volume_id }))).toBe('OK');
      if (env.controllerCaps.has('GET_VOLUME'))
        expect(await codeName(env.controller('ControllerGetVolume', { volume_id: v.volume_id }))).toBe('NOT_FOUND');
      const again = await env.createVolume(name, { capacity_range: { required_bytes: String(2n * SIZE) } });
      expect(again.capacity_bytes).toBe(String(2n * SIZE));
    });
  });

  describe('ValidateVolumeCapabilities and ControllerGetVolume', () => {
    it('confirms supported capabilities, echoing them, and answers the same again', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      const v = await env.createVolume(env.name('validate'));
      const req = {
        volume_id: v.volume_id,
        volume_capabilities: [mountCap(), blockCap('SINGLE_NODE_READER_ONLY')],
        volume_context: v.volume_context,
      };
      const res = await env.controller('ValidateVolumeCapabilities', req);
      expect(res.confirmed.volume_capabilities).toHaveLength(2);
      expect(res.confirmed.volume_context).toEqual(v.volume_context);
      expect(await env.controller('ValidateVolumeCapabilities', req)).toEqual(res);
    });

    it.for([
      ['a mode it does not serve', mountCap('MULTI_NODE_SINGLE_WRITER')],
      ['multi-node writers on a filesystem', mountCap('MULTI_NODE_MULTI_WRITER')],
      ['a filesystem type it does not make', mountCap('SINGLE_NODE_WRITER', 'btrfs')],
    ] as const)('does not confirm %s, and says why', async ([, cap], { skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      const v = await env.createVolume(env.name('validate-no'));
      const res = await env.controller('ValidateVolumeCapabilities', { volume_id: v.volume_id, volume_capabilities: [mountCap(), cap] });
      expect(res.confirmed).toBeNull();
      expect(res.message).not.toBe('');
    });

    it('does not confirm parameters that contradict the volume', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      const v = await env.createVolume(env.name('validate-params'), { parameters: { format: 'qcow2' } });
      const res = await env.controller('ValidateVolumeCapabilities', {
        volume_id: v.volume_id,
        volume_capabilities: [mountCap()],
        parameters: { format: 'raw' },
      });
      expect(res.confirmed).toBeNull();
    });

    it('answers NOT_FOUND for a volume that does not exist', async ({ skip }) => {
      need(env, skip);
      expect(await codeName(env.controller('ValidateVolumeCapabilities', { volume_id: env.name('nope'), volume_capabilities: [mountCap()] }))).toBe(
        'NOT_FOUND',
      );
    });

    it('gets the volume CreateVolume made, with status, and NOT_FOUND for unknown ids', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'GET_VOLUME');
      const v = await env.createVolume(env.name('get'));
      const got = await env.controller('ControllerGetVolume', { volume_id: v.volume_id });
      expect(got.volume).toEqual(v);
      expect(got.status.published_node_ids).toEqual([]);
      if (env.controllerCaps.has('VOLUME_CONDITION')) expect(got.status.volume_condition).toEqual({ abnormal: false, message: expect.any(String) });
      expect(await env.controller('ControllerGetVolume', { volume_id: v.volume_id })).toEqual(got);
      expect(await codeName(env.controller('ControllerGetVolume', { volume_id: env.name('nope') }))).toBe('NOT_FOUND');
    });
  });
}
