/** Stager (NodeStageVolume, NodeUnstageVolume) on fake shares and fake node adapters: what a stage makes, repeats, refusals and clean-ups. */
import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { Capability } from '../../../src/domain/capabilities.js';
import type { Format } from '../../../src/domain/parameters.js';
import { volumeTag } from '../../../src/node/state.js';
import { toolFailed } from '../../fakes/recorder.js';
import { blockCap, fsCap, nodeWorld, type NodeWorld } from './node-world.js';
import { log } from './world.js';

const worlds: NodeWorld[] = [];
afterEach(async () => {
  for (const w of worlds.splice(0)) await w.cleanup();
});
const make = () => {
  const w = nodeWorld();
  worlds.push(w);
  return w;
};

/** A world with volume pvc-1 of `format` staged with `cap`. */
async function staged(format: Format, cap: Capability = fsCap(), readonly = false) {
  const w = make();
  const v = await w.volume('pvc-1', format);
  await w.node.stager.stage(w.stageInput('pvc-1', cap, readonly), log);
  const rec = await w.state.read('pvc-1');
  if (rec === undefined) throw new Error('no stage record');
  return { w, v, rec };
}

const formats = ['raw', 'qcow2'] as const;
const combos = formats.flatMap((format) => (['mount', 'block'] as const).map((access) => [format, access] as const));

