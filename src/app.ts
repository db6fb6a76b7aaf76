/**
 * Wiring: config → adapters → use cases → gRPC services. No logic of its own.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ConfigError, type AdminConfig, type Config } from './config.js';
import { Metrics } from './metrics.js';
import { capacity } from './controller/capacity.js';
import { listVolumes } from './controller/listing.js';
import { PublishService } from './controller/publish.js';
import { ImageBuilder } from './controller/images.js';
import { Layering } from './controller/layering.js';
import { LiveMover } from './controller/live-move.js';
import { Settler } from './controller/settle.js';
import { Merger } from './controller/merger.js';
import { Placer } from './controller/placer.js';
import { Relocator } from './controller/relocate.js';
import { SnapshotService } from './controller/snapshots.js';
import { Sources } from './controller/sources.js';
import { VolumeService } from './controller/volumes.js';
import { SnapshotStore } from './storage/snapshot-store.js';
import { makeFiles } from './system/files.js';
import { controllerService } from './csi/controller.js';
import { makeHandle } from './csi/handle.js';
import { identityService } from './csi/identity.js';
import { KeyedLocks } from './domain/locks.js';
import { packageRoot } from './csi/proto.js';
import type { Services } from './csi/server.js';
import { topologyKey } from './domain/topology.js';
import { Ledger } from './storage/ledger.js';
import { whenShareGone } from './storage/gone.js';
import { ShareNodeRegistry } from './storage/nodes.js';
import { linuxProbes, Mounts } from './storage/mounts.js';
import { VolumeStore } from './storage/volume-store.js';
import { cleanTemp } from './storage/whole.js';
import { makeRunner, type Runner } from './system/command.js';
import { makeQemuImg } from './system/qemu-img.js';
import { makeFilesystems } from './system/filesystems.js';
import { makeLoopDevices } from './system/loop-devices.js';
import { makeQemuExports } from './system/qemu-export.js';
import { DataPlane, pathOf } from './system/data-plane.js';
import { findQemu, type QemuInstall } from './system/qemu-tools.js';
import { nodeService } from './csi/node.js';
import { NodeHealth } from './node/health.js';
import { NodeHeartbeat } from './node/heartbeat.js';
import { Publisher } from './node/publish.js';
import { NodeLayering } from './node/layers.js';
import { Stager } from './node/stage.js';
import { StageState } from './node/state.js';
import type { NodeSystem } from './node/system.js';

export function version(): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

export interface App {
  services: Services;
  /** Prometheus figures, fed by every RPC; served only with --metrics-address. */
  metrics: Metrics;
  /** Readiness (/healthz): working tools, and for the controller a usable mount. Probe is liveness only. */
  ready: (log: Logger) => Promise<boolean>;
  /** Work to do once before serving (removing leftovers of interrupted work); starts background work. */
  prepare(): Promise<void>;
  /** Stops the background work prepare() started. */
  close(): Promise<void>;
}

/** The node plugin's state lives in its own directory under kubelet's plugins/. */
export function stateDir(config: Config): string {
  return join(config.kubeletDir, 'plugins', config.driverName);
}

/** The qemu the driver runs; a named prefix without an install is a setting to fix. */
export function qemuOf(config: Pick<Config, 'qemu'>): QemuInstall {
  try {
    return findQemu(config.qemu);
  } catch (e) {
    throw new ConfigError([(e as Error).message]);
  }
}

/** The node's data plane: one qemu-storage-daemon for every qcow2 export of the node. */
export function dataPlaneOf(config: Config, run: Runner, log: Logger): DataPlane {
  return new DataPlane(new StageState(stateDir(config)).planeDir, config.dataPlane, run, log.child({ component: 'data-plane' }));
}

function nodeParts(config: Config, log: Logger, run: Runner, store: VolumeStore, mounts: Mounts, locks: KeyedLocks) {
  const plane = dataPlaneOf(config, run, log);
  const sys: NodeSystem = {
    loops: makeLoopDevices(run),
    exports: makeQemuExports(plane, run, log.child({ component: 'qemu-export' })),
    fs: makeFilesystems(run),
  };
  const state = new StageState(stateDir(config));
  const layers = new NodeLayering(mounts, state, sys.exports, locks, log.child({ component: 'layers' }));
  return { stager: new Stager(store, state, sys, layers), publisher: new Publisher(state, sys), health: new NodeHealth(state, sys), layers, plane };
}

/**
 * The mounts, their stores and the machinery that moves volumes between them:
 * what serve's controller and the admin commands (cli/context.ts) share.
 */
export function storeParts(config: AdminConfig, log: Logger, run: Runner) {
  const qemuImg = makeQemuImg(run);
  const mounts = new Mounts(config.mounts, linuxProbes, config.healthCacheSeconds * 1000, log.child({ component: 'mounts' }));
  const store = new VolumeStore(mounts);
  const snapshotStore = new SnapshotStore(mounts);
  const ledger = new Ledger(store);
  const placer = new Placer(mounts, ledger, config.overSubscription, (m) => topologyKey(config.driverName, m));
  const layering = new Layering(store, snapshotStore, qemuImg);
  const mover = new LiveMover(mounts, store, snapshotStore, ledger, qemuImg);
  const settler = new Settler(store, layering, mover);
  const relocator = new Relocator(mounts, store, snapshotStore, ledger, placer, qemuImg, mover, settler);
  return { qemuImg, mounts, store, snapshotStore, ledger, placer, layering, mover, settler, relocator };
}

