/**
 * The controller's use cases wired as app.ts wires them, on fake shares (temp
 * directories FakeMountProbes calls mounted) with FakeQemuImg and FakeFiles:
 * the stores, ledger, placer and services are the real ones. No root, no
 * qemu; a test runs in milliseconds.
 */
import { readdirSync } from 'node:fs';
import { pino } from 'pino';
import { ImageBuilder } from '../../../src/controller/images.js';
import { Layering } from '../../../src/controller/layering.js';
import { LiveMover } from '../../../src/controller/live-move.js';
import { Placer } from '../../../src/controller/placer.js';
import { Settler } from '../../../src/controller/settle.js';
import { SnapshotService } from '../../../src/controller/snapshots.js';
import { Sources } from '../../../src/controller/sources.js';
import { VolumeService, type CreateVolumeInput } from '../../../src/controller/volumes.js';
import type { Capability } from '../../../src/domain/capabilities.js';
import type { Format } from '../../../src/domain/parameters.js';
import { MiB } from '../../../src/domain/sizes.js';
import { topologyKey } from '../../../src/domain/topology.js';
import { Ledger } from '../../../src/storage/ledger.js';
import { SnapshotStore } from '../../../src/storage/snapshot-store.js';
import { VolumeStore } from '../../../src/storage/volume-store.js';
import { FakeFiles } from '../../fakes/files.js';
import { FakeQemuImg } from '../../fakes/qemu-img.js';
import { fakeShares } from '../../fakes/shares.js';

export const DRIVER = 'filedriver.test';
export const log = pino({ level: 'silent' });
export const mountCap: Capability = { access: 'mount', mode: 'SINGLE_NODE_WRITER', fsType: 'ext4', mountFlags: [], volumeMountGroup: '' };
export const keyOf = (mount: string): string => topologyKey(DRIVER, mount);

export interface WorldOptions {
  /** Share names (default fast and slow), and free bytes per share (default 100 GiB). */
  shares?: readonly string[];
  space?: Record<string, bigint>;
  /** Whether the shares can reflink (default false: the NFS filer without CLONE the driver is for). */
  reflinks?: boolean;
  overSubscription?: number;
  defaultFormat?: Format;
}

export function world(options: WorldOptions = {}) {
  const shares = fakeShares(options.shares ?? ['fast', 'slow'], options.space);
  const { mounts } = shares;
  const qemuImg = new FakeQemuImg();
  const files = new FakeFiles(options.reflinks ?? false);
  const store = new VolumeStore(mounts);
  const ledger = new Ledger(store);
  const snapshotStore = new SnapshotStore(mounts);
  const layering = new Layering(store, snapshotStore, qemuImg);
  const mover = new LiveMover(mounts, store, snapshotStore, ledger, qemuImg);
  const settler = new Settler(store, layering, mover);
  const snapshots = new SnapshotService(mounts, store, snapshotStore, qemuImg, files, layering);
  const sources = new Sources(mounts, store, snapshotStore, snapshots, qemuImg);
  const images = new ImageBuilder(qemuImg, files, log);
  const overSubscription = options.overSubscription ?? 1;
  const placer = new Placer(mounts, ledger, overSubscription, keyOf);
  const settings = { driverName: DRIVER, defaultFormat: options.defaultFormat ?? 'qcow2', defaultSizeBytes: 64n * MiB, overSubscription };
  const volumes = new VolumeService(settings, mounts, store, ledger, placer, qemuImg, snapshotStore, sources, images, settler);

  /** A CreateVolume request: 16 MiB, one mount capability, no topology, unless `over` says otherwise. */
  const request = (name: string, over: Partial<CreateVolumeInput> = {}): CreateVolumeInput => ({
    name,
    capacity: { requiredBytes: 16n * MiB, limitBytes: 0n },
    capabilities: [mountCap],
    parameters: {},
    requisite: [],
    preferred: [],
    ...over,
  });

  /** What a share's driver tree holds: volume and snapshot ids, and leftovers in tmp/. */
  const contents = (share: string) => {
    const layout = shares.layout(share);
    const list = (dir: string) => {
      try {
        return readdirSync(dir).sort();
      } catch {
        return [];
      }
    };
    return { volumes: list(layout.volumes), snapshots: list(layout.snapshots), tmp: list(layout.tmp) };
  };

  return {
    shares,
    mounts,
    qemuImg,
    files,
    store,
    ledger,
    snapshotStore,
    placer,
    mover,
    volumes,
    snapshots,
    sources,
    request,
    contents,
    cleanup: () => shares.cleanup(),
  };
}

export type World = ReturnType<typeof world>;
