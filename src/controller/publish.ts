/**
 * Attachment fencing: ControllerPublishVolume records the node in volume.json
 * (written atomically, under the volume's lock) and refuses a second node for
 * single-node access modes, so a single-node volume is never written from two
 * nodes. qemu's image locks are the second line of defence on the node.
 */
import type { Logger } from 'pino';
import { isMultiNode, unsupportedReason, type Capability } from '../domain/capabilities.js';
import { alreadyExists, invalid, notFound, precondition } from '../domain/errors.js';
import type { Mounts } from '../storage/mounts.js';
import type { NodeRegistry } from '../storage/nodes.js';
import type { Publication } from '../storage/records.js';
import type { VolumeStore } from '../storage/volume-store.js';
import type { VolumeService } from './volumes.js';

export interface PublishInput {
  volumeId: string;
  nodeId: string;
  capability: Capability;
  readonly: boolean;
}

/** What the node needs to stage the volume without reading the controller's view. */
export type PublishContext = Record<string, string>;

export class PublishService {
  constructor(
    private readonly volumes: VolumeService,
    private readonly mounts: Mounts,
    private readonly store: VolumeStore,
    private readonly nodes: NodeRegistry,
  ) {}

  async publish(input: PublishInput, log: Logger): Promise<PublishContext> {
    if (input.nodeId === '') throw invalid('node_id is required');
    const found = await this.volumes.require(input.volumeId);
    const { record } = found;
    const reason = unsupportedReason(input.capability, record.format);
    if (reason !== undefined) throw invalid(`volume ${record.id}: ${reason}`);
    const context: PublishContext = { format: record.format, mount: found.mount, readonly: String(input.readonly) };
    const mine = record.publications.find((p) => p.node === input.nodeId);
    if (mine !== undefined) {
      if (mine.mode !== input.capability.mode || mine.readonly !== input.readonly) {
        throw alreadyExists(
          `volume ${record.id} is already published to node ${input.nodeId} with access mode ${mine.mode}${mine.readonly ? ' read-only' : ''}`,
        );
      }
      return context;
    }
    // CSI: "Node does not exist" is NOT_FOUND. Known means registered (storage/nodes.ts), stale or not:
    // a node that is down is still one Kubernetes may attach to. Unreadable shares make this UNAVAILABLE.
    if ((await this.nodes.lookup(input.nodeId, found.mount)) === undefined) {
      throw notFound(`node ${input.nodeId} is not registered on any mount: no filedriver node plugin with that id has run`);
    }
    const others = record.publications.filter((p) => p.node !== input.nodeId);
    const shareable = (p: { mode: Publication['mode'] }) => isMultiNode(p.mode);
    if (others.length > 0 && !(shareable(input.capability) && others.every(shareable))) {
      throw precondition(
        `volume ${record.id} is published to node ${others.map((p) => p.node).join(', ')} with access mode ${others[0]?.mode ?? ''}; a single-node volume cannot be attached to ${input.nodeId} as well`,
      );
    }
    const layout = await this.mounts.requireUsable(found.mount);
    const publication: Publication = { node: input.nodeId, mode: input.capability.mode, readonly: input.readonly };
    await this.store.update(layout, { ...record, publications: [...record.publications, publication] });
    log.info({ volumeId: record.id, node: input.nodeId, mode: input.capability.mode }, 'volume published');
    return context;
  }

  /** Idempotent: an unknown volume or a node it is not published to is already unpublished. */
  async unpublish(volumeId: string, nodeId: string, log: Logger): Promise<void> {
    const found = await this.store.find(volumeId);
    if (found === undefined) return;
    const { record } = found;
    // An empty node_id means every node (CSI ControllerUnpublishVolume).
    const remaining = nodeId === '' ? [] : record.publications.filter((p) => p.node !== nodeId);
    if (remaining.length === record.publications.length) return;
    const layout = await this.mounts.requireUsable(found.mount);
    await this.store.update(layout, { ...record, publications: remaining });
    log.info({ volumeId, node: nodeId || '(all)' }, 'volume unpublished');
  }
}
