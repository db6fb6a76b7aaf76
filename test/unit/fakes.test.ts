/** The fakes' own bookkeeping: the action log and planted failures (their behaviour is test/contract's). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { noSpace } from '../../src/controller/no-space.js';
import { FakeFiles } from '../fakes/files.js';
import { FakeQemuImg } from '../fakes/qemu-img.js';
import { toolFailed } from '../fakes/recorder.js';

describe('fakes', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const dir = () => {
    const d = mkdtempSync(join(tmpdir(), 'fdtest-fakes-'));
    dirs.push(d);
    return d;
  };

  it('log every call with its arguments, in order', async () => {
    const img = new FakeQemuImg();
    const path = join(dir(), 'disk.qcow2');
    await img.create(path, 'qcow2', 1n << 20n);
    await img.info(path);
    expect(img.actions).toEqual([
      { op: 'create', args: [path, 'qcow2', 1n << 20n, {}] },
      { op: 'info', args: [path, undefined] },
    ]);
    img.reset();
    expect(img.ops()).toEqual([]);
  });

  it('raise a planted failure for the calls it matches, as many times as asked, before acting', async () => {
    const img = new FakeQemuImg();
    const d = dir();
    const full = toolFailed('qemu-img', 'qemu-img: error while writing: No space left on device');
    img.failOn('create', full, { times: 1, when: ([path]) => String(path).endsWith('.raw') });
    await img.create(join(d, 'a.qcow2'), 'qcow2', 1n << 20n);
    const e = await img.create(join(d, 'b.raw'), 'raw', 1n << 20n).catch((x: unknown) => x);
    expect(e).toBe(full);
    expect(noSpace(e, 'volume b')).toMatchObject({ kind: 'exhausted' });
    await img.create(join(d, 'b.raw'), 'raw', 1n << 20n);
    expect(img.ops()).toEqual(['create', 'create', 'create']);
  });

  it('model a mount without reflinks by answering false', async () => {
    const files = new FakeFiles(false);
    expect(await files.reflink('/nowhere/a', '/nowhere/b')).toBe(false);
    expect(files.actions).toEqual([{ op: 'reflink', args: ['/nowhere/a', '/nowhere/b'] }]);
  });
});
