/** Kubelet-like paths and the NodeStage/NodePublish calls kubelet makes for a filesystem volume. */
import { join } from 'node:path';
import type { Driver } from './driver.js';
import { mountCap } from './driver.js';
import { DRIVER_NAME } from './context.js';

export function podPaths(kubelet: string, id: string) {
  return {
    staging: join(kubelet, 'plugins/kubernetes.io/csi', DRIVER_NAME, id, 'globalmount'),
    target: join(kubelet, 'pods/pod-bench/volumes/kubernetes.io~csi', id, 'mount'),
  };
}

export async function controllerPublish(d: Driver, id: string): Promise<Record<string, string>> {
  const res = await d.client.controller('ControllerPublishVolume', { volume_id: id, node_id: 'bench-node', volume_capability: mountCap() });
  return res.publish_context as Record<string, string>;
}

export async function stageAndPublish(d: Driver, kubelet: string, id: string, context: Record<string, string>): Promise<void> {
  const p = podPaths(kubelet, id);
  await d.client.node('NodeStageVolume', { volume_id: id, staging_target_path: p.staging, volume_capability: mountCap(), publish_context: context });
  await d.client.node('NodePublishVolume', {
    volume_id: id,
    staging_target_path: p.staging,
    target_path: p.target,
    volume_capability: mountCap(),
    readonly: false,
  });
}

export async function unpublishAndUnstage(d: Driver, kubelet: string, id: string): Promise<void> {
  const p = podPaths(kubelet, id);
  await d.client.node('NodeUnpublishVolume', { volume_id: id, target_path: p.target });
  await d.client.node('NodeUnstageVolume', { volume_id: id, staging_target_path: p.staging });
}
