/**
 * Shares on a plain temp directory: `fast`, `slow`… as subdirectories that
 * FakeMountProbes calls mounted, and the real Mounts on them (health not
 * cached, so a test's change to a share shows at once). No root needed: what
 * the stores write is ordinary files and directories.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { MountConfig } from '../../src/config.js';
import { Layout } from '../../src/storage/layout.js';
import { Mounts } from '../../src/storage/mounts.js';
import { FakeMountProbes } from './mount-probes.js';

export interface FakeShares {
  root: string;
  configs: MountConfig[];
  probes: FakeMountProbes;
  mounts: Mounts;
  /** The directory of share `name`. */
  path(name: string): string;
  layout(name: string): Layout;
  cleanup(): void;
}

export function fakeShares(names: readonly string[], space: Record<string, bigint> = {}): FakeShares {
  const root = mkdtempSync(join(tmpdir(), 'fdtest-shares-'));
  const probes = new FakeMountProbes();
  const configs = names.map((name) => {
    const path = join(root, name);
    mkdirSync(path);
    const freeBytes = space[name];
    probes.share(path, freeBytes === undefined ? {} : { freeBytes });
    return { name, path };
  });
  const mounts = new Mounts(configs, probes, 0, pino({ level: 'silent' }));
  return {
    root,
    configs,
    probes,
    mounts,
    path: (name) => join(root, name),
    layout: (name) => new Layout(join(root, name)),
    cleanup: () => rmSync(root, { recursive: true, force: true }),
  };
}
