/**
 * `serve --metrics-address`: the real driver, real RPCs over the socket, then a
 * real HTTP scrape of /metrics and /healthz, checked series by series.
 */
import { mkdtempSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseListenAddress } from '../../src/config.js';
import { codeOf } from '../helpers/client.js';
import { blockCap, createRequest, MiB } from '../helpers/csi.js';
import { kubeletPaths, useNodeCleanup } from '../helpers/node.js';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { startDriver, type Driver } from '../helpers/server.js';
import { ifMade } from '../helpers/teardown.js';
import { until } from '../helpers/wait.js';

/**
 * Where a driver started with `--metrics-address 127.0.0.1:0` serves: the port
 * it was given, from its log. (A port found free beforehand may be taken by
 * another process on a busy machine before the driver binds it.)
 */
async function metricsBase(d: Driver): Promise<string> {
  let address: string | undefined;
  await until('the driver logs its metrics address', () => {
    address = /"metricsAddress":"([^"]+)"/.exec(readFileSync(d.logFile, 'utf8'))?.[1];
    return address !== undefined;
  });
  return `http://${address ?? ''}`;
}

/** The value of one series in Prometheus text format, or undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = (m[2] ?? '').split(',').filter((s) => s !== '');
    if (have.length === want.length && want.every((w) => have.includes(w))) return Number(m[3]);
  }
  return undefined;
}

describe('--metrics-address parsing', () => {
  it.each([
    ['127.0.0.1:9810', { host: '127.0.0.1', port: 9810 }],
    [':9810', { host: '', port: 9810 }],
    ['[::1]:0', { host: '::1', port: 0 }],
    ['metrics.local:80', { host: 'metrics.local', port: 80 }],
  ])('accepts %s', (text, want) => expect(parseListenAddress(text)).toEqual(want));
  it.each(['9810', '127.0.0.1', '1.2.3.4:65536', '::1:9810', 'host:port'])('refuses %s', (text) => expect(parseListenAddress(text)).toBeUndefined());
});

describe.skipIf(!isRoot)('metrics and health over HTTP', () => {
  let share: Scratch;
  let bare: Scratch;
  let kubelet: string;
  let driver: Driver;
  let base: string;

  beforeAll(async () => {
    rootOnlyReason();
    share = makeScratch('ext4', 256);
    bare = makeScratch('dir'); // not a mount point: never usable
    kubelet = mkdtempSync(join(tmpdir(), 'fdtest-kubelet-'));
    driver = await startDriver({
      mounts: { a: share.path },
      args: ['--metrics-address', '127.0.0.1:0', '--kubelet-dir', kubelet, '--health-cache-seconds', '0'],
    });
    base = await metricsBase(driver);
  });
  afterAll(async () => {
    await ifMade(driver)?.stop();
    ifMade(share)?.cleanup();
    ifMade(bare)?.cleanup();
    rmSync(kubelet, { recursive: true, force: true });
  });
  const cleanup = useNodeCleanup(() => ({ driver, kubelet, shares: [share.path] }));

  it('counts and times RPCs, attaches and detaches, and reads the mounts on scrape', async () => {
    const c = driver.client.controller;
    const cap = blockCap();
    const size = String(32n * MiB);
    await c(
      'CreateVolume',
      createRequest('pvc-raw', { parameters: { format: 'raw' }, volume_capabilities: [cap], capacity_range: { required_bytes: size } }),
    );
    await c('CreateVolume', createRequest('pvc-thin', { parameters: { format: 'qcow2' }, capacity_range: { required_bytes: size } }));
    await c('CreateSnapshot', { name: 'snap-1', source_volume_id: 'pvc-thin' });
    expect(await codeOf(c('ControllerGetVolume', { volume_id: 'pvc-elsewhere' }))).toBe(status.NOT_FOUND);

    const pub = await c('ControllerPublishVolume', { volume_id: 'pvc-raw', node_id: 'node-a', volume_capability: cap });
    const staging = kubeletPaths(kubelet, 'pvc-raw').staging;
    cleanup.staged('pvc-raw', staging);
    await driver.client.node('NodeStageVolume', {
      volume_id: 'pvc-raw',
      staging_target_path: staging,
      volume_capability: cap,
      publish_context: pub.publish_context,
    });
    await driver.client.node('NodeUnstageVolume', { volume_id: 'pvc-raw', staging_target_path: staging });
    await c('ControllerUnpublishVolume', { volume_id: 'pvc-raw', node_id: 'node-a' });

    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const fs = statfsSync(share.path, { bigint: true });

    expect(sample(text, 'filedriver_rpc_requests_total', { method: 'CreateVolume', code: 'OK' })).toBe(2);
    expect(sample(text, 'filedriver_rpc_requests_total', { method: 'ControllerGetVolume', code: 'NOT_FOUND' })).toBe(1);
    expect(sample(text, 'filedriver_rpc_requests_total', { method: 'NodeStageVolume', code: 'OK' })).toBe(1);
    expect(sample(text, 'filedriver_rpc_duration_seconds_count', { method: 'CreateVolume', code: 'OK' })).toBe(2);
    expect(sample(text, 'filedriver_rpc_duration_seconds_bucket', { method: 'CreateSnapshot', code: 'OK', le: '+Inf' })).toBe(1);
    expect(sample(text, 'filedriver_rpc_duration_seconds_sum', { method: 'CreateVolume', code: 'OK' })).toBeGreaterThan(0);
    expect(sample(text, 'filedriver_attach_total')).toBe(1);
    expect(sample(text, 'filedriver_detach_total')).toBe(1);

    expect(sample(text, 'filedriver_mount_usable', { mount: 'a' })).toBe(1);
    const free = sample(text, 'filedriver_mount_free_bytes', { mount: 'a' }) ?? -1;
    const used = sample(text, 'filedriver_mount_used_bytes', { mount: 'a' }) ?? -1;
    expect(free + used).toBe(Number(fs.blocks * fs.bsize));
    expect(Math.abs(free - Number(fs.bavail * fs.bsize))).toBeLessThan(Number(MiB));
    expect(sample(text, 'filedriver_volumes', { mount: 'a' })).toBe(2);
    expect(sample(text, 'filedriver_snapshots', { mount: 'a' })).toBe(1);
    expect(sample(text, 'filedriver_nodes', { mount: 'a' })).toBe(1); // this driver's own node, registered at start
    expect(sample(text, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
  });

  it('answers /healthz (readiness) 200 with a usable mount, and 404 elsewhere', async () => {
    expect((await driver.client.identity('Probe')).ready.value).toBe(true);
    const ok = await fetch(`${base}/healthz`);
    expect([ok.status, await ok.text()]).toEqual([200, 'ok\n']);
    expect((await fetch(`${base}/nothing`)).status).toBe(404);
  });

  it('reports an unmounted share as unusable and not ready (yet live), and stops serving on SIGTERM', async () => {
    const lonely = await startDriver({ mounts: { gone: bare.path }, args: ['--metrics-address', '127.0.0.1:0'] });
    const at = await metricsBase(lonely);
    try {
      expect((await lonely.client.identity('Probe')).ready.value).toBe(true);
      const res = await fetch(`${at}/healthz`);
      expect(res.status).toBe(503);
      expect(await res.text()).toMatch(/no usable mount/);
      const text = await (await fetch(`${at}/metrics`)).text();
      expect(sample(text, 'filedriver_mount_usable', { mount: 'gone' })).toBe(0);
      // An empty local directory says nothing about the share: no figures rather than zeros.
      expect(sample(text, 'filedriver_mount_free_bytes', { mount: 'gone' })).toBeUndefined();
      expect(sample(text, 'filedriver_volumes', { mount: 'gone' })).toBeUndefined();
      expect(sample(text, 'filedriver_nodes', { mount: 'gone' })).toBeUndefined();
    } finally {
      expect(await lonely.stop()).toBe(0);
    }
    await expect(fetch(`${at}/healthz`)).rejects.toThrow();
  });
});
