/**
 * The driver under test, reached only through its unix socket with a plain
 * gRPC client. With CSI_ENDPOINT set (unix:///path/csi.sock) the suite drives
 * that running driver; otherwise it starts `filedriver serve` itself on
 * scratch mounts it makes, and removes everything afterwards.
 *
 * Against a running driver:
 *   CSI_ENDPOINT=unix:///run/csi/csi.sock   the driver's socket (required)
 *   CSI_KUBELET_DIR=/var/lib/kubelet        its --kubelet-dir (node paths must lie inside)
 *   CSI_LOG_FILE=/var/log/filedriver.log    its log, for the secrets rules (skipped without)
 *   CSI_PARAMETERS='{"mounts":"a"}'         StorageClass parameters every test volume gets
 *   CSI_NODE_IDS=node-1,node-2              registered nodes to publish to (default: the driver's own)
 * Node rules need the driver to run on this host and to serve both services.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { connect, type Call, type CsiClient } from '../helpers/client.js';
import { sweepHolders } from '../helpers/holders.js';
import { volumeMatcher } from '../helpers/node.js';
import { registerNodes } from '../helpers/nodes.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { startDriver, type Driver } from '../helpers/server.js';
import { ifMade } from '../helpers/teardown.js';
import { until } from '../helpers/wait.js';

export const MiB = 1024n * 1024n;
export const GiB = 1024n * MiB;
/** Small enough to be quick, big enough for ext4. */
export const SIZE = 32n * MiB;

export const external = process.env['CSI_ENDPOINT'];

export type Mode = 'all' | 'controller' | 'node';

export interface Failure {
  code: status | 'OK';
  /** The code's name: 'OK', 'INVALID_ARGUMENT', … */
  name: string;
  details: string;
}

/** What a test needs to know about the driver under test; filled in by `open()`. */
export class Env {
  client!: CsiClient;
  endpoint = '';
  kubeletDir = '';
  logFile: string | undefined;
  driverName = '';
  nodeId = '';
  /** Topology segment NodeGetInfo reports (one key per mount the node is configured with, for filedriver). */
  nodeSegments: Record<string, string> = {};
  controllerCaps = new Set<string>();
  nodeCaps = new Set<string>();
  pluginCaps = new Set<string>();
  servesController = false;
  servesNode = false;
  /**
   * Node ids the controller knows (ControllerPublishVolume answers NOT_FOUND for others): for a
   * self-started driver, ids the harness registers on its mounts as node plugins would; against a
   * running one, CSI_NODE_IDS or the driver's own node id.
   */
  knownNodes: string[] = [];
  /** StorageClass parameters every test volume gets (CSI_PARAMETERS). */
  baseParameters: Record<string, string> = {};
  /** Unique per run, so a shared driver never sees two runs' names collide. */
  readonly run = `cf${randomBytes(3).toString('hex')}`;

  private driver: Driver | undefined;
  private scratches: Scratch[] = [];
  private ownDirs: string[] = [];
  private readonly extra: Driver[] = [];
  private readonly volumes = new Set<string>();
  private readonly snapshots = new Set<string>();
  private readonly staged = new Map<string, string>();
  private readonly targets = new Map<string, string>();
  private readonly controllerPublished = new Set<string>();

  identity: Call = (m, r) => this.client.identity(m, r);
  controller: Call = (m, r) => this.client.controller(m, r);
  node: Call = (m, r) => this.client.node(m, r);

  /** A name unique to this run. */
  name(what: string): string {
    return `${this.run}-${what}`;
  }

  /** Mounts of the self-started driver (name → path); empty against a running driver. */
  mounts: Record<string, string> = {};

