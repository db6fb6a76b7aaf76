/** Node path rules that need no root: links below the kubelet dir, mount flags, overlapping paths. */
import { existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkMountFlags, checkReadOnlyFlags } from '../../src/domain/mount-flags.js';
import { checkKubeletPath, kubeletPath, overlaps } from '../../src/domain/paths.js';
import { SafePaths } from '../../src/node/safe-path.js';

describe('safe node paths', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  function rig() {
    const root = mkdtempSync(join(tmpdir(), 'fdtest-unit-'));
    dirs.push(root);
    const kubelet = join(root, 'kubelet');
    const decoy = join(root, 'etc');
    mkdirSync(join(kubelet, 'pods'), { recursive: true });
    mkdirSync(decoy);
    symlinkSync(decoy, join(kubelet, 'evil'));
    symlinkSync(decoy, join(kubelet, 'pods', 'p9'));
    return { root, kubelet, decoy, paths: new SafePaths(kubelet) };
  }

  it.each([
    ['a link in the middle', 'evil/x'],
    ['a link deeper down', 'pods/p9/volumes/v/mount'],
    ['a link as the last component', 'pods/p9'],
  ])('refuses %s with INVALID_ARGUMENT and creates nothing', async (_what, rel) => {
    const { kubelet, decoy, paths } = rig();
    const path = join(kubelet, rel);
    await expect(paths.check(path, 'target_path')).rejects.toMatchObject({ kind: 'invalid', message: expect.stringMatching(/symbolic link/) });
    await expect(paths.makeDirs(path, 'target_path')).rejects.toMatchObject({ kind: 'invalid' });
    await expect(paths.makeFile(join(path, 'dev'), 'target_path')).rejects.toMatchObject({ kind: 'invalid' });
    expect(existsSync(join(decoy, 'x'))).toBe(false);
    expect(existsSync(join(decoy, 'volumes'))).toBe(false);
  });

  it('accepts missing components, makes directories and a file without following links, and refuses a link as the file', async () => {
    const { kubelet, decoy, paths } = rig();
    const target = join(kubelet, 'pods', 'p1', 'volumes', 'v', 'mount');
    expect(await paths.check(target, 'target_path')).toBe(target);
    await paths.makeDirs(target, 'target_path');
    expect(lstatSync(target).isDirectory()).toBe(true);
    const device = join(kubelet, 'plugins', 'publish', 'v', 'p1');
    expect(await paths.makeFile(device, 'target_path')).toBe(true);
    expect(await paths.makeFile(device, 'target_path')).toBe(false);
    const planted = join(kubelet, 'plugins', 'publish', 'v', 'p2');
    symlinkSync(join(decoy, 'passwd'), planted);
    await expect(paths.makeFile(planted, 'target_path')).rejects.toMatchObject({ kind: 'invalid' });
    expect(existsSync(join(decoy, 'passwd'))).toBe(false);
  });

  it('refuses paths outside the base and a file where a directory is needed', async () => {
    const { root, kubelet, paths } = rig();
    await expect(paths.check(join(root, 'etc', 'x'), 'target_path')).rejects.toMatchObject({ kind: 'invalid' });
    await expect(paths.check(kubelet, 'target_path')).rejects.toMatchObject({ kind: 'invalid' });
    writeFileSync(join(kubelet, 'pods', 'file'), '');
    await expect(paths.makeDirs(join(kubelet, 'pods', 'file', 'x'), 'target_path')).rejects.toMatchObject({
      kind: 'invalid',
      message: expect.stringMatching(/not a directory/),
    });
  });

  it('follows a link that is the kubelet directory itself (the admin set it so)', async () => {
    const { root, kubelet } = rig();
    const alias = join(root, 'alias');
    symlinkSync(kubelet, alias);
    const paths = new SafePaths(`${alias}/`);
    await paths.makeDirs(join(alias, 'pods', 'p2', 'mount'), 'target_path');
    expect(existsSync(join(kubelet, 'pods', 'p2', 'mount'))).toBe(true);
  });
});

describe('mount flags', () => {
  it.each([['bind'], ['remount'], ['rbind'], ['move'], ['X-mount.mkdir'], ['loop'], ['user'], ['data='], ['offset=0']])('refuses %s', (flag) => {
    expect(() => checkMountFlags(['noatime', flag])).toThrow(/mount_flags #2 are not allowed/);
  });

  it.each([
    [['noatime', 'nodev', 'nosuid', 'noexec', 'discard', 'data=ordered', 'commit=30', 'context=system_u:object_r:container_file_t:s0', 'rw', 'ro']],
  ])('accepts %j', (flags) => {
    expect(() => checkMountFlags(flags)).not.toThrow();
  });

  it('refuses rw on a read-only mount and names only its position', () => {
    expect(() => checkReadOnlyFlags(['noatime', 'rw'], true, 'the stage')).toThrow(
      /the stage is read-only, but mount_flags #2 ask for a writable mount/,
    );
    expect(() => checkReadOnlyFlags(['rw'], false, 'the stage')).not.toThrow();
  });
});

describe('overlapping paths', () => {
  it.each([
    ['/k/a', '/k/a', true],
    ['/k/a/b', '/k/a', true],
    ['/k/a', '/k/a/b', true],
    ['/k/ab', '/k/a', false],
    ['/k/a', '/k/b', false],
  ] as const)('%s and %s overlap: %s', (a, b, expected) => {
    expect(overlaps(a, b)).toBe(expected);
  });
});

describe('kubelet paths', () => {
  it.each([
    ['a path inside', '/k/pods/p1/mount', { clean: '/k/pods/p1/mount' }],
    ['a trailing slash', '/k/pods/p1/', { clean: '/k/pods/p1' }],
    ['a relative path', 'some/path', { clean: 'some/path', outside: 'volume_path some/path must be an absolute path' }],
    [
      'a path elsewhere',
      '/path/does/not/exist',
      { clean: '/path/does/not/exist', outside: 'volume_path /path/does/not/exist is outside the kubelet directory /k' },
    ],
    ['the kubelet directory itself', '/k', { clean: '/k', outside: 'volume_path /k is outside the kubelet directory /k' }],
    ['a sibling with the same prefix', '/kk/x', { clean: '/kk/x', outside: 'volume_path /kk/x is outside the kubelet directory /k' }],
  ])('says where %s lies', (_what, path, expected) => {
    expect(kubeletPath(path, 'volume_path', '/k/')).toEqual(expected);
  });

  it.each([
    ['an empty path', '', /is required/],
    ['a NUL byte', '/k/a\0b', /NUL/],
    ['a traversal', '/k/pods/../../etc', /must not contain \.\./],
    ['a relative traversal', '../etc', /must not contain \.\./],
  ])('refuses %s as malformed (INVALID_ARGUMENT) wherever it points', (_what, path, message) => {
    expect(() => kubeletPath(path, 'volume_path', '/k')).toThrow(
      expect.objectContaining({ kind: 'invalid', message: expect.stringMatching(message) }),
    );
  });

  it('refuses a path outside with INVALID_ARGUMENT where the call would act on it', () => {
    expect(() => checkKubeletPath('/etc/x', 'staging_target_path', '/k')).toThrow(expect.objectContaining({ kind: 'invalid' }));
    expect(checkKubeletPath('/k/a', 'staging_target_path', '/k')).toBe('/k/a');
  });
});