export function buildApp(config: Config, log: Logger): App {
  // Controller tools die with the controller; the node's keep running (see RunnerOptions).
  const qemu = qemuOf(config);
  const run = makeRunner(log.child({ component: 'command' }), { dieWithParent: config.mode !== 'node', qemu });
  const { qemuImg, mounts, store, snapshotStore, ledger, placer, layering, mover, settler, relocator } = storeParts(config, log, run);
  const metrics = new Metrics(mounts, config.mode !== 'node');
  // One set of locks for the RPCs and the node's background work on the same volumes.
  const locks = new KeyedLocks();
  const handle = makeHandle(log, locks, metrics.observe, (e) => whenShareGone(e, mounts));
  const controller = config.mode !== 'node';
  const node = config.mode !== 'controller';
  const files = makeFiles(run);
  const merger = new Merger(mounts, store, snapshotStore, qemuImg, locks, log.child({ component: 'merger' }));
  if (controller) snapshotStore.onLonely = (layout, id) => merger.kick(layout, id);
  merger.report = metrics.layerEvent;
  metrics.watchMerges(() => merger.waitingCount);
  layering.report = metrics.layerEvent;
  mover.report = metrics.layerEvent;
  const snapshots = new SnapshotService(mounts, store, snapshotStore, qemuImg, files, layering);
  const sources = new Sources(mounts, store, snapshotStore, snapshots, qemuImg);
  const images = new ImageBuilder(qemuImg, files, log.child({ component: 'images' }));
  const volumes = new VolumeService(config, mounts, store, ledger, placer, qemuImg, snapshotStore, sources, images, settler);
  const publishing = new PublishService(volumes, mounts, store, new ShareNodeRegistry(mounts));

  const nodeSide = nodeParts(config, log, makeRunner(log.child({ component: 'command' }), { qemu }), store, mounts, locks);
  nodeSide.layers.report = metrics.layerEvent;
  if (node)
    metrics.watchDataPlane(async () => {
      const f = await nodeSide.plane.look();
      return f === undefined ? undefined : { qemu: f.version, path: pathOf(f) };
    });
  let stopLayers = (): Promise<void> => Promise.resolve();
  let stopMerges = (): Promise<void> => Promise.resolve();

  let toolsOkAt = 0;
  const ready = async (rpcLog: Logger): Promise<boolean> => {
    if (Date.now() - toolsOkAt > 30_000) {
      try {
        await qemuImg.version();
        toolsOkAt = Date.now();
      } catch (e) {
        rpcLog.warn({ err: e }, 'qemu-img does not run');
        return false;
      }
    }
    // A node plugin is ready without a usable share: it may legitimately have none (a node
    // without that hostPath share), and stage answers UNAVAILABLE for volumes on a share that is
    // down. The controller can do nothing without one, so it is not ready; it stays live (Probe).
    if (!controller) return true;
    return (await mounts.usable()).length > 0;
  };

  const staged = async () => (await new StageState(stateDir(config)).list()).map((r) => r.volumeId);
  const heartbeat = node ? new NodeHeartbeat(mounts, config.nodeId, version(), staged, log.child({ component: 'registry' })) : undefined;

  return {
    metrics,
    ready,
    services: {
      identity: identityService(handle, { driverName: config.driverName, version: version(), controller }),
      ...(controller
        ? {
            controller: controllerService(handle, {
              ...config,
              volumes,
              publishing,
              snapshots,
              relocator,
              listVolumes: (maxEntries, startingToken) => listVolumes(maxEntries, startingToken, { mounts, store }),
              capacity: (input) => capacity(input, { ...config, mounts, ledger }),
            }),
          }
        : {}),
      ...(node ? { node: nodeService(handle, { ...config, ...nodeSide }) } : {}),
    },
    async close() {
      heartbeat?.stop();
      await Promise.all([stopLayers(), stopMerges()]);
      // A data plane this process started and that serves nothing goes with it; one serving volumes stays.
      if (node) await nodeSide.plane.stopIfIdle().catch((e: unknown) => log.warn({ err: e }, 'could not stop the idle data plane'));
    },
    async prepare() {
      // The node serves the snapshot layers of the volumes it holds (node/layers.ts).
      if (node) stopLayers = nodeSide.layers.start();
      // Deleted snapshots are merged away in the background (controller/merger.ts).
      if (controller) stopMerges = merger.start();
      for (const h of await mounts.all()) {
        if (!h.usable) {
          log.warn({ mount: h.name, path: h.path, reason: h.reason }, 'mount is not usable; nothing will be written there');
          continue;
        }
        if (!controller) continue;
        const removed = await cleanTemp(mounts.layout(h.name).tmp);
        if (removed > 0) log.info({ mount: h.name, removed }, 'removed leftovers of interrupted work');
        if (removed > 0) mounts.invalidate(h.name); // their space is free: a retried create must see it
        // Sum the volumes' sizes now, in the background, so the first CreateVolume does not wait for it.
        ledger
          .warm(h.name, mounts.layout(h.name))
          .catch((e: unknown) => log.warn({ mount: h.name, err: e }, 'could not read the sizes of the volumes on this mount'));
      }
      // Registered before the socket serves: kubelet's NodeGetInfo → ControllerPublishVolume never meets an unknown node.
      await heartbeat?.start();
      if (node) {
        // Which qemu serves qcow2 volumes here, and how: a running data plane says; else what this process would start.
        const f = await nodeSide.plane.look().catch(() => undefined);
        log.info(
          {
            qemu: qemu.manifest?.version ?? 'system',
            qemuSource: qemu.source,
            dataPlane: config.dataPlane,
            running: f !== undefined,
            path: f === undefined ? undefined : pathOf(f),
          },
          'node data path',
        );
      }
    },
  };
}
