/**
 * Volume use cases of the Controller service: create, delete, expand, get,
 * validate. Each checks the mounts' state first and acts so that a repeat is a
 * no-op (CSI idempotency).
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { checkCapabilities, unsupportedReason, type Capability } from '../domain/capabilities.js';
import { alreadyExists, invalid, isDriverError, notFound, outOfRange, precondition } from '../domain/errors.js';
import { checkId, idFromName } from '../domain/ids.js';
import { isThin, parseParameters, type VolumeParameters } from '../domain/parameters.js';
import type { Segment } from '../domain/placement.js';
import { fitsRange, MiB, roundUp, sizeFor, type CapacityRange } from '../domain/sizes.js';
import { topologyKey } from '../domain/topology.js';
import type { QemuImg } from '../system/qemu-img.js';
import type { SnapshotStore } from '../storage/snapshot-store.js';
import type { ImageBuilder } from './images.js';
import type { Settler } from './settle.js';
import type { ContentSource, Sources } from './sources.js';
import type { RelocateTarget } from './relocate.js';
import { imageHeaderProblem } from '../storage/image-header.js';
import { Layout } from '../storage/layout.js';
import type { Ledger } from '../storage/ledger.js';
import type { Mounts } from '../storage/mounts.js';
import { SCHEMA, type VolumeRecord } from '../storage/records.js';
import type { FoundVolume, VolumeStore } from '../storage/volume-store.js';
import { noSpace } from './no-space.js';
import type { Placer } from './placer.js';

export interface ControllerSettings {
  driverName: string;
  defaultFormat: VolumeParameters['format'];
  defaultSizeBytes: bigint;
  overSubscription: number;
}

export interface CreateVolumeInput {
  name: string;
  capacity: CapacityRange;
  capabilities: Capability[];
  parameters: Record<string, string>;
  requisite: Segment[];
  preferred: Segment[];
  contentSource?: ContentSource | undefined;
  /** VolumeAttributesClass parameters (ControllerModifyVolume's): they win over the class's. */
  mutable?: RelocateTarget | undefined;
}

export interface VolumeView {
  id: string;
  mount: string;
  sizeBytes: bigint;
  record: VolumeRecord;
}

export type Condition = { abnormal: false; message: string } | { abnormal: true; message: string };

const K8S_PREFIX = 'csi.storage.k8s.io/';

/** Parameters that define the volume (the provisioner's metadata keys do not). */
function defining(params: Record<string, string>): string {
  const keys = Object.keys(params)
    .filter((k) => !k.startsWith(K8S_PREFIX))
    .sort();
  return JSON.stringify(keys.map((k) => [k, params[k]]));
}

export function view(found: Pick<FoundVolume, 'mount' | 'record'>): VolumeView {
  return { id: found.record.id, mount: found.mount, sizeBytes: BigInt(found.record.sizeBytes), record: found.record };
}

export class VolumeService {
  constructor(
    private readonly settings: ControllerSettings,
    private readonly mounts: Mounts,
    private readonly store: VolumeStore,
    private readonly ledger: Ledger,
    private readonly placer: Placer,
    private readonly qemuImg: QemuImg,
    private readonly snapshots: SnapshotStore,
    private readonly sources: Sources,
    private readonly images: ImageBuilder,
    private readonly settler: Settler,
  ) {}

  keyOf = (mount: string): string => topologyKey(this.settings.driverName, mount);