  async open(): Promise<void> {
    if (external !== undefined) {
      this.endpoint = external;
      this.client = connect(external);
      this.kubeletDir = process.env['CSI_KUBELET_DIR'] ?? '/var/lib/kubelet';
      this.logFile = process.env['CSI_LOG_FILE'];
      this.baseParameters = JSON.parse(process.env['CSI_PARAMETERS'] ?? '{}') as Record<string, string>;
    } else {
      // Two mounts, so topology and capacity have more than one segment to tell apart.
      const fast = makeScratch('xfs', 2048);
      this.scratches.push(fast);
      const small = makeScratch('tmpfs', 256);
      this.scratches.push(small);
      this.mounts = { fast: fast.path, small: small.path };
      this.kubeletDir = mkdtempSync(join(tmpdir(), 'fdtest-kubelet-'));
      this.ownDirs.push(this.kubeletDir);
      // No health cache: capacity answers must reflect the statfs of this moment.
      this.driver = await startDriver({ mounts: this.mounts, args: this.ownArgs('all') });
      this.endpoint = this.driver.endpoint;
      this.client = this.driver.client;
      this.logFile = this.driver.logFile;
      this.knownNodes = ['node-1', 'node-2'];
      await registerNodes(Object.values(this.mounts), this.knownNodes);
    }
    await this.learn();
    if (external !== undefined) this.knownNodes = (process.env['CSI_NODE_IDS'] ?? this.nodeId).split(',').filter((n) => n !== '');
  }

  /** `count` registered node ids to publish to, or the test is skipped. */
  nodes(count: number, skip: Skip): string[] {
    if (this.knownNodes.length < count) skip(`needs ${count} registered node id(s): set CSI_NODE_IDS`);
    return this.knownNodes.slice(0, count);
  }

  private ownArgs(mode: Mode): string[] {
    // A small default size and room to over-commit thin volumes: the suite makes many.
    const sizing = ['--default-size', '16Mi', '--over-subscription', '4'];
    return ['--kubelet-dir', this.kubeletDir, '--health-cache-seconds', '0', '--mode', mode, ...sizing];
  }

  /** Another driver process in `mode` on the same mounts (self-started runs only). */
  async startMode(mode: Mode): Promise<CsiClient> {
    if (this.driver === undefined) throw new Error('only a self-started driver can be started in another mode');
    const d = await startDriver({ mounts: this.mounts, args: this.ownArgs(mode) });
    this.extra.push(d);
    return d.client;
  }

  private async learn(): Promise<void> {
    const info = await this.identity('GetPluginInfo');
    this.driverName = info.name;
    const plugin = await this.identity('GetPluginCapabilities');
    for (const c of plugin.capabilities) this.pluginCaps.add(c.service?.type ?? c.volume_expansion?.type ?? 'UNKNOWN');
    const ctrl = await failure(this.controller('ControllerGetCapabilities'));
    this.servesController = ctrl.code === 'OK';
    if (this.servesController) {
      for (const c of (await this.controller('ControllerGetCapabilities')).capabilities) this.controllerCaps.add(c.rpc.type);
    }
    const nodeCaps = await failure(this.node('NodeGetCapabilities'));
    this.servesNode = nodeCaps.code === 'OK';
    if (this.servesNode) {
      for (const c of (await this.node('NodeGetCapabilities')).capabilities) this.nodeCaps.add(c.rpc.type);
      const ni = await this.node('NodeGetInfo');
      this.nodeId = ni.node_id;
      this.nodeSegments = ni.accessible_topology?.segments ?? {};
    }
  }

  /** Mount names of this driver's topology keys (`<driver>/mount-<name>`), from NodeGetInfo. */
  topologyMounts(): string[] {
    const prefix = `${this.driverName}/mount-`;
    return Object.keys(this.nodeSegments)
      .filter((k) => k.startsWith(prefix))
      .map((k) => k.slice(prefix.length))
      .sort();
  }

  key(mount: string): string {
    return `${this.driverName}/mount-${mount}`;
  }

  // ---- requests ----

  createRequest(name: string, extra: Record<string, unknown> = {}) {
    const { parameters, ...rest } = extra as { parameters?: Record<string, string> };
    return {
      name,
      capacity_range: { required_bytes: String(SIZE) },
      volume_capabilities: [mountCap()],
      parameters: { ...this.baseParameters, ...parameters },
      ...rest,
    };
  }

  /** CreateVolume, remembered for cleanup. */
  async createVolume(name: string, extra: Record<string, unknown> = {}): Promise<{ volume_id: string; capacity_bytes: string; [k: string]: any }> {
    const res = await this.controller('CreateVolume', this.createRequest(name, extra));
    this.volumes.add(res.volume.volume_id);
    return res.volume;
  }

