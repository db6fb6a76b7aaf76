/** Node-side helpers: kubelet-like paths and checks that nothing was left behind. */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { StageState } from '../../src/node/state.js';
import { describeHolder, holders, sweepHolders, type Holder } from './holders.js';
import { rootOnlyReason } from './root.js';
import { makeScratch, type Scratch } from './scratch.js';
import { startDriver, type Driver } from './server.js';
import { ifMade } from './teardown.js';

export function kubeletPaths(kubeletDir: string, volumeId: string, pod = 'pod-1') {
  return {
    staging: join(kubeletDir, 'plugins/kubernetes.io/csi/filedriver.dev', volumeId, 'globalmount'),
    target: join(kubeletDir, 'pods', pod, 'volumes/kubernetes.io~csi', volumeId, 'mount'),
    device: join(kubeletDir, 'plugins/kubernetes.io/csi/volumeDevices/publish', volumeId, pod),
  };
}

/**
 * Mounts, loop devices and qemu processes anywhere on the machine whose paths
 * mention `fragment`. Give it a path this test made (a kubelet dir): a volume
 * id alone also matches other runs on the machine. For one volume of one
 * driver, volumeLeftovers is exact.
 */
export function leftovers(fragment: string): string[] {
  return holders((text) => text.includes(fragment))
    .filter((h) => !isDataPlane(h))
    .map(describeHolder);
}

/**
 * The node's data plane (one qemu-storage-daemon for all its qcow2 exports)
 * outlives the volumes it served by design; what a volume left in it shows as
 * its export's FUSE mount. It must be gone once its driver stopped (releaseRig).
 */
export const isDataPlane = (h: Holder): boolean => h.kind === 'process' && h.args.includes('/dp/qmp.sock');

/** Where one driver under test keeps a node's volumes: its kubelet dir, and the shares their images are on. */
export interface NodeScope {
  kubelet: string;
  shares: readonly string[];
  driverName?: string;
}

/**
 * What holds a volume this driver staged: mounts under its kubelet dir that
 * name the id (staging, targets), the export's state dir (hashed, see
 * StageState.exportDir), and the volume's image on one of its shares (what a
 * raw loop device reads and a qemu export serves). Only this driver's paths:
 * other runs on the machine may stage volumes with the same ids.
 */
export function volumeMatcher(scope: NodeScope, id: string): (text: string) => boolean {
  const exportDir = new StageState(join(scope.kubelet, 'plugins', scope.driverName ?? 'filedriver.dev')).exportDir(id);
  const images = scope.shares.map((s) => `${join(s, 'filedriver/volumes', id)}/`);
  return (text) =>
    (text.includes(`${scope.kubelet}/`) && text.includes(`/${id}/`)) || text.includes(`${exportDir}/`) || images.some((i) => text.includes(i));
}

/** The pid of the data plane (the node's one qemu-storage-daemon) of a driver under test, if it runs. */
export function planePid(scope: Pick<NodeScope, 'kubelet' | 'driverName'>): number | undefined {
  const dir = new StageState(join(scope.kubelet, 'plugins', scope.driverName ?? 'filedriver.dev')).planeDir;
  try {
    return Number.parseInt(readFileSync(join(dir, 'qsd.pid'), 'utf8'), 10);
  } catch {
    return undefined;
  }
}

/** What still holds `id` (see volumeMatcher), one line each: empty when the volume is fully released. */
export function volumeLeftovers(scope: NodeScope, id: string): string[] {
  return holders(volumeMatcher(scope, id))
    .filter((h) => !isDataPlane(h))
    .map(describeHolder);
}

export interface NodeCleanup {
  /** Call with each path a test stages a volume at (before the call: a failing stage may leave half). */
  staged(id: string, stagingPath: string): void;
  /** Call with each target a test publishes a volume at. */
  published(id: string, targetPath: string): void;
}

/**
 * For a describe block of node tests: after each test, whether it passed or
 * not, unpublishes and unstages through the driver what the test staged and
 * published, then checks that nothing of that test's volumes is left on the
 * machine. Whatever is left is freed by force and fails that test — only that
 * test: the next one starts on a clean machine, and the scratch share can be
 * unmounted at the end.
 */
export function useNodeCleanup(rig: () => NodeScope & { driver: Driver }): NodeCleanup {
  const targets = new Map<string, string>();
  const stagings = new Map<string, string>();
  afterEach(async () => {
    const { driver, ...scope } = rig();
    const problems: string[] = [];
    const attempt = async (what: string, call: Promise<unknown>) => {
      await call.catch((e: unknown) => problems.push(`${what}: ${e instanceof Error ? e.message : String(e)}`));
    };
    for (const [target, id] of targets)
      await attempt(`unpublish ${id} at ${target}`, driver.client.node('NodeUnpublishVolume', { volume_id: id, target_path: target }));
    for (const [staging, id] of stagings)
      await attempt(`unstage ${id} at ${staging}`, driver.client.node('NodeUnstageVolume', { volume_id: id, staging_target_path: staging }));
    for (const id of new Set(stagings.values())) {
      const left = sweepHolders(volumeMatcher(scope, id));
      if (left.length > 0) problems.push(`volume ${id} was left held (now freed by force):\n  ${left.join('\n  ')}`);
    }
    targets.clear();
    stagings.clear();
    if (problems.length > 0) throw new Error(`after the test:\n${problems.join('\n')}`);
  });
  return {
    staged: (id, stagingPath) => void stagings.set(stagingPath, id),
    published: (id, targetPath) => void targets.set(targetPath, id),
  };
}

export interface NodeRig {
  share: Scratch;
  kubelet: string;
  driver: Driver;
  /** This rig's kubelet dir and share, with its driver (for useNodeCleanup and volumeLeftovers). */
  scope(): NodeScope & { driver: Driver };
}

/**
 * For a describe block: a driver serving one xfs scratch share (over-subscription 10) with a
 * kubelet dir of its own, made before the block's tests and removed after them. Read its
 * fields inside tests and hooks, not at collection time.
 */
export function useNodeRig(shareMiB: number): NodeRig {
  const rig = {} as NodeRig;
  rig.scope = () => ({ driver: rig.driver, kubelet: rig.kubelet, shares: [rig.share.path] });
  beforeAll(async () => {
    rootOnlyReason();
    rig.share = makeScratch('xfs', shareMiB);
    rig.kubelet = mkdtempSync(join(tmpdir(), 'fdtest-kubelet-'));
    rig.driver = await startDriver({ mounts: { s: rig.share.path }, args: ['--kubelet-dir', rig.kubelet, '--over-subscription', '10'] });
  });
  afterAll(async () => {
    await ifMade(rig.driver)?.stop();
    releaseRig(rig.kubelet, rig.share);
  });
  return rig;
}

/**
 * Removes a node rig's share and kubelet dir. Per-test cleanup should have
 * freed everything; whatever still holds the kubelet dir is freed first (else
 * neither could be removed), and fails the block.
 */
export function releaseRig(kubelet: string | undefined, share: Scratch | undefined): void {
  const left = kubelet === undefined ? [] : sweepHolders((text) => text.includes(`${kubelet}/`));
  share?.cleanup();
  if (kubelet !== undefined) rmSync(kubelet, { recursive: true, force: true });
  if (left.length > 0) throw new Error(`left held after the last test (now freed by force):\n  ${left.join('\n  ')}`);
}
