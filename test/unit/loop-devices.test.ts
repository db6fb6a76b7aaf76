/** Reading loop devices from sysfs, and the attach/detach decisions, against a fake /sys/block tree. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CommandFailed, type RunResult, type Runner } from '../../src/system/command.js';
import { makeLoopDevices, parseLoopSysfs, type LoopSysfsFiles } from '../../src/system/loop-devices.js';

// Files as Linux 6.18 shows them: each value ends in one newline.
const files = (over: Partial<LoopSysfsFiles> = {}): LoopSysfsFiles => ({
  backingFile: '/tmp/fdtest-x/a.raw\n',
  ro: '0\n',
  dio: '1\n',
  autoclear: '0\n',
  ...over,
});

describe('one device from its sysfs files', () => {
  it.each([
    ['a plain file', files(), { backingFile: '/tmp/fdtest-x/a.raw', backingDeleted: false, readOnly: false, directIo: true, autoclear: false }],
    [
      "a deleted file, the kernel's suffix cut off",
      files({ backingFile: '/tmp/fdtest-x/sp ace.raw (deleted)\n', ro: '1\n', dio: '0\n' }),
      { backingFile: '/tmp/fdtest-x/sp ace.raw', backingDeleted: true, readOnly: true, directIo: false, autoclear: false },
    ],
    ['a deferred detach', files({ autoclear: '1\n', dio: '0\n' }), { backingDeleted: false, directIo: false, autoclear: true }],
    ['a path ending in a space (only the newline is cut)', files({ backingFile: '/tmp/fdtest-x/b \n' }), { backingFile: '/tmp/fdtest-x/b ' }],
  ])('reads %s', (_name, input, want) => {
    expect(parseLoopSysfs('/dev/loop3', input)).toMatchObject({ device: '/dev/loop3', ...want });
  });

  it('yields nothing for an empty backing_file (nothing attached)', () => {
    expect(parseLoopSysfs('/dev/loop3', files({ backingFile: '' }))).toBeUndefined();
  });
});

/** A Runner that answers from a script and records every argv. */
function scripted(answer: (argv: readonly string[]) => RunResult | Error = (argv) => new Error(`unexpected ${argv.join(' ')}`)): {
  run: Runner;
  calls: string[][];
} {
  const calls: string[][] = [];
  const run: Runner = async (argv) => {
    calls.push([...argv]);
    const a = answer(argv);
    if (a instanceof Error) throw a;
    return a;
  };
  return { run, calls };
}

const ok = (stdout = ''): RunResult => ({ stdout, stderr: '' });
const fail = (argv: readonly string[], stderr: string, exitCode = 1): CommandFailed => new CommandFailed(argv, exitCode, stderr);
const finds = (calls: string[][]): number => calls.filter((c) => c.includes('--find')).length;

interface FakeDevice {
  ro?: string;
  size?: string;
  loop?: Partial<Record<'backing_file' | 'dio' | 'autoclear', string>>;
}

