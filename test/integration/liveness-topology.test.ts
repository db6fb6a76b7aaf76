/**
 * What kubelet and the probes see while a share comes and goes, with the real
 * driver and a real mount: Probe (liveness) answers ready throughout, /healthz
 * (readiness) follows the share, and NodeGetInfo reports the shares the node is
 * configured with — kubelet asks it only at registration, so a share mounted
 * after start must already have its key, and one that goes away keeps it while
 * stage answers UNAVAILABLE (retried by kubelet) until the share is back.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { configuredMounts } from '../../src/node/topology.js';
import { codeOf } from '../helpers/client.js';
import { blockCap, createRequest, MiB } from '../helpers/csi.js';
import { kubeletPaths } from '../helpers/node.js';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { startDriver, type Driver } from '../helpers/server.js';

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

const KEY = 'filedriver.dev/mount-late';

describe('configuredMounts', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('lists the mounts whose directory exists, in config order, whatever is mounted there', async () => {
    const base = mkdtempSync(join(tmpdir(), 'fdtest-topo-'));
    dirs.push(base);
    mkdirSync(join(base, 'a'));
    mkdirSync(join(base, 'c'));
    const mounts = [
      { name: 'c', path: join(base, 'c') },
      { name: 'b', path: join(base, 'b') },
      { name: 'a', path: `${join(base, 'a')}/` },
      { name: 'd', path: join(base, 'no-parent', 'd') },
    ];
    expect(await configuredMounts(mounts)).toEqual(['c', 'a']);
    mkdirSync(join(base, 'b'));
    expect(await configuredMounts(mounts)).toEqual(['c', 'b', 'a']);
  });
});

describe.skipIf(!isRoot)('a share that appears after start and then disappears', () => {
  let driver: Driver | undefined;
  let base = '';
  let kubelet = '';
  afterEach(async () => {
    await driver?.stop();
    driver = undefined;
    const share = join(base, 'late');
    try {
      execFileSync('umount', [share], { stdio: 'ignore' });
    } catch {
      // not mounted (the test unmounted it)
    }
    rmSync(base, { recursive: true, force: true });
    rmSync(kubelet, { recursive: true, force: true });
  });

  it('keeps liveness, follows the share with readiness, topology and stage', async () => {
    rootOnlyReason();
    base = mkdtempSync(join(tmpdir(), 'fdtest-late-'));
    kubelet = mkdtempSync(join(tmpdir(), 'fdtest-kubelet-'));
    const share = join(base, 'late');
    const port = await freePort();
    driver = await startDriver({
      mounts: { late: share },
      args: ['--kubelet-dir', kubelet, '--health-cache-seconds', '0', '--metrics-address', `127.0.0.1:${port}`],
    });
    const d = driver;
    const probe = async () => (await d.client.identity('Probe')).ready.value as boolean;
    const healthz = async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).status;
    const segments = async () => (await d.client.node('NodeGetInfo')).accessible_topology?.segments ?? {};

    // Not on this node at all: no key; alive, not ready (a controller with no usable share).
    expect(await segments()).toEqual({});
    expect([await probe(), await healthz()]).toEqual([true, 503]);

    // The admin prepares the mountpoint (fstab): the node is configured for the share before
    // it is mounted, so the key registered at start-up is already right.
    mkdirSync(share);
    expect(await segments()).toEqual({ [KEY]: 'true' });
    expect([await probe(), await healthz()]).toEqual([true, 503]);

    // The share is mounted after start: usable at once, no restart.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'fdtest-late', share]);
    expect([await probe(), await healthz()]).toEqual([true, 200]);
    const cap = blockCap();
    await d.client.controller(
      'CreateVolume',
      createRequest('pvc-late', { parameters: { format: 'raw' }, volume_capabilities: [cap], capacity_range: { required_bytes: String(8n * MiB) } }),
    );
    // The node records itself on a share within a heartbeat of its appearance; until then the
    // attacher's publish answers NOT_FOUND and is retried.
    const record = join(share, 'filedriver/nodes/node-a.json');
    for (let i = 0; i < 300 && !existsSync(record); i++) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(record)).toBe(true);
    const pub = await d.client.controller('ControllerPublishVolume', { volume_id: 'pvc-late', node_id: 'node-a', volume_capability: cap });
    const { staging } = kubeletPaths(kubelet, 'pvc-late');
    const stage = () =>
      d.client.node('NodeStageVolume', {
        volume_id: 'pvc-late',
        staging_target_path: staging,
        volume_capability: cap,
        publish_context: pub.publish_context,
      });
    await stage();
    await d.client.node('NodeUnstageVolume', { volume_id: 'pvc-late', staging_target_path: staging });

    // The share goes away: still live and still offering the share (the node has it; it is
    // down), not ready, and stage is UNAVAILABLE so kubelet retries until it is back.
    execFileSync('umount', [share]);
    expect(await segments()).toEqual({ [KEY]: 'true' });
    expect([await probe(), await healthz()]).toEqual([true, 503]);
    const err = await stage().catch((e: unknown) => e as { code: number; details: string });
    expect(err).toMatchObject({ code: status.UNAVAILABLE, details: expect.stringMatching(/late/) });
    // The volume could already be on the share that is gone: no answer until it is back.
    expect(await codeOf(d.client.controller('CreateVolume', createRequest('pvc-later')))).toBe(status.UNAVAILABLE);
  });
});
