/** Publisher (NodePublishVolume, NodeUnpublishVolume) and Stager.requireStaged on fake shares and fake node adapters. */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Capability } from '../../../src/domain/capabilities.js';
import type { Format } from '../../../src/domain/parameters.js';
import { fingerprint } from '../../../src/node/stage.js';
import { volumeTag } from '../../../src/node/state.js';
import { toolFailed } from '../../fakes/recorder.js';
import { blockCap, fsCap, nodeWorld, type NodeWorld } from './node-world.js';
import { log } from './world.js';

const worlds: NodeWorld[] = [];
afterEach(async () => {
  for (const w of worlds.splice(0)) await w.cleanup();
});

/** Volume pvc-1 of `format` staged with `cap`; `publish` publishes it to a pod's target. */
async function staged(format: Format = 'qcow2', cap: Capability = fsCap(), readonly = false) {
  const w = nodeWorld();
  worlds.push(w);
  await w.volume('pvc-1', format);
  await w.node.stager.stage(w.stageInput('pvc-1', cap, readonly), log);
  const publish = async (over: { cap?: Capability; readonly?: boolean; pod?: string } = {}) => {
    const rec = await w.node.stager.requireStaged('pvc-1', w.staging('pvc-1'));
    await w.node.publisher.publish(w.publishInput('pvc-1', over.cap ?? cap, over.readonly ?? false, over.pod), rec, log);
  };
  const targets = async () => (await w.state.read('pvc-1'))?.targets?.map((t) => t.path);
  const options = async (path: string) => (await w.sys.fs.mountEntry(path))?.options.split(',');
  return { w, publish, targets, options, device: (await w.state.read('pvc-1'))?.device };
}

