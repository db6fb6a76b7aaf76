/** ControllerPublishVolume's node check, against a fake registry: unknown nodes, partial views, repeats. */
import { afterEach, describe, expect, it } from 'vitest';
import { PublishService, type PublishInput } from '../../../src/controller/publish.js';
import { unavailable } from '../../../src/domain/errors.js';
import type { NodeRegistry, NodeSighting } from '../../../src/storage/nodes.js';
import type { Publication } from '../../../src/storage/records.js';
import { log, world, type World } from './world.js';

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

const worlds: World[] = [];
afterEach(() => {
  for (const w of worlds.splice(0)) w.cleanup();
});

/** Volume pvc-1 on share fast, published to `publications`; `published()` reads its record back. */
async function service(registry: NodeRegistry, publications: Publication[] = []) {
  const w = world({ shares: ['fast'] });
  worlds.push(w);
  const layout = w.shares.layout('fast');
  const v = await w.volumes.create(w.request('pvc-1'), log);
  await w.store.update(layout, { ...v.record, publications });
  const published = async () => (await w.store.read(layout, 'pvc-1'))?.publications;
  return { publishing: new PublishService(w.volumes, w.mounts, w.store, registry), published };
}

const input = (nodeId: string): PublishInput => ({
  volumeId: 'pvc-1',
  nodeId,
  capability: { access: 'mount', mode: 'SINGLE_NODE_WRITER', fsType: 'ext4', mountFlags: [], volumeMountGroup: '' },
  readonly: false,
});

describe('ControllerPublishVolume and the node registry', () => {
  it("records a registered node, looking on the volume's mount first", async () => {
    const { registry, asked } = fakeRegistry({ 'node-1': 'fast' });
    const { publishing, published } = await service(registry);
    await publishing.publish(input('node-1'), log);
    expect(asked).toEqual(['node-1@fast']);
    expect(await published()).toEqual([{ node: 'node-1', mode: 'SINGLE_NODE_WRITER', readonly: false }]);
  });

  it('answers NOT_FOUND for a node that never registered, and records nothing', async () => {
    const { publishing, published } = await service(fakeRegistry({}).registry);
    await expect(publishing.publish(input('node-x'), log)).rejects.toMatchObject({
      kind: 'notFound',
      message: expect.stringMatching(/node node-x is not registered/),
    });
    expect(await published()).toEqual([]);
  });

  it('answers UNAVAILABLE when the registry cannot tell from a partial view', async () => {
    const { publishing, published } = await service(fakeRegistry({}, unavailable('mount slow cannot be checked')).registry);
    await expect(publishing.publish(input('node-x'), log)).rejects.toMatchObject({ kind: 'unavailable' });
    expect(await published()).toEqual([]);
  });

  it('answers a repeat of an existing publication without asking the registry', async () => {
    const { registry, asked } = fakeRegistry({});
    const gone: Publication = { node: 'node-gone', mode: 'SINGLE_NODE_WRITER', readonly: false };
    const { publishing, published } = await service(registry, [gone]);
    expect(await publishing.publish(input('node-gone'), log)).toMatchObject({ mount: 'fast' });
    expect(asked).toEqual([]);
    expect(await published()).toEqual([gone]);
  });
});
