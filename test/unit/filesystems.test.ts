/** blkid/wipefs parsing and the probe's decisions, against captured util-linux 2.38 output. */
import { closeSync, mkdirSync, mkdtempSync, openSync, realpathSync, rmSync, symlinkSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CommandFailed, type RunResult, type Runner } from '../../src/system/command.js';
import { canonicalPath, classifyBlkid, makeFilesystems, parseBlkidExport, parseWipefs } from '../../src/system/filesystems.js';
import { parseMountInfo } from '../../src/system/mountinfo.js';

// `blkid -p -o export /dev/loop1` after mkfs.ext4, mkfs.xfs and mkswap.
const EXT4 = `DEVNAME=/dev/loop1
UUID=58407b6d-29af-455e-a794-8bfa1da088e9
VERSION=1.0
BLOCK_SIZE=1024
TYPE=ext4
USAGE=filesystem`;
const XFS = `DEVNAME=/dev/loop1
UUID=7b7b2452-5311-40ea-85eb-89e13c98b432
BLOCK_SIZE=512
TYPE=xfs
USAGE=filesystem`;
const SWAP = `DEVNAME=/dev/loop1
UUID=8d7454ef-eefd-40ab-b704-b9649870855f
VERSION=1
TYPE=swap
USAGE=other`;

// `wipefs --no-act --json` on a blank device, and on one with an xfs and an ext4 superblock.
const WIPEFS_BLANK = `{
   "signatures": [

   ]
}`;
const WIPEFS_TWO = `{
   "signatures": [
      {
         "device": "loop1",
         "offset": "0x0",
         "type": "xfs",
         "uuid": "62ae0d2e-b9ec-4e7b-9418-f4d534de2097",
         "label": null
      },{
         "device": "loop1",
         "offset": "0x438",
         "type": "ext4",
         "uuid": "c815b008-9eaf-4df6-a2e0-6ebe5707314b",
         "label": null
      }
   ]
}`;
const AMBIVALENT = 'blkid: /dev/loop1: ambivalent result (probably more filesystems on the device, use wipefs(8) to see more details)';

describe('blkid -o export', () => {
  it.each([
    ['ext4', EXT4, { kind: 'filesystem', fsType: 'ext4' }],
    ['xfs', XFS, { kind: 'filesystem', fsType: 'xfs' }],
    ['swap', SWAP, { kind: 'other', description: 'swap (other)' }],
    ['a partition table', 'DEVNAME=/dev/sdb\nPTUUID=1b2c\nPTTYPE=gpt', { kind: 'other', description: 'partition table gpt' }],
    ['LUKS', 'TYPE=crypto_LUKS\nUSAGE=crypto', { kind: 'other', description: 'crypto_LUKS (crypto)' }],
    ['a type without usage', 'TYPE=weird', { kind: 'other', description: 'weird (unknown usage)' }],
  ])('classifies %s', (_name, text, expected) => {
    expect(classifyBlkid(parseBlkidExport(text))).toEqual(expected);
  });
});

describe('wipefs --json', () => {
  it('lists signatures with offsets', () => {
    expect(parseWipefs(WIPEFS_TWO)).toEqual([
      { type: 'xfs', offset: '0x0' },
      { type: 'ext4', offset: '0x438' },
    ]);
  });
  it.each([WIPEFS_BLANK, ''])('reads no signatures as none', (text) => {
    expect(parseWipefs(text)).toEqual([]);
  });
});

function scripted(answer: (argv: readonly string[]) => RunResult | Error): { run: Runner; calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    run: async (argv) => {
      calls.push([...argv]);
      const a = answer(argv);
      if (a instanceof Error) throw a;
      return a;
    },
  };
}