describe('NodeStageVolume', () => {
  it.each(combos)('stages a %s volume for %s access and records every step', async (format, access) => {
    const { w, v, rec } = await staged(format, access === 'mount' ? fsCap() : blockCap);
    const loopFile = format === 'raw' ? v.image : rec.export?.exportFile;
    expect(rec).toMatchObject({
      volumeId: 'pvc-1',
      image: v.image,
      format,
      access,
      readOnly: false,
      loopFile,
      mounted: access === 'mount',
      targets: [],
    });
    expect(await w.sys.loops.findByFile(loopFile ?? '')).toMatchObject([{ device: rec.device, readOnly: false, directIo: true }]);
    expect(w.sys.exports.tags()).toEqual(format === 'qcow2' ? [volumeTag('pvc-1')] : []);
    expect(w.sys.loops.actions.find((a) => a.op === 'attach')?.args[1]).toEqual({ readOnly: false, directIo: true, overExport: format === 'qcow2' });
    if (access === 'mount') {
      expect(await w.sys.fs.mountEntry(w.staging('pvc-1'))).toMatchObject({ source: rec.device, fsType: 'ext4' });
      expect(await w.sys.fs.probe(rec.device ?? '')).toEqual({ kind: 'filesystem', fsType: 'ext4' });
    } else {
      // A block volume is the pod's to format: the stage never writes to it.
      expect(w.sys.fs.ops()).not.toContain('formatIfBlank');
      expect(await w.sys.fs.probe(rec.device ?? '')).toEqual({ kind: 'blank' });
      expect(w.sys.fs.mounts()).toEqual([]);
    }
  });

  it('makes xfs with the flags every xfs stage needs, on top of the flags asked for', async () => {
    const { w, rec } = await staged('qcow2', fsCap({ fsType: 'xfs', mountFlags: ['noatime'] }));
    expect(await w.sys.fs.probe(rec.device ?? '')).toEqual({ kind: 'filesystem', fsType: 'xfs' });
    expect(w.sys.fs.actions.find((a) => a.op === 'mount')?.args[2]).toEqual({ fsType: 'xfs', flags: ['noatime', 'nouuid'], readOnly: false });
  });

  it.each(combos)('answers a repeat of a complete %s %s stage without touching anything', async (format, access) => {
    const { w, rec } = await staged(format, access === 'mount' ? fsCap() : blockCap);
    for (const fake of [w.sys.loops, w.sys.fs, w.sys.exports]) fake.reset();
    await w.node.stager.stage(w.stageInput('pvc-1', access === 'mount' ? fsCap() : blockCap), log);
    expect(w.sys.loops.ops()).not.toContain('attach');
    expect(w.sys.loops.ops()).not.toContain('detach');
    expect(w.sys.fs.ops().filter((op) => ['mount', 'unmount', 'formatIfBlank'].includes(op))).toEqual([]);
    expect(w.sys.exports.ops().filter((op) => op !== 'isAlive')).toEqual([]);
    expect(await w.state.read('pvc-1')).toEqual(rec);
  });

  it.each<[string, (w: NodeWorld) => Parameters<NodeWorld['node']['stager']['stage']>[0]]>([
    ['another capability', (w) => w.stageInput('pvc-1', blockCap)],
    ['another fs_type', (w) => w.stageInput('pvc-1', fsCap({ fsType: 'xfs' }))],
    ['other mount flags', (w) => w.stageInput('pvc-1', fsCap({ mountFlags: ['noatime'] }))],
    ['the readonly flag', (w) => w.stageInput('pvc-1', fsCap(), true)],
    ['another staging path', (w) => ({ ...w.stageInput('pvc-1'), stagingPath: w.staging('pvc-other') })],
  ])('answers ALREADY_EXISTS to a stage of a staged volume with %s, and keeps the stage', async (_what, input) => {
    const { w, rec } = await staged('qcow2');
    await expect(w.node.stager.stage(input(w), log)).rejects.toMatchObject({ kind: 'alreadyExists' });
    expect(await w.state.read('pvc-1')).toEqual(rec);
    expect(await w.sys.fs.isMountPoint(w.staging('pvc-1'))).toBe(true);
  });

  it('answers NOT_FOUND for a volume on no mount of the node, and records nothing', async () => {
    const w = make();
    await expect(w.node.stager.stage(w.stageInput('pvc-none'), log)).rejects.toMatchObject({ kind: 'notFound' });
    expect(await w.state.list()).toEqual([]);
    expect(w.sys.loops.ops()).toEqual([]);
  });

  it.each(formats)('refuses (FAILED_PRECONDITION) to format over another filesystem on a %s volume, and cleans up', async (format) => {
    const w = make();
    await w.volume('pvc-1', format);
    await w.node.stager.stage(w.stageInput('pvc-1', fsCap({ fsType: 'xfs' })), log);
    await w.node.stager.unstage('pvc-1', w.staging('pvc-1'), log);
    await expect(w.node.stager.stage(w.stageInput('pvc-1', fsCap({ fsType: 'ext4' })), log)).rejects.toMatchObject({
      kind: 'precondition',
      message: expect.stringMatching(/holds a xfs filesystem but ext4 was asked for/),
    });
    expect(await w.held()).toEqual({ loops: [], mounts: [], exports: [] });
    expect(await w.state.read('pvc-1')).toBeUndefined();
  });

  it.each(formats)('refuses (FAILED_PRECONDITION) to format over data it does not know on a %s volume, and cleans up', async (format) => {
    const w = make();
    const v = await w.volume('pvc-1', format);
    await w.qemuImg.write(v.image, format, 0, Buffer.alloc(4096, 0x5a));
    await expect(w.node.stager.stage(w.stageInput('pvc-1'), log)).rejects.toMatchObject({
      kind: 'precondition',
      message: expect.stringMatching(/carries data without a signature blkid knows; refusing to format over it/),
    });
    expect(w.sys.fs.ops()).not.toContain('mount');
    expect(await w.held()).toEqual({ loops: [], mounts: [], exports: [] });
    expect(await w.state.read('pvc-1')).toBeUndefined();
  });

  it.each<[string, Capability, boolean]>([
    ['readonly from the publish context', fsCap(), true],
    ['a reader-only access mode', fsCap({ mode: 'SINGLE_NODE_READER_ONLY' }), false],
  ])('never formats a read-only stage (%s): a blank volume is FAILED_PRECONDITION', async (_what, cap, readonly) => {
    const w = make();
    await w.volume('pvc-1');
    await expect(w.node.stager.stage(w.stageInput('pvc-1', cap, readonly), log)).rejects.toMatchObject({
      kind: 'precondition',
      message: expect.stringMatching(/has no filesystem yet and is staged read-only/),
    });
    expect(w.sys.fs.ops()).toContain('probe');
    expect(w.sys.fs.ops()).not.toContain('formatIfBlank');
    expect(await w.held()).toEqual({ loops: [], mounts: [], exports: [] });
  });

  it('stages a formatted volume read-only: a read-only export, loop and mount, with the journal left alone', async () => {
    const w = make();
    await w.volume('pvc-1');
    await w.node.stager.stage(w.stageInput('pvc-1'), log);
    await w.node.stager.unstage('pvc-1', w.staging('pvc-1'), log);
    await w.node.stager.stage(w.stageInput('pvc-1', fsCap(), true), log);
    const rec = await w.state.read('pvc-1');
    expect(rec).toMatchObject({ readOnly: true, export: { readOnly: true, loopDirectIo: false } });
    expect(await w.sys.loops.findByFile(rec?.loopFile ?? '')).toMatchObject([{ readOnly: true, directIo: false }]);
    expect((await w.sys.fs.mountEntry(w.staging('pvc-1')))?.options.split(',')).toContain('ro');
    expect(w.sys.fs.actions.filter((a) => a.op === 'mount').at(-1)?.args[2]).toEqual({ fsType: 'ext4', flags: ['noload'], readOnly: true });
  });

  it('refuses a read-only stage of a raw image someone attached read-write, and leaves that device alone', async () => {
    const w = make();
    const v = await w.volume('pvc-1', 'raw');
    const theirs = await w.sys.loops.attach(v.image, { readOnly: false, directIo: false });
    await expect(w.node.stager.stage(w.stageInput('pvc-1', fsCap(), true), log)).rejects.toMatchObject({ kind: 'precondition' });
    expect(await w.sys.loops.findByFile(v.image)).toEqual([theirs]);
    expect(await w.state.read('pvc-1')).toBeUndefined();
  });

  it('refuses mount flags that would undo a read-only stage, before touching the volume', async () => {
    const w = make();
    await w.volume('pvc-1');
    await expect(w.node.stager.stage(w.stageInput('pvc-1', fsCap({ mountFlags: ['rw'] }), true), log)).rejects.toMatchObject({ kind: 'invalid' });
    expect(w.sys.loops.ops()).toEqual([]);
  });

  it.each<[string, Format, Capability, (w: NodeWorld) => Promise<void>]>([
    ['the node rebooted (no device, mount or export left)', 'qcow2', fsCap(), async (w) => w.reboot()],
    ['the node rebooted, a raw block volume', 'raw', blockCap, async (w) => w.reboot()],
    ["the data plane lost the volume's export", 'qcow2', fsCap(), async (w) => w.sys.exports.kill(volumeTag('pvc-1'))],
    ['someone unmounted the staging path', 'raw', fsCap(), (w) => w.sys.fs.unmount(w.staging('pvc-1'))],
    [
      'a crash after the export started, before it was recorded',
      'qcow2',
      blockCap,
      async (w) => {
        const rec = await w.state.read('pvc-1');
        if (rec?.device === undefined) throw new Error('not staged');
        await w.sys.loops.detach(rec.device);
        await w.state.write({ ...rec, export: undefined, loopFile: undefined, device: undefined });
      },
    ],
  ])('cleans up a half-done stage and stages again: %s', async (_what, format, cap, breakIt) => {
    const { w } = await staged(format, cap);
    await breakIt(w);
    await w.node.stager.stage(w.stageInput('pvc-1', cap), log);
    const rec = await w.state.read('pvc-1');
    expect(await w.node.stager.requireStaged('pvc-1', w.staging('pvc-1'))).toEqual(rec);
    expect((await w.held()).exports).toEqual(format === 'qcow2' ? [volumeTag('pvc-1')] : []);
    expect((await w.held()).loops).toHaveLength(1);
    // The second stage finds the filesystem the first one made.
    if (cap.access === 'mount') expect(await w.sys.fs.probe(rec?.device ?? '')).toEqual({ kind: 'filesystem', fsType: 'ext4' });
  });

  it('undoes everything when a step fails, and a retry stages afresh', async () => {
    const w = make();
    await w.volume('pvc-1');
    w.sys.fs.failOn('mount', toolFailed('mount', 'mount: /x: cannot mount; probably corrupted filesystem', 32), { times: 1 });
    await expect(w.node.stager.stage(w.stageInput('pvc-1'), log)).rejects.toMatchObject({ name: 'CommandFailed' });
    expect(await w.held()).toEqual({ loops: [], mounts: [], exports: [] });
    expect(await w.state.read('pvc-1')).toBeUndefined();
    await w.node.stager.stage(w.stageInput('pvc-1'), log);
    expect(await w.sys.fs.isMountPoint(w.staging('pvc-1'))).toBe(true);
  });

  it.each<[string, { node: string }[], RegExp]>([
    ['the nodes it is published to', [{ node: 'node-b' }], /in use by another process.*; it is published to node\(s\) node-b/],
    ['no node when none is recorded', [], /; the controller records no node for it/],
  ])('names, for a qemu image lock held elsewhere, %s', async (_what, nodes, message) => {
    const w = make();
    const v = await w.volume('pvc-1');
    const layout = w.shares.layout(v.mount);
    const record = await w.store.read(layout, 'pvc-1');
    if (record === undefined) throw new Error('no volume');
    await w.store.update(layout, { ...record, publications: nodes.map((n) => ({ ...n, mode: 'SINGLE_NODE_WRITER', readonly: false })) });
    const release = await w.qemuImg.hold(v.image);
    await expect(w.node.stager.stage(w.stageInput('pvc-1'), log)).rejects.toMatchObject({
      kind: 'precondition',
      reason: 'imageLocked',
      message: expect.stringMatching(message),
    });
    expect(await w.held()).toEqual({ loops: [], mounts: [], exports: [] });
    release();
    await w.node.stager.stage(w.stageInput('pvc-1'), log);
  });
});

