/** NodePublishVolume's cleanup and adoption decisions, against a fake mount table. */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Capability } from '../../src/domain/capabilities.js';
import { Publisher } from '../../src/node/publish.js';
import { SafePaths } from '../../src/node/safe-path.js';
import { fingerprint } from '../../src/node/stage.js';
import { StageState, type StageRecord } from '../../src/node/state.js';
import type { NodeSystem } from '../../src/node/system.js';
import type { Filesystems, MountOptions } from '../../src/system/filesystems.js';

const log = pino({ level: 'silent' });
const mountCap: Capability = { access: 'mount', mode: 'SINGLE_NODE_WRITER', fsType: 'ext4', mountFlags: [], volumeMountGroup: '' };
const blockCap: Capability = { access: 'block', mode: 'SINGLE_NODE_WRITER' };

/** Filesystems whose mount table is a Map (path → options); `failMount` makes every mount throw. */
function fakeSystem(table: Map<string, string>, failMount = false) {
  const actions: string[] = [];
  const fs: Partial<Filesystems> = {
    async isMountPoint(path) {
      return table.has(path);
    },
    async mountEntry(path) {
      const options = table.get(path);
      return options === undefined
        ? undefined
        : { mountId: 1, parentId: 0, root: '/', mountPoint: path, options, fsType: 'ext4', source: '/dev/loop9', superOptions: 'rw' };
    },
    async mount(source: string, target: string, o: MountOptions) {
      actions.push(`mount ${source} ${target}${o.readOnly ? ' ro' : ''}`);
      if (failMount) throw new Error('mount failed');
      table.set(target, o.readOnly ? 'ro,relatime' : 'rw,relatime');
    },
    async unmount(target) {
      actions.push(`umount ${target}`);
      table.delete(target);
    },
  };
  return { sys: { fs: fs as Filesystems, loops: {} as NodeSystem['loops'], exports: {} as NodeSystem['exports'] }, actions };
}

describe('publish', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  function setup(cap: Capability) {
    const dir = mkdtempSync(join(tmpdir(), 'fdtest-unit-'));
    dirs.push(dir);
    const state = new StageState(join(dir, 'state'));
    const rec: StageRecord = {
      volumeId: 'pvc-1',
      image: join(dir, 'disk.raw'),
      format: 'raw',
      mount: 's',
      stagingPath: join(dir, 'staging'),
      access: cap.access,
      fsType: cap.access === 'mount' ? 'ext4' : undefined,
      readOnly: false,
      capability: fingerprint(cap, false),
      export: undefined,
      loopFile: join(dir, 'disk.raw'),
      device: '/dev/loop9',
      mounted: cap.access === 'mount',
      stagedAt: '',
      targets: [],
    };
    return {
      dir,
      state,
      rec,
      input: (target: string, readonly = false) => ({
        volumeId: 'pvc-1',
        stagingPath: rec.stagingPath,
        targetPath: target,
        capability: cap,
        readonly,
        paths: new SafePaths(dir),
      }),
    };
  }

  it.each([
    ['directory', mountCap],
    ['device file', blockCap],
  ])('removes the target %s it created when the mount fails, and forgets the target', async (_what, cap) => {
    const { dir, state, rec, input } = setup(cap);
    await state.write(rec);
    const { sys } = fakeSystem(new Map(), true);
    const target = join(dir, 'pod', 'target');
    await expect(new Publisher(state, sys).publish(input(target), rec, log)).rejects.toThrow(/mount failed/);
    expect(existsSync(target)).toBe(false);
    expect((await state.read('pvc-1'))?.targets).toEqual([]);
  });

  it('keeps a target directory that was there before the failed publish', async () => {
    const { dir, state, rec, input } = setup(mountCap);
    await state.write(rec);
    const target = join(dir, 'target');
    mkdirSync(target);
    await expect(new Publisher(state, fakeSystem(new Map(), true).sys).publish(input(target), rec, log)).rejects.toThrow();
    expect(existsSync(target)).toBe(true);
  });

  it('publishes again, read-only, a recorded target left writable where read-only was asked', async () => {
    const { dir, state, rec, input } = setup(mountCap);
    const target = join(dir, 'target');
    mkdirSync(target);
    rec.targets = [{ path: target, capability: fingerprint(mountCap, true), mode: 'SINGLE_NODE_WRITER' }];
    await state.write(rec);
    const table = new Map([[target, 'rw,relatime']]);
    const { sys, actions } = fakeSystem(table);
    await new Publisher(state, sys).publish(input(target, true), rec, log);
    expect(actions).toEqual([`umount ${target}`, `mount ${rec.stagingPath} ${target} ro`]);
    expect(table.get(target)).toMatch(/^ro,/);
  });

  it('takes a repeat that is read-only as asked as done', async () => {
    const { dir, state, rec, input } = setup(mountCap);
    const target = join(dir, 'target');
    rec.targets = [{ path: target, capability: fingerprint(mountCap, true), mode: 'SINGLE_NODE_WRITER' }];
    await state.write(rec);
    const { sys, actions } = fakeSystem(new Map([[target, 'ro,relatime']]));
    await new Publisher(state, sys).publish(input(target, true), rec, log);
    expect(actions).toEqual([]);
  });

  it('refuses mount flags that ask for writes on a read-only publish, before touching anything', async () => {
    const cap: Capability = { ...mountCap, mountFlags: ['noatime', 'rw'] };
    const { dir, state, rec, input } = setup(cap);
    await state.write(rec);
    const { sys, actions } = fakeSystem(new Map());
    const target = join(dir, 'pod', 'target');
    await expect(new Publisher(state, sys).publish(input(target, true), rec, log)).rejects.toMatchObject({
      kind: 'invalid',
      message: expect.stringMatching(/#2 ask for a writable mount/),
    });
    expect(actions).toEqual([]);
    expect(existsSync(join(dir, 'pod'))).toBe(false);
  });

  it('answers an unpublish of a path it never published to without touching it', async () => {
    const { dir, state, rec } = setup(mountCap);
    await state.write(rec);
    const file = join(dir, 'important.txt');
    writeFileSync(file, 'keep me');
    const other = join(dir, 'other');
    mkdirSync(other);
    const { sys, actions } = fakeSystem(new Map([[other, 'rw']]));
    const publisher = new Publisher(state, sys);
    await publisher.unpublish('pvc-1', file, log);
    await publisher.unpublish('whatever', file, log);
    await publisher.unpublish('pvc-1', other, log);
    expect(actions).toEqual([]);
    expect(existsSync(file)).toBe(true);
  });

  it('unpublishes a recorded target but leaves a directory someone filled, answering OK', async () => {
    const { dir, state, rec } = setup(mountCap);
    const target = join(dir, 'target');
    mkdirSync(target);
    writeFileSync(join(target, 'left-by-the-pod'), '');
    rec.targets = [{ path: target, capability: fingerprint(mountCap, false), mode: 'SINGLE_NODE_WRITER' }];
    await state.write(rec);
    const { sys, actions } = fakeSystem(new Map([[target, 'rw']]));
    await new Publisher(state, sys).unpublish('pvc-1', target, log);
    expect(actions).toEqual([`umount ${target}`]);
    expect(existsSync(join(target, 'left-by-the-pod'))).toBe(true);
    expect((await state.read('pvc-1'))?.targets).toEqual([]);
  });
});
