/**
 * The node's two steps of a live move (node/layers.ts move()) with the
 * controller's LiveMover on the same fake shares: the writes moved onto the
 * new top on the target, the top pointed at the copied base, the stage record
 * following the volume — and a switch that fails, undone.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { internal } from '../../../src/domain/errors.js';
import { MiB } from '../../../src/domain/sizes.js';
import { baseNode, moveNode } from '../../../src/node/layers.js';
import { volumeTag } from '../../../src/node/state.js';
import { arrivalImage, readMove } from '../../../src/storage/moving.js';
import { fsCap, nodeWorld, type NodeWorld } from './node-world.js';
import { log } from './world.js';

const worlds: NodeWorld[] = [];
afterEach(async () => {
  for (const w of worlds.splice(0)) await w.cleanup();
});

const MARK = Buffer.alloc(4096, 0x77);
const LATER = Buffer.alloc(4096, 0x42);

/** Volume pvc-1 (qcow2) staged on node-1 as ControllerPublishVolume recorded it; `to` is the other share. */
async function served() {
  const w = nodeWorld({ shares: ['fast', 'slow'] });
  worlds.push(w);
  const v = await w.volume('pvc-1');
  const from = v.mount;
  const to = from === 'fast' ? 'slow' : 'fast';
  await w.store.update(w.shares.layout(from), { ...v.record, publications: [{ node: 'node-1', mode: 'SINGLE_NODE_WRITER', readonly: false }] });
  await w.node.stager.stage(w.stageInput('pvc-1', fsCap()), log);
  const device = () => w.device('pvc-1');
  const found = async () => {
    const f = await w.store.find('pvc-1');
    if (f === undefined) throw new Error('pvc-1 is gone');
    return f;
  };
  return { w, from, to, device, found };
}

describe('a live move, the node its half', () => {
  it('moves the writes to the target, then reads the copied base; the record follows, nothing stays behind', async () => {
    const { w, from, to, device, found } = await served();
    await device().write(8 * Number(MiB), MARK);
    expect(await w.mover.move(await found(), to, log)).toBe('pending');

    // The node's first poll: the writes land on the new top on the target, reading through the source.
    await w.node.layers.poll();
    const intent = await readMove(w.shares.layout(from), 'pvc-1');
    expect(intent).toMatchObject({ to, switching: true, switched: true });
    const rec = await w.state.read('pvc-1');
    expect(await w.sys.exports.top(rec!.export!)).toBe(moveNode('pvc-1', intent!.base));
    await device().write(12 * Number(MiB), LATER);
    expect(await w.qemuImg.holds(arrivalImage(w.shares.layout(to), 'pvc-1'))).toBe(true);

    // The controller copies the now immutable source chain; the node points the top at the copy.
    expect(await w.mover.advance(await found(), log)).toBe('pending');
    expect(await readMove(w.shares.layout(from), 'pvc-1')).toMatchObject({ based: true });
    await w.node.layers.poll();
    expect(await readMove(w.shares.layout(from), 'pvc-1')).toMatchObject({ repointed: true });
    const nodes = w.sys.exports.nodes(volumeTag('pvc-1'));
    expect(nodes[baseNode('pvc-1', intent!.base)]).toBe(w.shares.layout(to).snapshotImage(intent!.base, 'qcow2'));
    expect(Object.values(nodes).filter((p) => p.startsWith(w.shares.layout(from).root))).toEqual([]);

    // The records switch, the source goes, and the stage record follows the volume on the next poll.
    expect(await w.mover.advance(await found(), log)).toBe('done');
    expect(w.contents(from).volumes).toEqual([]);
    expect(w.contents(to).volumes).toEqual(['pvc-1']);
    await w.node.layers.poll();
    expect(await w.state.read('pvc-1')).toMatchObject({ mount: to, image: w.shares.layout(to).imagePath('pvc-1', 'qcow2') });
    expect((await device().read(8 * Number(MiB), 4096)).equals(MARK)).toBe(true);
    expect((await device().read(12 * Number(MiB), 4096)).equals(LATER)).toBe(true);
    expect(await w.node.layers.poll()).toBe(false);

    // Unstaged and staged again, it opens from the target alone.
    await w.node.stager.unstage('pvc-1', w.staging('pvc-1'), log);
    expect(await w.held()).toEqual({ loops: [], mounts: [], exports: [] });
    await w.node.stager.stage(w.stageInput('pvc-1', fsCap()), log);
    const again = await w.state.read('pvc-1');
    expect(again?.layers).toEqual({ [intent!.base]: baseNode('pvc-1', intent!.base) });
    expect((await device().read(12 * Number(MiB), 4096)).equals(LATER)).toBe(true);
  });

  it('refuses to stage a volume that is moving: the target may hold its newest writes', async () => {
    const { w, to, found } = await served();
    expect(await w.mover.move(await found(), to, log)).toBe('pending');
    await w.node.layers.poll();
    await w.reboot();
    await expect(w.node.stager.stage(w.stageInput('pvc-1', fsCap()), log)).rejects.toMatchObject({
      kind: 'busy',
      message: expect.stringMatching(/is moving to mount/),
    });
  });

  it('a switch qemu refuses is written into the intent, and the controller undoes the move', async () => {
    const { w, from, to, device, found } = await served();
    await device().write(8 * Number(MiB), MARK);
    w.sys.exports.failOn('switchTo', internal('blockdev-snapshot failed: Permission denied'));
    expect(await w.mover.move(await found(), to, log)).toBe('pending');
    await w.node.layers.poll();
    expect(await readMove(w.shares.layout(from), 'pvc-1')).toMatchObject({ error: expect.stringMatching(/Permission denied/) });
    await expect(w.mover.advance(await found(), log)).rejects.toMatchObject({
      kind: 'internal',
      message: expect.stringMatching(/failed on its node/),
    });
    expect(await readMove(w.shares.layout(from), 'pvc-1')).toBeUndefined();
    expect(w.contents(to).volumes).toEqual([]);
    const rec = await w.state.read('pvc-1');
    expect(rec?.mount).toBe(from);
    expect(await w.sys.exports.top(rec!.export!)).toBe(`t${volumeTag('pvc-1')}`);
    expect((await device().read(8 * Number(MiB), 4096)).equals(MARK)).toBe(true);
  });
});
