/** ControllerPublishVolume's node check, against a fake registry: unknown nodes, partial views, repeats. */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { PublishService, type PublishInput } from '../../src/controller/publish.js';
import type { VolumeService } from '../../src/controller/volumes.js';
import { unavailable } from '../../src/domain/errors.js';
import type { Mounts } from '../../src/storage/mounts.js';
import type { NodeRegistry, NodeSighting } from '../../src/storage/nodes.js';
import type { Publication, VolumeRecord } from '../../src/storage/records.js';
import type { VolumeStore } from '../../src/storage/volume-store.js';

const log = pino({ level: 'silent' });

/** A registry that knows `nodes` (id → mount of its record), or fails every lookup with `error`. */
function fakeRegistry(nodes: Record<string, string>, error?: Error) {
  const asked: string[] = [];
  const registry: NodeRegistry = {
    async lookup(nodeId, first) {
      asked.push(`${nodeId}@${first ?? '*'}`);
      if (error !== undefined) throw error;
      const mount = nodes[nodeId];
      if (mount === undefined) return undefined;
      return [{ mount, ageMs: 0, fresh: true, record: { node: nodeId } } as NodeSighting];
    },
    holders: async () => [],
  };
  return { registry, asked };
}

function service(registry: NodeRegistry, publications: Publication[] = []) {
  const record = { id: 'pvc-1', format: 'qcow2', publications } as unknown as VolumeRecord;
  const written: VolumeRecord[] = [];
  const volumes = { require: async () => ({ mount: 'fast', record }) } as unknown as VolumeService;
  const mounts = { requireUsable: async () => ({}) } as unknown as Mounts;
  const store = { update: async (_l: unknown, r: VolumeRecord) => void written.push(r) } as unknown as VolumeStore;
  return { publishing: new PublishService(volumes, mounts, store, registry), written };
}

const input = (nodeId: string): PublishInput => ({
  volumeId: 'pvc-1',
  nodeId,
  capability: { access: 'mount', mode: 'SINGLE_NODE_WRITER', fsType: 'ext4', mountFlags: [], volumeMountGroup: '' },
  readonly: false,
});

describe('ControllerPublishVolume and the node registry', () => {
  it('records a registered node, looking on the volume\'s mount first', async () => {
    const { registry, asked } = fakeRegistry({ 'node-1': 'fast' });
    const { publishing, written } = service(registry);
    await publishing.publish(input('node-1'), log);
    expect(asked).toEqual(['node-1@fast']);
    expect(written[0]?.publications).toEqual([{ node: 'node-1', mode: 'SINGLE_NODE_WRITER', readonly: false }]);
  });

  it('answers NOT_FOUND for a node that never registered, and records nothing', async () => {
    const { publishing, written } = service(fakeRegistry({}).registry);
    await expect(publishing.publish(input('node-x'), log)).rejects.toMatchObject({ kind: 'notFound', message: expect.stringMatching(/node node-x is not registered/) });
    expect(written).toEqual([]);
  });

  it('answers UNAVAILABLE when the registry cannot tell from a partial view', async () => {
    const { publishing, written } = service(fakeRegistry({}, unavailable('mount slow cannot be checked')).registry);
    await expect(publishing.publish(input('node-x'), log)).rejects.toMatchObject({ kind: 'unavailable' });
    expect(written).toEqual([]);
  });

  it('answers a repeat of an existing publication without asking the registry', async () => {
    const { registry, asked } = fakeRegistry({});
    const { publishing, written } = service(registry, [{ node: 'node-gone', mode: 'SINGLE_NODE_WRITER', readonly: false }]);
    expect(await publishing.publish(input('node-gone'), log)).toMatchObject({ mount: 'fast' });
    expect(asked).toEqual([]);
    expect(written).toEqual([]);
  });
});