  async create(input: CreateVolumeInput, log: Logger): Promise<VolumeView> {
    if (input.name === '') throw invalid('name is required');
    const params = withMutable(parseParameters(input.parameters, this.settings.defaultFormat), input.mutable);
    for (const m of params.mounts ?? []) {
      if (!this.mounts.has(m)) throw invalid(`StorageClass mounts names ${m}, which is not configured (known: ${this.mounts.names().join(', ')})`);
    }
    checkCapabilities(input.capabilities, params.format);
    const id = idFromName(input.name);

    // Only the class's mounts can hold this volume: another mount being down does not block it.
    const existing = await this.store.find(id, params.mounts);
    if (existing !== undefined) return this.reuse(existing, input);

    const base = await this.sources.resolve(input.contentSource, params, id, log);
    let created = false;
    let record: VolumeRecord;
    let mount: string;
    let linked = false;
    let release = (): void => undefined;
    let placedMount: string | undefined;
    try {
      const sizeBytes = sizeFor(input.capacity, this.settings.defaultSizeBytes, base?.sizeBytes);
      linked = base !== undefined && params.cloneMode === 'linked';
      const only = linked ? base?.mount : undefined;
      if (only !== undefined && params.mounts !== undefined && !params.mounts.includes(only)) {
        throw invalid(`a linked clone must live on its source's mount ${only}, which the StorageClass does not allow; use cloneMode full`);
      }
      const claim = { id, name: input.name, sizeBytes, thin: isThin(params), allowed: only === undefined ? params.mounts : [only] };
      const placed = await this.placer.claim({ ...claim, requisite: input.requisite, preferred: input.preferred });
      mount = placed.mount;
      placedMount = mount;
      release = placed.release;
      const layout = await this.mounts.requireUsable(mount);
      record = {
        schema: SCHEMA,
        id,
        name: input.name,
        format: params.format,
        sizeBytes: sizeBytes.toString(),
        createdAt: new Date().toISOString(),
        parameters: input.parameters,
        contentSource: input.contentSource ?? null,
        backing: linked && base !== undefined ? base.snapshotId : null,
        pvc: params.pvcName === undefined ? null : { name: params.pvcName, namespace: params.pvcNamespace ?? '' },
        publications: [],
      };
      // A dependent is recorded before it exists: a crash leaves at worst a stale ref, never an orphan.
      if (linked && base !== undefined) await this.snapshots.addRef(base.layout, base.snapshotId, id);
      created = await this.store.create(layout, record, (dir) =>
        this.images.build(join(dir, Layout.imageName(params.format)), params, sizeBytes, base, layout),
      );
      if (created) this.ledger.note(mount, record);
    } catch (e) {
      // The half-built image is gone (buildWhole), so free space is to be read again.
      if (placedMount !== undefined) this.mounts.invalidate(placedMount);
      throw noSpace(e, `volume ${input.name}`);
    } finally {
      release();
      // Release the ref taken in advance, and a base made for this request that nothing uses.
      if (base !== undefined && ((linked && !created) || (base.internal && !(linked && created)))) {
        await this.snapshots.release(base.layout, base.snapshotId, id);
      }
    }
    if (!created) {
      const raced = await this.store.find(id, params.mounts);
      if (raced === undefined) throw precondition(`volume ${id} appeared and vanished while being created; retry`);
      return this.reuse(raced, input);
    }
    log.info({ volumeId: id, mount, format: params.format, sizeBytes: record.sizeBytes, source: input.contentSource, linked }, 'volume created');
    return view({ mount, record });
  }

  /** A repeated CreateVolume: the same volume when compatible, ALREADY_EXISTS otherwise. */
  private reuse(found: FoundVolume, input: CreateVolumeInput): VolumeView {
    const r = found.record;
    const why: string[] = [];
    if (r.name !== input.name) why.push(`its id ${r.id} belongs to request name ${r.name}`);
    if (defining(r.parameters) !== defining(input.parameters)) why.push('the StorageClass parameters differ');
    if (JSON.stringify(r.contentSource) !== JSON.stringify(input.contentSource ?? null)) why.push('its content source differs');
    if (!fitsRange(BigInt(r.sizeBytes), input.capacity)) why.push(`its size ${r.sizeBytes} is outside the requested range`);
    for (const cap of input.capabilities) {
      const reason = unsupportedReason(cap, r.format);
      if (reason !== undefined) why.push(reason);
    }
    const key = this.keyOf(found.mount);
    if (input.requisite.length > 0 && !input.requisite.some((seg) => seg[key] === 'true'))
      why.push(`its mount ${found.mount} is outside the requisite topology`);
    if (input.mutable?.mount !== undefined && input.mutable.mount !== found.mount)
      why.push(`it lives on mount ${found.mount}, not ${input.mutable.mount}`);
    if (input.mutable?.format !== undefined && input.mutable.format !== r.format) why.push(`its format is ${r.format}, not ${input.mutable.format}`);
    if (why.length > 0) {
      throw alreadyExists(`volume ${input.name} already exists on mount ${found.mount} and is incompatible: ${why.join('; ')}`);
    }
    return view(found);
  }

  async delete(id: string, log: Logger): Promise<void> {
    checkId(id, 'volume_id');
    const found = await this.store.find(id);
    if (found === undefined) return;
    const nodes = found.record.publications.map((p) => p.node);
    if (nodes.length > 0) {
      throw precondition(`volume ${id} is still published to node(s) ${nodes.join(', ')}; unpublish it first`);
    }
    await this.mounts.requireUsable(found.mount);
    const settled = await this.settler.settle(found, log, 'be deleted');
    const layout = await this.mounts.requireUsable(settled.mount);
    const record = (await this.store.read(layout, id)) ?? settled.record;
    try {
      await this.store.remove(layout, id);
      this.ledger.forget(settled.mount, id);
      if (record.backing !== null) await this.snapshots.release(layout, record.backing, id);
    } finally {
      // Its bytes (and a base it released) are free now: the next placement must not see the cached figure.
      this.mounts.invalidate(settled.mount);
    }
    log.info({ volumeId: id, mount: settled.mount }, 'volume deleted');
  }

  async require(id: string): Promise<FoundVolume> {
    checkId(id, 'volume_id');
    const found = await this.store.find(id);
    if (found === undefined) throw notFound(`volume ${id} does not exist`);
    return found;
  }

