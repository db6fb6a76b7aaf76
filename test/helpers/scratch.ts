/**
 * Scratch filesystems for tests: tmpfs or a loop-mounted ext4/xfs image, each
 * under its own temp directory, removed by `cleanup()`.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sweepHolders } from './holders.js';

export interface Scratch {
  /** The mount point. */
  path: string;
  cleanup(): void;
}

export type ScratchKind = 'tmpfs' | 'ext4' | 'xfs' | 'xfs-noreflink' | 'dir';

function sh(file: string, args: string[]): string {
  return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function makeScratch(kind: ScratchKind, sizeMiB = 512): Scratch {
  const base = mkdtempSync(join(tmpdir(), 'fdtest-'));
  const path = join(base, 'mnt');
  mkdirSync(path);
  if (kind === 'dir') {
    return { path, cleanup: () => rmSync(base, { recursive: true, force: true }) };
  }
  if (kind === 'tmpfs') {
    sh('mount', ['-t', 'tmpfs', '-o', `size=${String(sizeMiB)}m`, 'fdtest', path]);
  } else {
    const image = join(base, 'fs.img');
    sh('truncate', ['-s', `${String(sizeMiB)}M`, image]);
    if (kind === 'ext4') sh('mkfs.ext4', ['-q', '-F', image]);
    else sh('mkfs.xfs', ['-q', '-f', '-m', `reflink=${kind === 'xfs' ? '1' : '0'}`, image]);
    sh('mount', ['-o', 'loop', image, path]);
  }
  return {
    path,
    cleanup: () => {
      // mount -o loop sets autoclear, so unmounting also frees the loop device.
      try {
        sh('umount', [path]);
      } catch {
        // Busy: a failed test left something on the share (a qemu export, a loop device, a mount).
        // Free it first; a lazy unmount alone would leave this loop device attached for good.
        sweepHolders((text) => text.startsWith(`${path}/`) || text.includes(` ${path}/`) || text.includes(`=${path}/`));
        try {
          sh('umount', [path]);
        } catch {
          sh('umount', ['-l', path]);
        }
      }
      rmSync(base, { recursive: true, force: true });
    },
  };
}