describe('NodePublishVolume', () => {
  it('binds the staging mount onto the target and records the target first', async () => {
    const { w, publish, targets, options, device } = await staged();
    await publish();
    expect(await w.sys.fs.mountEntry(w.target('pvc-1'))).toMatchObject({ source: device, fsType: 'ext4' });
    expect(await options(w.target('pvc-1'))).toContain('rw');
    expect(w.sys.fs.actions.filter((a) => a.op === 'mount').at(-1)).toEqual({
      op: 'mount',
      args: [w.staging('pvc-1'), w.target('pvc-1'), { bind: true, readOnly: false, flags: [] }],
    });
    expect(await targets()).toEqual([w.target('pvc-1')]);
  });

  it('binds the device node onto a file at the target for a block volume', async () => {
    const { w, publish, device } = await staged('raw', blockCap);
    await publish();
    expect(w.sys.fs.actions.filter((a) => a.op === 'mount').at(-1)).toEqual({
      op: 'mount',
      args: [device, w.target('pvc-1'), { bind: true, readOnly: false, flags: [] }],
    });
    expect(await w.sys.fs.isMountPoint(w.target('pvc-1'))).toBe(true);
  });

  it.each<[string, { stageReadonly?: boolean; cap?: Capability; readonly?: boolean }]>([
    ['readonly in the request', { readonly: true }],
    ['a read-only stage', { stageReadonly: true }],
    ['a reader-only access mode', { cap: fsCap({ mode: 'SINGLE_NODE_READER_ONLY' }) }],
  ])('publishes read-only for %s', async (_what, o) => {
    const s = await staged('qcow2', fsCap(), false);
    if (o.stageReadonly === true) {
      // The volume has a filesystem now; staged again read-only.
      await s.w.node.stager.unstage('pvc-1', s.w.staging('pvc-1'), log);
      await s.w.node.stager.stage(s.w.stageInput('pvc-1', fsCap(), true), log);
    }
    const cap = o.cap ?? fsCap();
    const rec = await s.w.node.stager.requireStaged('pvc-1', s.w.staging('pvc-1'));
    await s.w.node.publisher.publish(s.w.publishInput('pvc-1', cap, o.readonly ?? false), rec, log);
    expect(await s.options(s.w.target('pvc-1'))).toContain('ro');
  });

  it('answers a repeat with the same arguments without mounting again', async () => {
    const { w, publish, targets } = await staged();
    await publish();
    w.sys.fs.reset();
    await publish();
    expect(w.sys.fs.ops()).not.toContain('mount');
    expect(await targets()).toEqual([w.target('pvc-1')]);
  });

  it.each<[string, { cap?: Capability; readonly?: boolean }]>([
    ['the readonly flag', { readonly: true }],
    ['other mount flags', { cap: fsCap({ mountFlags: ['noexec'] }) }],
  ])('answers ALREADY_EXISTS for a target already published with another %s', async (_what, over) => {
    const { publish, targets, w } = await staged();
    await publish();
    await expect(publish(over)).rejects.toMatchObject({ kind: 'alreadyExists' });
    expect(await targets()).toEqual([w.target('pvc-1')]);
  });

  it('refuses (FAILED_PRECONDITION) a target where something else is mounted, and leaves that mount', async () => {
    const { w, publish, targets } = await staged();
    const other = join(w.kubelet, 'elsewhere');
    mkdirSync(other);
    mkdirSync(w.target('pvc-1'), { recursive: true });
    await w.sys.fs.mount(other, w.target('pvc-1'), { bind: true, readOnly: false, flags: [] });
    await expect(publish()).rejects.toMatchObject({ kind: 'precondition', message: expect.stringMatching(/mount point of something other/) });
    expect(await w.sys.fs.mountEntry(w.target('pvc-1'))).toMatchObject({ root: other });
    expect(await targets()).toEqual([]);
  });

  it('publishes again, read-only, a target a crash left writable between the bind and its remount', async () => {
    const { w, publish, options } = await staged();
    const rec = await w.node.stager.requireStaged('pvc-1', w.staging('pvc-1'));
    mkdirSync(w.target('pvc-1'), { recursive: true });
    await w.state.write({ ...rec, targets: [{ path: w.target('pvc-1'), capability: fingerprint(fsCap(), true), mode: 'SINGLE_NODE_WRITER' }] });
    await w.sys.fs.mount(w.staging('pvc-1'), w.target('pvc-1'), { bind: true, readOnly: false, flags: [] });
    await publish({ readonly: true });
    expect(await options(w.target('pvc-1'))).toContain('ro');
    expect(w.sys.fs.mounts().filter((m) => m.mountPoint === w.target('pvc-1'))).toHaveLength(1);
  });

  it.each<[Capability['mode'], 'ok' | 'precondition']>([
    ['SINGLE_NODE_WRITER', 'ok'],
    ['SINGLE_NODE_MULTI_WRITER', 'ok'],
    ['SINGLE_NODE_SINGLE_WRITER', 'precondition'],
  ])('with %s, a second target on the node is %s', async (mode, outcome) => {
    const cap = fsCap({ mode });
    const { publish, targets, w } = await staged('qcow2', cap);
    await publish();
    const second = publish({ pod: 'pod-2' });
    if (outcome === 'ok') {
      await second;
      expect(await targets()).toEqual([w.target('pvc-1'), w.target('pvc-1', 'pod-2')]);
    } else {
      await expect(second).rejects.toMatchObject({ kind: 'precondition', message: expect.stringMatching(/allows one target only/) });
      expect(await targets()).toEqual([w.target('pvc-1')]);
      expect(existsSync(w.target('pvc-1', 'pod-2'))).toBe(false);
    }
  });

  it('refuses (FAILED_PRECONDITION) to publish a volume staged as a filesystem as a block device', async () => {
    const { publish } = await staged();
    await expect(publish({ cap: blockCap })).rejects.toMatchObject({ kind: 'precondition', message: expect.stringMatching(/staged as mount/) });
  });

  it('refuses (INVALID_ARGUMENT) a rw flag on a read-only publication before mounting', async () => {
    const { w, publish } = await staged();
    await expect(publish({ cap: fsCap({ mountFlags: ['rw'] }), readonly: true })).rejects.toMatchObject({ kind: 'invalid' });
    expect(existsSync(w.target('pvc-1'))).toBe(false);
  });

  it.each<[string, Capability]>([
    ['directory', fsCap()],
    ['file', blockCap],
  ])('removes the target %s it made and forgets the target when the mount fails', async (_what, cap) => {
    const { w, publish, targets } = await staged('raw', cap);
    w.sys.fs.failOn('mount', toolFailed('mount', 'mount: target: permission denied', 32));
    await expect(publish()).rejects.toMatchObject({ name: 'CommandFailed' });
    expect(existsSync(w.target('pvc-1'))).toBe(false);
    expect(await targets()).toEqual([]);
  });
});