  /** Grows the image (never shrinks); the node grows what sits on it. */
  async expand(id: string, range: CapacityRange, log: Logger): Promise<VolumeView> {
    if (range.requiredBytes === 0n && range.limitBytes === 0n) throw invalid('capacity_range is required');
    let found = await this.require(id);
    const current = BigInt(found.record.sizeBytes);
    const wanted = roundUp(range.requiredBytes, MiB);
    if (range.limitBytes > 0n && wanted > range.limitBytes) {
      throw outOfRange(`volume ${id}: ${range.requiredBytes} bytes rounded to ${wanted} exceeds limit_bytes ${range.limitBytes}`);
    }
    if (range.limitBytes > 0n && current > range.limitBytes) {
      throw outOfRange(`volume ${id} is already ${current} bytes, above limit_bytes ${range.limitBytes}; volumes never shrink`);
    }
    if (wanted <= current) return view(found);
    await this.mounts.requireUsable(found.mount);
    // Growing the image before its layer switch would grow the snapshot instead.
    found = await this.settler.settle(found, log, 'grow');
    const layout = await this.mounts.requireUsable(found.mount);
    const params = parseParameters(found.record.parameters, found.record.format);
    const release = await this.placer.grow(found.mount, id, wanted - current, isThin(params));
    const record = { ...found.record, sizeBytes: wanted.toString() };
    try {
      try {
        await this.qemuImg.resize(layout.imagePath(id, found.record.format), found.record.format, wanted, params.preallocation);
      } catch (e) {
        // A qcow2 image attached on a node is held by its qemu export: the node
        // grows it online (NodeExpandVolume) to the size recorded here.
        if (!(found.record.format === 'qcow2' && isDriverError(e) && e.kind === 'precondition')) throw noSpace(e, `volume ${id}`);
        log.info({ volumeId: id }, 'image in use; the node will grow it online');
      }
      await this.store.update(layout, record);
      this.ledger.note(found.mount, record);
    } finally {
      release();
    }
    log.info({ volumeId: id, from: current.toString(), to: wanted.toString() }, 'volume expanded');
    return view({ mount: found.mount, record });
  }

  /**
   * The volume's health. `quick` (ListVolumes, a page of many) reads only the
   * image's header; `full` (ControllerGetVolume, one volume) also runs
   * `qemu-img check`, which costs a process and reads the metadata.
   */
  async condition(found: FoundVolume, depth: 'quick' | 'full'): Promise<Condition> {
    if (!found.writable) return { abnormal: true, message: `mount ${found.mount} is not usable: ${found.reason ?? 'unknown'}` };
    const image = found.layout.imagePath(found.record.id, found.record.format);
    let problem: string | undefined;
    try {
      problem = await imageHeaderProblem(image, found.record.format);
    } catch {
      return { abnormal: true, message: `image ${image} is missing` };
    }
    if (problem !== undefined) return { abnormal: true, message: `image ${image}: ${problem}` };
    if (depth === 'full') {
      const check = await this.qemuImg.check(image, found.record.format);
      if (!check.ok) return { abnormal: true, message: `qemu-img check failed: ${check.problem}` };
    }
    return { abnormal: false, message: 'volume is healthy' };
  }

  /**
   * Why this volume does not match what the CO asks to confirm, or undefined
   * when it does: every capability, and the parameters and context, if given.
   */
  async validate(id: string, caps: Capability[], parameters: Record<string, string>, context: Record<string, string>): Promise<string | undefined> {
    if (caps.length === 0) throw invalid('volume_capabilities is required');
    const found = await this.require(id);
    const r = found.record;
    const reasons: string[] = caps.map((c) => unsupportedReason(c, r.format)).filter((x) => x !== undefined);
    if (Object.keys(parameters).length > 0 && defining(parameters) !== defining(r.parameters)) {
      reasons.push('the parameters differ from those the volume was created with');
    }
    const actual: Record<string, string> = { format: r.format, mount: found.mount };
    const wrong = Object.entries(context).filter(([k, v]) => actual[k] !== v);
    if (wrong.length > 0) reasons.push(`volume_context ${wrong.map(([k]) => k).join(', ')} does not match the volume`);
    return reasons.length === 0 ? undefined : reasons.join('; ');
  }
}

function withMutable(params: VolumeParameters, mutable: RelocateTarget | undefined): VolumeParameters {
  if (mutable === undefined) return params;
  const toRaw = mutable.format === 'raw' && params.format !== 'raw';
  return {
    ...params,
    ...(mutable.format === undefined ? {} : { format: mutable.format }),
    ...(mutable.mount === undefined ? {} : { mounts: [mutable.mount] }),
    // What only qcow2 has falls away for raw: no backing files, clusters or metadata preallocation.
    ...(toRaw
      ? {
          cloneMode: 'full' as const,
          clusterSize: undefined,
          preallocation: params.preallocation === 'metadata' ? ('off' as const) : params.preallocation,
        }
      : {}),
  };
}