  /** Remember ids a test creates by other means (clones, repeats). */
  trackVolume(id: string): void {
    this.volumes.add(id);
  }

  trackSnapshot(id: string): void {
    this.snapshots.add(id);
  }

  trackControllerPublish(volumeId: string, nodeId: string): void {
    this.controllerPublished.add(`${volumeId}\0${nodeId}`);
  }

  /** Kubelet-like paths for a volume, inside the driver's kubelet directory. */
  paths(volumeId: string, pod = 'pod-1') {
    const base = join(this.kubeletDir, 'plugins/kubernetes.io/csi', this.driverName, volumeId);
    return {
      staging: join(base, 'globalmount'),
      otherStaging: join(base, 'globalmount-2'),
      target: join(this.kubeletDir, 'pods', `${this.run}-${pod}`, 'volumes/kubernetes.io~csi', volumeId, 'mount'),
      device: join(this.kubeletDir, 'plugins/kubernetes.io/csi/volumeDevices/publish', volumeId, `${this.run}-${pod}`),
    };
  }

  stage(volumeId: string, cap: object, extra: Record<string, unknown> = {}) {
    const staging = (extra['staging_target_path'] as string | undefined) ?? this.paths(volumeId).staging;
    this.staged.set(`${volumeId}\0${staging}`, staging);
    return this.node('NodeStageVolume', { volume_id: volumeId, staging_target_path: staging, volume_capability: cap, ...extra });
  }

  unstage(volumeId: string, staging = this.paths(volumeId).staging) {
    return this.node('NodeUnstageVolume', { volume_id: volumeId, staging_target_path: staging });
  }

  publish(volumeId: string, cap: object, target: string, extra: Record<string, unknown> = {}) {
    this.targets.set(`${volumeId}\0${target}`, target);
    return this.node('NodePublishVolume', {
      volume_id: volumeId,
      staging_target_path: this.paths(volumeId).staging,
      target_path: target,
      volume_capability: cap,
      readonly: false,
      ...extra,
    });
  }