describe('NodeUnpublishVolume', () => {
  it.each<[string, Capability]>([
    ['filesystem', fsCap()],
    ['block', blockCap],
  ])('unmounts a %s target, removes what the publish made and forgets it; a repeat is a no-op', async (_what, cap) => {
    const { w, publish, targets } = await staged('qcow2', cap);
    await publish();
    await w.node.publisher.unpublish('pvc-1', w.target('pvc-1'), log);
    expect(await w.sys.fs.isMountPoint(w.target('pvc-1'))).toBe(false);
    expect(existsSync(w.target('pvc-1'))).toBe(false);
    expect(await targets()).toEqual([]);
    w.sys.fs.reset();
    await w.node.publisher.unpublish('pvc-1', w.target('pvc-1'), log);
    expect(w.sys.fs.ops()).toEqual([]);
    // Unpublished, the volume can be unstaged.
    await w.node.stager.unstage('pvc-1', w.staging('pvc-1'), log);
    expect(await w.held()).toEqual({ loops: [], mounts: [], exports: [] });
  });

  it('leaves a target directory someone filled, once unmounted', async () => {
    const { w, publish } = await staged();
    await publish();
    await w.sys.fs.unmount(w.target('pvc-1'));
    writeFileSync(join(w.target('pvc-1'), 'left-by-the-pod'), 'x');
    await w.node.publisher.unpublish('pvc-1', w.target('pvc-1'), log);
    expect(existsSync(join(w.target('pvc-1'), 'left-by-the-pod'))).toBe(true);
  });

  it('answers OK, touching nothing, for a path the volume was never published to', async () => {
    const { w } = await staged();
    const foreign = w.target('pvc-1', 'pod-9');
    mkdirSync(foreign, { recursive: true });
    await w.sys.fs.mount(w.staging('pvc-1'), foreign, { bind: true, readOnly: false, flags: [] });
    await w.node.publisher.unpublish('pvc-1', foreign, log);
    await w.node.publisher.unpublish('pvc-none', foreign, log);
    expect(await w.sys.fs.isMountPoint(foreign)).toBe(true);
  });
});

describe('requireStaged (before NodePublishVolume)', () => {
  it('answers NOT_FOUND for a volume that does not exist, FAILED_PRECONDITION for one not staged at the path', async () => {
    const { w } = await staged();
    await w.volume('pvc-2');
    await expect(w.node.stager.requireStaged('pvc-none', w.staging('pvc-none'))).rejects.toMatchObject({ kind: 'notFound' });
    await expect(w.node.stager.requireStaged('pvc-2', w.staging('pvc-2'))).rejects.toMatchObject({ kind: 'precondition' });
    await expect(w.node.stager.requireStaged('pvc-1', w.staging('pvc-2'))).rejects.toMatchObject({ kind: 'precondition' });
  });

  it('answers FAILED_PRECONDITION for a stage whose export died, naming what is missing', async () => {
    const { w } = await staged();
    await w.sys.exports.kill(volumeTag('pvc-1'));
    await expect(w.node.stager.requireStaged('pvc-1', w.staging('pvc-1'))).rejects.toMatchObject({
      kind: 'precondition',
      message: expect.stringMatching(/qemu export of .* is not running/),
    });
  });
});