describe('NodeUnstageVolume', () => {
  it.each(combos)('undoes a %s %s stage completely, and a repeat is a no-op', async (format, access) => {
    const { w } = await staged(format, access === 'mount' ? fsCap() : blockCap);
    await w.node.stager.unstage('pvc-1', w.staging('pvc-1'), log);
    expect(await w.held()).toEqual({ loops: [], mounts: [], exports: [] });
    expect(await w.state.list()).toEqual([]);
    expect(existsSync(w.state.volumeDir('pvc-1'))).toBe(false);
    expect(existsSync(w.state.exportDir('pvc-1'))).toBe(false);
    // The image is free again: the controller may write it.
    expect(await w.qemuImg.holds(w.shares.layout('fast').imagePath('pvc-1', format))).toBe(false);
    w.sys.loops.reset();
    await w.node.stager.unstage('pvc-1', w.staging('pvc-1'), log);
    expect(w.sys.loops.ops()).toEqual([]);
  });

  it('answers OK untouched for a volume never staged, or staged at another path', async () => {
    const { w, rec } = await staged('qcow2');
    await w.node.stager.unstage('pvc-other', w.staging('pvc-other'), log);
    await w.node.stager.unstage('pvc-1', w.staging('pvc-other'), log);
    expect(await w.state.read('pvc-1')).toEqual(rec);
    expect(await w.sys.fs.isMountPoint(w.staging('pvc-1'))).toBe(true);
  });

  it('refuses (FAILED_PRECONDITION) while the volume is still published, and keeps everything', async () => {
    const { w, rec } = await staged('qcow2');
    await w.node.publisher.publish(w.publishInput('pvc-1'), rec, log);
    await expect(w.node.stager.unstage('pvc-1', w.staging('pvc-1'), log)).rejects.toMatchObject({
      kind: 'precondition',
      message: expect.stringMatching(/still published at .*pod-1/),
    });
    expect(await w.node.stager.requireStaged('pvc-1', w.staging('pvc-1'))).toMatchObject({ targets: [{ path: w.target('pvc-1') }] });
  });

  it('answers ABORTED while the loop device is still open, keeping the record and the export for the retry', async () => {
    const { w, rec } = await staged('qcow2', blockCap);
    const close = w.sys.loops.open(rec.device ?? '');
    await expect(w.node.stager.unstage('pvc-1', w.staging('pvc-1'), log)).rejects.toMatchObject({ kind: 'busy' });
    expect(await w.state.read('pvc-1')).toEqual(rec);
    expect(await w.sys.exports.isAlive(rec.export!)).toBe(true);
    expect(await w.sys.loops.findByFile(rec.loopFile ?? '')).toMatchObject([{ device: rec.device, autoclear: true }]);
    await close();
    await w.node.stager.unstage('pvc-1', w.staging('pvc-1'), log);
    expect(await w.held()).toEqual({ loops: [], mounts: [], exports: [] });
  });

  it('removes the record of a stage a reboot took away, with nothing left to undo', async () => {
    const { w } = await staged('qcow2');
    await w.reboot();
    await w.node.stager.unstage('pvc-1', w.staging('pvc-1'), log);
    expect(await w.state.list()).toEqual([]);
    expect(w.sys.exports.ops()).toEqual(['stop']);
  });
});