  unpublish(volumeId: string, target: string) {
    return this.node('NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
  }

  // ---- the driver's log ----

  /**
   * The log as written so far. A marker call (a failing RPC naming `marker`)
   * is made first and waited for, so every earlier line has reached the file.
   */
  async logText(): Promise<string | undefined> {
    const file = this.logFile;
    if (file === undefined) return undefined;
    const marker = this.name(`log-marker-${randomBytes(3).toString('hex')}`);
    await failure(this.identity('Probe'));
    await failure(
      this.servesController
        ? this.controller('ControllerGetVolume', { volume_id: marker })
        : this.node('NodeGetVolumeStats', { volume_id: marker, volume_path: '/' }),
    );
    let text = '';
    await until(`the driver's log ${file} shows the marker call`, () => (text = readFileSync(file, 'utf8')).includes(marker));
    return text;
  }

  // ---- cleanup ----

  /**
   * Undoes everything made so far, in the order kubelet and the sidecars would.
   * Run after each test: every volume left behind makes listings slower.
   */
  async sweep(): Promise<void> {
    const problems: string[] = [];
    const attempt = async (what: string, p: Promise<unknown>) => {
      const f = await failure(p);
      if (f.code !== 'OK' && f.code !== status.NOT_FOUND && f.code !== status.UNIMPLEMENTED) problems.push(`${what}: ${f.details}`);
    };
    if (ifMade(this.client) !== undefined) {
      for (const [key, target] of this.targets) await attempt(`unpublish ${target}`, this.unpublish(key.split('\0')[0] ?? '', target));
      for (const [key, staging] of this.staged) await attempt(`unstage ${staging}`, this.unstage(key.split('\0')[0] ?? '', staging));
      for (const key of this.controllerPublished) {
        const [volume_id, node_id] = key.split('\0');
        await attempt(`controller unpublish ${key}`, this.controller('ControllerUnpublishVolume', { volume_id, node_id }));
      }
      // Clones first: a linked clone's base goes with its last dependent.
      for (const id of [...this.volumes].reverse()) await attempt(`delete volume ${id}`, this.controller('DeleteVolume', { volume_id: id }));
      for (const id of this.snapshots) await attempt(`delete snapshot ${id}`, this.controller('DeleteSnapshot', { snapshot_id: id }));
    }
    if (this.driver !== undefined) {
      // Per test, for what it staged: whatever the driver failed to release is freed by force (and
      // reported), so that one failing test does not leave the next one a machine with its leftovers.
      for (const id of new Set([...this.staged.keys()].map((k) => k.split('\0')[0] ?? ''))) {
        const left = sweepHolders(volumeMatcher({ kubelet: this.kubeletDir, shares: Object.values(this.mounts), driverName: this.driverName }, id));
        if (left.length > 0) problems.push(`volume ${id} was left held (now freed by force):\n  ${left.join('\n  ')}`);
      }
    }
    for (const set of [this.targets, this.staged, this.controllerPublished, this.volumes, this.snapshots]) set.clear();
    if (problems.length > 0) throw new Error(`cleanup failed:\n${problems.join('\n')}`);
  }

  async close(): Promise<void> {
    try {
      await this.sweep();
    } finally {
      await this.stop();
    }
  }

  private async stop(): Promise<void> {
    for (const d of this.extra) await d.stop();
    if (this.driver !== undefined) await this.driver.stop();
    else ifMade(this.client)?.close();
    // A self-started driver's kubelet dir is ours: nothing may still hold it when it goes.
    const held = this.driver === undefined ? [] : sweepHolders((text) => text.includes(`${this.kubeletDir}/`));
    for (const s of this.scratches.reverse()) s.cleanup();
    for (const d of this.ownDirs) rmSync(d, { recursive: true, force: true });
    if (external !== undefined) {
      // Only what this run named: the kubelet directory belongs to the node.
      for (const dir of ['pods', join('plugins/kubernetes.io/csi', this.driverName), 'plugins/kubernetes.io/csi/volumeDevices/publish']) {
        const parent = join(this.kubeletDir, dir);
        for (const entry of existsSync(parent) ? readdirSync(parent) : []) {
          if (entry.startsWith(`${this.run}-`)) rmSync(join(parent, entry), { recursive: true, force: true });
        }
      }
    }
    if (held.length > 0) throw new Error(`left held after the last test (now freed by force):\n  ${held.join('\n  ')}`);
  }
}

type Skip = (note?: string) => never;

/** Skips the test unless the Controller service is served with all of `caps` advertised. */
export function need(env: Env, skip: Skip, ...caps: string[]): void {
  if (!env.servesController) skip('no Controller service');
  for (const c of caps) if (!env.controllerCaps.has(c)) skip(`${c} not advertised`);
}

export function mountCap(mode = 'SINGLE_NODE_WRITER', fsType = 'ext4', flags: string[] = []) {
  return { mount: { fs_type: fsType, mount_flags: flags }, access_mode: { mode } };
}

export function blockCap(mode = 'SINGLE_NODE_WRITER') {
  return { block: {}, access_mode: { mode } };
}

/** The status a call ended with, and its message. */
export async function failure(p: Promise<unknown>): Promise<Failure> {
  try {
    await p;
    return { code: 'OK', name: 'OK', details: '' };
  } catch (e) {
    const err = e as ServiceError;
    return { code: err.code, name: err.code in status ? status[err.code] : String(err.code), details: err.details };
  }
}

/** The name of the status a call ended with, for readable expectations. */
export async function codeName(p: Promise<unknown>): Promise<string> {
  return (await failure(p)).name;
}

/**
 * What a self-started driver holds on its mounts: every entry of the
 * volumes/, snapshots/ and tmp/ directories of its tree (README: everything
 * it writes is under PATH/filedriver/). Empty for a running driver.
 */
export function driverTrees(env: Env): string[] {
  const found: string[] = [];
  for (const path of Object.values(env.mounts)) {
    for (const dir of ['volumes', 'snapshots', 'tmp']) {
      const full = join(path, 'filedriver', dir);
      for (const entry of existsSync(full) ? readdirSync(full) : []) found.push(join(full, entry));
    }
  }
  return found;
}
