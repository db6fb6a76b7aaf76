/** The Filesystems contract against the real tools on loop devices over a tmpfs (root only) and against the fakes on a temp directory. */
import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { makeRunner } from '../../src/system/command.js';
import { makeFilesystems } from '../../src/system/filesystems.js';
import { makeLoopDevices } from '../../src/system/loop-devices.js';
import { FakeFilesystems } from '../fakes/filesystems.js';
import { FakeLoopDevices } from '../fakes/loop-devices.js';
import { isRoot } from '../helpers/root.js';
import { makeScratch } from '../helpers/scratch.js';
import { filesystemsContract } from './filesystems.contract.js';

filesystemsContract('the fake', () => {
  const loops = new FakeLoopDevices();
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'fdtest-fs-')));
  return { fs: new FakeFilesystems(loops), loops, dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
});

if (isRoot) {
  // resize2fs's online growth needs CAP_SYS_RESOURCE, which a container's root may lack.
  const capEff = /CapEff:\s*([0-9a-f]+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0';
  const growsExt4 = ((BigInt(`0x${capEff}`) >> 24n) & 1n) === 1n;
  filesystemsContract(
    'blkid, mkfs and mount on a tmpfs',
    () => {
      const scratch = makeScratch('tmpfs', 128);
      const run = makeRunner(pino({ level: 'silent' }));
      return { fs: makeFilesystems(run), loops: makeLoopDevices(run), dir: scratch.path, cleanup: () => scratch.cleanup() };
    },
    { growsExt4 },
  );
}
