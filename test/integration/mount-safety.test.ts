/**
 * A share that is not mounted, or mounted read-only, is never written to:
 * an unmounted NFS mountpoint is a local directory on the node's root disk.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf } from '../helpers/client.js';
import { createRequest } from '../helpers/csi.js';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { startDriver, type Driver } from '../helpers/server.js';
import { ifMade } from '../helpers/teardown.js';

describe.skipIf(!isRoot)('mount safety', () => {
  let good: Scratch;
  let bare: Scratch;
  let readOnly: Scratch;
  let driver: Driver;

  beforeAll(async () => {
    rootOnlyReason();
    good = makeScratch('tmpfs', 128);
    bare = makeScratch('dir');
    readOnly = makeScratch('tmpfs', 64);
    execFileSync('mount', ['-o', 'remount,ro', readOnly.path]);
    driver = await startDriver({ mounts: { good: good.path, bare: bare.path, ro: readOnly.path } });
  });
  afterAll(async () => {
    await ifMade(driver)?.stop();
    for (const s of [good, bare, readOnly]) ifMade(s)?.cleanup();
  });

  it('never writes into a bare directory or a read-only mount', async () => {
    const fail = (params: Record<string, string>) =>
      driver.client
        .controller('CreateVolume', createRequest('pvc-x', { parameters: params }))
        .catch((e: unknown) => e as { code: number; details: string });
    const ro = await fail({ mounts: 'ro' });
    expect(ro.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(ro.details).toMatch(/ro: unusable .*cannot write/);
    // The volume could already be on the unmounted share: no answer until it is back.
    const withBare = await fail({ mounts: 'bare,ro' });
    expect(withBare.code).toBe(status.UNAVAILABLE);
    expect(withBare.details).toMatch(/bare .*not a mount point/);
    expect((await fail({})).code).toBe(status.UNAVAILABLE);
    await driver.client.controller('CreateVolume', createRequest('pvc-good', { parameters: { mounts: 'good' } }));
    await driver.client.controller('GetCapacity', {});
    await driver.client.controller('ListVolumes', {});
    expect(readdirSync(bare.path)).toEqual([]);
    expect(readdirSync(readOnly.path)).toEqual([]);
  });

  it('excludes unusable mounts from capacity', async () => {
    const cap = await driver.client.controller('GetCapacity', { parameters: { mounts: 'bare,ro' } });
    expect(cap.available_capacity).toBe('0');
    const all = await driver.client.controller('GetCapacity', {});
    expect(BigInt(all.available_capacity)).toBeGreaterThan(0n);
  });

  it('answers UNAVAILABLE, not success, for a volume it cannot see while a mount is down', async () => {
    expect(await codeOf(driver.client.controller('DeleteVolume', { volume_id: 'pvc-somewhere' }))).toBe(status.UNAVAILABLE);
    expect(await codeOf(driver.client.controller('ControllerGetVolume', { volume_id: 'pvc-somewhere' }))).toBe(status.UNAVAILABLE);
    // A volume on a reachable mount is still served.
    const got = await driver.client.controller('ControllerGetVolume', { volume_id: 'pvc-good' });
    expect(got.volume.volume_context.mount).toBe('good');
  });

  it('is still ready while one mount is usable', async () => {
    expect((await driver.client.identity('Probe')).ready.value).toBe(true);
  });
});

describe.skipIf(!isRoot)('readiness without usable mounts', () => {
  it('stays live (Probe) when no mount is usable, and writes nothing', async () => {
    const bare = makeScratch('dir');
    const driver = await startDriver({ mounts: { bare: bare.path } });
    try {
      // Probe is liveness: a restart cannot bring a share back (readiness: /healthz, metrics.test.ts).
      expect((await driver.client.identity('Probe')).ready.value).toBe(true);
      expect(readdirSync(bare.path)).toEqual([]);
    } finally {
      await driver.stop();
      bare.cleanup();
    }
  });

  it('keeps a node plugin without a usable mount live, offering the share it is configured with', async () => {
    const bare = makeScratch('dir');
    const driver = await startDriver({ mounts: { bare: bare.path }, args: ['--mode', 'node'] });
    try {
      expect((await driver.client.identity('Probe')).ready.value).toBe(true);
      // The mountpoint exists: the node has the share, which is down (node/topology.ts).
      expect((await driver.client.node('NodeGetInfo')).accessible_topology?.segments ?? {}).toEqual({ 'filedriver.dev/mount-bare': 'true' });
      expect(readdirSync(bare.path)).toEqual([]);
    } finally {
      await driver.stop();
      bare.cleanup();
    }
  });

  it('writes nothing into a share unmounted while its health is still cached', async () => {
    const share = makeScratch('tmpfs', 256);
    const d = await startDriver({ mounts: { cached: share.path }, args: ['--health-cache-seconds', '300'] });
    try {
      await d.client.controller('CreateVolume', createRequest('pvc-before', { parameters: { mounts: 'cached' } }));
      execFileSync('umount', [share.path]);
      const err = await d.client
        .controller('CreateVolume', createRequest('pvc-after', { parameters: { mounts: 'cached' } }))
        .catch((e: unknown) => e as { code: number; details: string });
      // Found out by the fresh check behind "not found", or by the build's non-recursive mkdir.
      expect(err).toMatchObject({ code: status.UNAVAILABLE, details: expect.stringMatching(/no longer mounted|not a mount point/) });
      expect(readdirSync(share.path)).toEqual([]);
    } finally {
      await d.stop();
      // The test unmounted it already; put a mount back so cleanup() finds what it made.
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'fdtest-remount', share.path]);
      share.cleanup();
    }
  });
});