describe('loop devices over a fake sysfs', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  function tempDir(): string {
    const dir = mkdtempSync(join(tmpdir(), 'fdtest-unit-'));
    dirs.push(dir);
    return dir;
  }

  /** A /sys/block with free loop0 and vda, and an image file to attach. */
  function setup(): { sys: string; file: string } {
    const root = tempDir();
    const sys = join(root, 'block');
    for (const name of ['loop0', 'vda']) device(sys, name, { ro: '0\n', size: '2048\n' });
    const file = join(root, 'disk.raw');
    writeFileSync(file, '');
    return { sys, file };
  }

  /** Writes a device directory the way the kernel shows it; `loop` absent = nothing attached. */
  function device(sys: string, name: string, f: FakeDevice): void {
    mkdirSync(f.loop === undefined ? join(sys, name) : join(sys, name, 'loop'), { recursive: true });
    for (const [k, v] of Object.entries({ ro: f.ro, size: f.size })) if (v !== undefined) writeFileSync(join(sys, name, k), v);
    for (const [k, v] of Object.entries(f.loop ?? {})) writeFileSync(join(sys, name, 'loop', k), v);
  }
  const attached = (file: string, dio: '0' | '1'): FakeDevice => ({
    ro: '0\n',
    size: '16384\n',
    loop: { backing_file: `${file}\n`, dio: `${dio}\n`, autoclear: '0\n' },
  });

  it('lists attached loop devices in number order without spawning anything', async () => {
    const { sys, file } = setup();
    device(sys, 'loop10', attached(file, '1'));
    device(sys, 'loop2', { ro: '1\n', loop: { backing_file: `${file} (deleted)\n`, dio: '0\n', autoclear: '1\n' } });
    device(sys, 'loop3', attached('/elsewhere.raw', '0'));
    const { run, calls } = scripted();
    const loops = makeLoopDevices(run, { sysBlock: sys });
    expect(await loops.list()).toEqual([
      { device: '/dev/loop2', backingFile: file, backingDeleted: true, readOnly: true, directIo: false, autoclear: true },
      { device: '/dev/loop3', backingFile: '/elsewhere.raw', backingDeleted: false, readOnly: false, directIo: false, autoclear: false },
      { device: '/dev/loop10', backingFile: file, backingDeleted: false, readOnly: false, directIo: true, autoclear: false },
    ]);
    expect((await loops.findByFile(file)).map((d) => d.device)).toEqual(['/dev/loop2', '/dev/loop10']);
    expect(calls).toEqual([]);
  });

  it('leaves out a device detached in the middle of being read', async () => {
    const { sys, file } = setup();
    device(sys, 'loop1', { ro: '0\n', loop: { backing_file: `${file}\n` } }); // dio and autoclear already gone
    device(sys, 'loop4', attached(file, '0'));
    const loops = makeLoopDevices(scripted().run, { sysBlock: sys });
    expect((await loops.list()).map((d) => d.device)).toEqual(['/dev/loop4']);
  });

  it('reads sizes as exact bigints from 512-byte sectors', async () => {
    const { sys } = setup();
    device(sys, 'loop1', { size: '17592186044417\n' }); // 2^44 + 1 sectors: past 2^53 bytes
    expect(await makeLoopDevices(scripted().run, { sysBlock: sys }).size('/dev/loop1')).toBe(17592186044417n * 512n);
  });

  it.each(['/dev/loop9', '/dev/vda', 'loop1'])('refuses the size of %s, which is no existing loop device', async (name) => {
    const { sys } = setup();
    await expect(makeLoopDevices(scripted().run, { sysBlock: sys }).size(name)).rejects.toThrow(name);
  });

  it('attaches with direct I/O in one spawn and describes the device from sysfs', async () => {
    const { sys, file } = setup();
    const { run, calls } = scripted(() => {
      device(sys, 'loop0', attached(file, '1'));
      return ok('/dev/loop0');
    });
    const dev = await makeLoopDevices(run, { sysBlock: sys }).attach(file, { readOnly: false, directIo: true });
    expect(dev).toMatchObject({ device: '/dev/loop0', backingFile: file, directIo: true });
    expect(calls).toEqual([['losetup', '--find', '--show', '--nooverlap', '--direct-io=on', file]]);
  });

  it('retries without direct I/O when the kernel refuses it, and says so', async () => {
    const { sys, file } = setup();
    const { run, calls } = scripted((argv) => {
      if (argv.includes('--direct-io=on')) return fail(argv, `losetup: ${file}: failed to set up loop device: Invalid argument`);
      device(sys, 'loop4', attached(file, '0'));
      return ok('/dev/loop4');
    });
    const dev = await makeLoopDevices(run, { sysBlock: sys }).attach(file, { readOnly: false, directIo: true });
    expect(dev).toMatchObject({ device: '/dev/loop4', directIo: false });
    expect(finds(calls)).toBe(2);
  });

  it('never attaches twice when an older losetup attached before failing to switch direct I/O on', async () => {
    const { sys, file } = setup();
    device(sys, 'loop1', attached(file, '0')); // an older device of the same file is not the leftover
    const { run, calls } = scripted((argv) => {
      device(sys, 'loop4', attached(file, '0'));
      return fail(argv, 'losetup: /dev/loop4: set direct io failed: Invalid argument');
    });
    const dev = await makeLoopDevices(run, { sysBlock: sys }).attach(file, { readOnly: false, directIo: true });
    expect(dev).toMatchObject({ device: '/dev/loop4', directIo: false });
    expect(finds(calls)).toBe(1);
  });

  it.each([true, false])('refuses, detaching nothing, a writable device handed back for a read-only attach (direct I/O %s)', async (directIo) => {
    const { sys, file } = setup();
    const { run, calls } = scripted(() => {
      device(sys, 'loop0', attached(file, '0')); // --nooverlap: the existing read-write device
      return ok('/dev/loop0');
    });
    await expect(makeLoopDevices(run, { sysBlock: sys }).attach(file, { readOnly: true, directIo })).rejects.toMatchObject({
      kind: 'precondition',
      message: expect.stringMatching(/already attached read-write at \/dev\/loop0/),
    });
    expect(calls.every((c) => c.includes('--read-only') && !c.includes('--detach'))).toBe(true);
  });

  it('hands back a read-only device for a read-only attach', async () => {
    const { sys, file } = setup();
    const { run } = scripted(() => {
      device(sys, 'loop0', { ...attached(file, '0'), ro: '1\n' });
      return ok('/dev/loop0');
    });
    expect(await makeLoopDevices(run, { sysBlock: sys }).attach(file, { readOnly: true, directIo: false })).toMatchObject({ readOnly: true });
  });

  it('does not retry an overlap conflict', async () => {
    const { sys, file } = setup();
    const { run, calls } = scripted((argv) => fail(argv, `losetup: ${file}: overlapping read-only loop device exists for ${file}`));
    await expect(makeLoopDevices(run, { sysBlock: sys }).attach(file, { readOnly: false, directIo: true })).rejects.toThrow(/overlapping/);
    expect(finds(calls)).toBe(1);
  });

  it('fails plainly when the device losetup printed shows nothing attached', async () => {
    const { sys, file } = setup();
    const { run } = scripted(() => ok('/dev/loop0'));
    await expect(makeLoopDevices(run, { sysBlock: sys }).attach(file, { readOnly: false, directIo: false })).rejects.toThrow(/vanished/);
  });

  it.each([['losetup: /dev/loop7: detach failed: No such device or address'], ['losetup: /dev/loop99: failed to use device: No such device']])(
    'counts a device that is already gone as detached: %s',
    async (stderr) => {
      const { sys } = setup();
      const { run } = scripted((argv) => fail(argv, stderr));
      expect(await makeLoopDevices(run, { sysBlock: sys }).detach('/dev/loop7')).toBe('detached');
    },
  );

  it.each([
    ['detached', 'the kernel freed it', (sys: string) => rmSync(join(sys, 'loop2', 'loop'), { recursive: true })],
    ['deferred', 'it is still open and only marked autoclear', (sys: string) => writeFileSync(join(sys, 'loop2', 'loop', 'autoclear'), '1\n')],
  ] as const)('reports a detach as %s when %s', async (want, _why, kernel) => {
    const { sys, file } = setup();
    device(sys, 'loop2', attached(file, '0'));
    const { run, calls } = scripted(() => {
      kernel(sys);
      return ok();
    });
    expect(await makeLoopDevices(run, { sysBlock: sys }).detach('/dev/loop2')).toBe(want);
    expect(calls).toEqual([['losetup', '--detach', '/dev/loop2']]);
  });

  it('rethrows a detach failure that is not "gone"', async () => {
    const { sys } = setup();
    const { run } = scripted((argv) => fail(argv, 'losetup: /dev/loop2: detach failed: Permission denied'));
    await expect(makeLoopDevices(run, { sysBlock: sys }).detach('/dev/loop2')).rejects.toThrow(/Permission denied/);
  });
});
