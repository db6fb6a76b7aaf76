/** The Files contract against `cp --reflink=always` (the machine's temp filesystem; an xfs with reflinks as root) and the fake. */
import { tmpdir } from 'node:os';
import { pino } from 'pino';
import { makeRunner, onPath } from '../../src/system/command.js';
import { makeFiles } from '../../src/system/files.js';
import { FakeFiles } from '../fakes/files.js';
import { isRoot } from '../helpers/root.js';
import { makeScratch } from '../helpers/scratch.js';
import { filesContract } from './files.contract.js';

filesContract('the fake, with reflinks', () => ({ files: new FakeFiles(true), dir: tmpdir(), reflinks: true }));
filesContract('the fake, without reflinks', () => ({ files: new FakeFiles(false), dir: tmpdir(), reflinks: false }));

const real = () => makeFiles(makeRunner(pino({ level: 'silent' })));
filesContract('cp on the temp directory', () => ({ files: real(), dir: tmpdir(), reflinks: undefined }));

if (isRoot && onPath('mkfs.xfs') !== undefined) {
  filesContract('cp on xfs with reflinks', () => {
    const scratch = makeScratch('xfs', 300);
    return { files: real(), dir: scratch.path, reflinks: true, cleanup: () => scratch.cleanup() };
  });
  filesContract('cp on xfs without reflinks', () => {
    const scratch = makeScratch('xfs-noreflink', 300);
    return { files: real(), dir: scratch.path, reflinks: false, cleanup: () => scratch.cleanup() };
  });
}
