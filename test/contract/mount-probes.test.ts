/** The MountProbes contract against the real probes on a tmpfs (root only) and the fake on a plain directory. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { linuxProbes } from '../../src/storage/mounts.js';
import { FakeMountProbes } from '../fakes/mount-probes.js';
import { isRoot } from '../helpers/root.js';
import { makeScratch } from '../helpers/scratch.js';
import { mountProbesContract } from './mount-probes.contract.js';

mountProbesContract('the fake', () => {
  const root = mkdtempSync(join(tmpdir(), 'fdtest-probe-'));
  const share = join(root, 'share');
  mkdirSync(share);
  const probes = new FakeMountProbes().share(share);
  return {
    probes,
    share,
    readOnly: () => void probes.set(share, { writable: false }),
    cleanup: () => rmSync(root, { recursive: true, force: true }),
  };
});

if (isRoot) {
  mountProbesContract('the real probes on a tmpfs', () => {
    const scratch = makeScratch('tmpfs', 16);
    return {
      probes: linuxProbes,
      share: scratch.path,
      readOnly: () => execFileSync('mount', ['-o', 'remount,ro', scratch.path]),
      cleanup: () => scratch.cleanup(),
    };
  });
}