describe('probe', () => {
  // The probe reads the device itself before it answers 'blank': regular files stand in here.
  const dir = mkdtempSync(join(tmpdir(), 'fdtest-unit-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  let n = 0;
  /** A sparse file of `mib` MiB with `bytes` written at `offset`. */
  function fakeDevice(mib = 4, offset = 0, bytes = Buffer.alloc(0)): string {
    const file = join(dir, `dev${String(n++)}`);
    writeFileSync(file, '');
    truncateSync(file, mib * 1024 * 1024);
    const fd = openSync(file, 'r+');
    writeSync(fd, bytes, 0, bytes.length, offset);
    closeSync(fd);
    return file;
  }
  const nothingFound = () =>
    scripted((argv) => (argv[0] === 'blkid' ? new CommandFailed(argv, 2, '') : { stdout: argv[0] === 'wipefs' ? WIPEFS_BLANK : '', stderr: '' }));

  it('calls a device blank only when blkid (exit 2) and wipefs find nothing and it reads zeros', async () => {
    expect(await makeFilesystems(nothingFound().run).probe(fakeDevice())).toEqual({ kind: 'blank' });
  });

  it.each([
    ['the first MiB', 4096],
    ['the last MiB', 4 * 1024 * 1024 - 1],
  ])('calls data in %s without a known signature other, and never formats it', async (_where, offset) => {
    const { run, calls } = nothingFound();
    const device = fakeDevice(4, offset, Buffer.from([0x5a]));
    const other = { kind: 'other', description: 'data without a signature blkid knows' };
    expect(await makeFilesystems(run).formatIfBlank(device, 'ext4')).toEqual(other);
    expect(calls.some((c) => c[0]?.startsWith('mkfs'))).toBe(false);
  });

  it('looks only at the edges: data in the middle of a large device is not read', async () => {
    expect(await makeFilesystems(nothingFound().run).probe(fakeDevice(8, 3 * 1024 * 1024, Buffer.from([1])))).toEqual({ kind: 'blank' });
  });

  it.each([
    ['cannot be opened', () => join(dir, 'missing')],
    ['fails to read (EISDIR)', () => dir],
  ])('refuses, naming the device, when blkid finds nothing but the device %s', async (_why, path) => {
    const { run, calls } = nothingFound();
    const device = path();
    await expect(makeFilesystems(run).formatIfBlank(device, 'xfs')).rejects.toMatchObject({
      kind: 'internal',
      message: expect.stringContaining(device),
    });
    expect(calls.some((c) => c[0]?.startsWith('mkfs'))).toBe(false);
  });

  it('treats a signature only wipefs sees as other', async () => {
    const { run } = scripted((argv) => (argv[0] === 'blkid' ? new CommandFailed(argv, 2, '') : { stdout: WIPEFS_TWO, stderr: '' }));
    expect(await makeFilesystems(run).probe('/dev/loop1')).toEqual({ kind: 'other', description: 'xfs at 0x0, ext4 at 0x438' });
  });

  it('names every signature of an ambivalent device (exit 8)', async () => {
    const { run } = scripted((argv) => (argv[0] === 'blkid' ? new CommandFailed(argv, 8, AMBIVALENT) : { stdout: WIPEFS_TWO, stderr: '' }));
    expect(await makeFilesystems(run).probe('/dev/loop1')).toEqual({
      kind: 'other',
      description: 'several signatures: xfs at 0x0, ext4 at 0x438',
    });
  });

  it('passes other blkid failures on', async () => {
    const { run } = scripted((argv) => new CommandFailed(argv, 4, 'blkid: error: /dev/nope: No such file or directory'));
    await expect(makeFilesystems(run).probe('/dev/nope')).rejects.toBeInstanceOf(CommandFailed);
  });

  it('formats only after a blank probe, with the fast flags', async () => {
    const { run, calls } = nothingFound();
    const device = fakeDevice();
    expect(await makeFilesystems(run).formatIfBlank(device, 'ext4')).toEqual({ kind: 'blank' });
    expect(calls.at(-1)).toEqual([
      'mkfs.ext4',
      '-F',
      '-q',
      '-m',
      '0',
      '-b',
      '4096',
      '-E',
      'lazy_itable_init=1,lazy_journal_init=1,nodiscard',
      device,
    ]);
  });

  it('leaves a device with a filesystem alone and says what it holds', async () => {
    const { run, calls } = scripted(() => ({ stdout: XFS, stderr: '' }));
    expect(await makeFilesystems(run).formatIfBlank('/dev/loop1', 'ext4')).toEqual({ kind: 'filesystem', fsType: 'xfs' });
    expect(calls.some((c) => c[0]?.startsWith('mkfs'))).toBe(false);
  });
});

describe('mount', () => {
  const table = (options: string) => async () => parseMountInfo(`40 27 7:1 / /dst ${options} - ext4 /dev/loop1 rw\n`);

  it('bind-mounts, then remounts the bind with the flags and ro last, and checks ro in mountinfo', async () => {
    const { run, calls } = scripted(() => ({ stdout: '', stderr: '' }));
    await makeFilesystems(run, table('ro,nosuid,relatime')).mount('/src', '/dst', { bind: true, readOnly: true, flags: ['nosuid', 'rw'] });
    expect(calls).toEqual([
      ['mount', '--bind', '/src', '/dst'],
      ['mount', '-o', 'remount,bind,nosuid,rw,ro', '/dst'],
    ]);
  });

  it.each([[true], [false]])('unmounts and fails a read-only mount (bind: %s) that mountinfo shows writable', async (bind) => {
    const { run, calls } = scripted(() => ({ stdout: '', stderr: '' }));
    const fs = makeFilesystems(run, table('rw,relatime'));
    await expect(fs.mount('/dev/loop1', '/dst', { bind, fsType: 'ext4', readOnly: true, flags: [] })).rejects.toMatchObject({
      kind: 'internal',
      message: expect.stringMatching(/read-only but mountinfo shows options rw,relatime/),
    });
    expect(calls.at(-1)).toEqual(['umount', '/dst']);
  });

  it('undoes the bind when the read-only remount fails, and passes the failure on', async () => {
    const remountFailed = (argv: readonly string[]) => new CommandFailed(argv, 32, 'mount: /dst: mount point not mounted or bad option.');
    const { run, calls } = scripted((argv) => (argv.includes('-o') ? remountFailed(argv) : { stdout: '', stderr: '' }));
    await expect(makeFilesystems(run).mount('/src', '/dst', { bind: true, readOnly: true, flags: [] })).rejects.toBeInstanceOf(CommandFailed);
    expect(calls).toEqual([
      ['mount', '--bind', '/src', '/dst'],
      ['mount', '-o', 'remount,bind,ro', '/dst'],
      ['umount', '/dst'],
    ]);
  });

  it('says so when the bind cannot be undone either', async () => {
    const { run } = scripted((argv) =>
      argv[0] === 'mount' && argv[1] === '--bind' ? { stdout: '', stderr: '' } : new CommandFailed(argv, 32, 'busy'),
    );
    await expect(makeFilesystems(run).mount('/src', '/dst', { bind: true, readOnly: true, flags: [] })).rejects.toMatchObject({
      kind: 'internal',
      message: expect.stringMatching(/mounting \/dst went wrong .*and so did unmounting it/),
    });
  });

  it('refuses flags that would smuggle in more options', async () => {
    const { run } = scripted(() => ({ stdout: '', stderr: '' }));
    await expect(makeFilesystems(run).mount('/dev/loop1', '/dst', { flags: ['ro,suid'], readOnly: false })).rejects.toMatchObject({
      kind: 'invalid',
    });
  });
});

describe('canonicalPath', () => {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'fdtest-unit-')));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'real', 'share'), { recursive: true });
  symlinkSync(join(dir, 'real'), join(dir, 'link'));
  writeFileSync(join(dir, 'real', 'share', 'disk.raw'), '');

  it.each([
    ['an existing file through the symlink', 'link/share/disk.raw', 'real/share/disk.raw'],
    ['a missing file whose parent exists', 'link/share/gone.raw', 'real/share/gone.raw'],
    ['a file whose parent and grandparent are gone too', 'link/share/vol/x/disk.raw', 'real/share/vol/x/disk.raw'],
    ['a relative step inside the missing part', 'link/share/vol/../disk2.raw', 'real/share/disk2.raw'],
  ])('resolves %s', async (_what, path, want) => {
    expect(await canonicalPath(join(dir, path))).toBe(join(dir, want));
  });
});
