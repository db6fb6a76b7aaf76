/** The node part of the demo: what kubelet asks to give a pod the volume, and to take it back. */
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Call } from './client.js';

export interface DemoContext {
  controller: Call;
  node: Call;
  identity: Call;
  say: (text: string) => void;
  /** Stands in for the kubelet directory. */
  workDir: string;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex').slice(0, 16);

export async function nodeSteps(ctx: DemoContext, volume: { volume_id: string }): Promise<void> {
  const id = volume.volume_id;
  const cap = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
  const staging = join(ctx.workDir, 'plugins/kubernetes.io/csi/filedriver.dev', id, 'globalmount');
  const target = join(ctx.workDir, 'pods/demo-pod/volumes/kubernetes.io~csi', id, 'mount');
  const info = await ctx.node('NodeGetInfo', {});
  ctx.say(`NodeGetInfo: node=${info['node_id']} topology=${JSON.stringify(info['accessible_topology'].segments)}`);
  const pub = await ctx.controller('ControllerPublishVolume', { volume_id: id, node_id: info['node_id'], volume_capability: cap });
  ctx.say(`ControllerPublishVolume to ${info['node_id']}: publish_context=${JSON.stringify(pub['publish_context'])}`);
  const stage = { volume_id: id, staging_target_path: staging, volume_capability: cap, publish_context: pub['publish_context'] };
  const publish = { volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap };

  await ctx.node('NodeStageVolume', stage);
  ctx.say(`NodeStageVolume: qcow2 exported by qemu-storage-daemon, loop device attached, ext4 created, mounted at ${staging}`);
  await ctx.node('NodePublishVolume', publish);
  ctx.say(`NodePublishVolume: bind-mounted at ${target}`);
  const data = randomBytes(1 << 20);
  await writeFile(join(target, 'hello.bin'), data);
  ctx.say(`  the "pod" wrote 1 MiB, sha256 ${sha(data)}`);
  const stats = await ctx.node('NodeGetVolumeStats', { volume_id: id, volume_path: target });
  const bytes = stats['usage'].find((u: { unit: string }) => u.unit === 'BYTES');
  ctx.say(`NodeGetVolumeStats: ${bytes.used} of ${bytes.total} bytes used, condition ${JSON.stringify(stats['volume_condition'])}`);
  await ctx.node('NodeUnpublishVolume', { volume_id: id, target_path: target });
  await ctx.node('NodeUnstageVolume', { volume_id: id, staging_target_path: staging });
  ctx.say('NodeUnpublishVolume + NodeUnstageVolume: unmounted, loop detached, export stopped');

  await ctx.node('NodeStageVolume', stage);
  await ctx.node('NodePublishVolume', publish);
  const back = await readFile(join(target, 'hello.bin'));
  ctx.say(`staged and published again: read back sha256 ${sha(back)} (${back.equals(data) ? 'same bytes' : 'DIFFERENT'})`);

  // A backup tool's snapshot of the volume while the pod uses it: the share has no reflink, so the
  // image becomes the snapshot and the node's qemu moves the pod's writes onto a new layer.
  const started = Date.now();
  let snap = (await ctx.controller('CreateSnapshot', { name: 'snap-demo', source_volume_id: id }))['snapshot'];
  for (let i = 0; i < 20 && snap.ready_to_use !== true; i++) {
    await new Promise((r) => setTimeout(r, 500));
    snap = (await ctx.controller('CreateSnapshot', { name: 'snap-demo', source_volume_id: id }))['snapshot'];
  }
  ctx.say(
    `CreateSnapshot while published: ${snap.snapshot_id} ready_to_use=${String(snap.ready_to_use)} after ${Date.now() - started} ms (a qcow2 layer, switched online by the node)`,
  );
  await writeFile(join(target, 'after.bin'), randomBytes(1 << 16));
  ctx.say('  the "pod" goes on writing, now into the new layer');
  await ctx.node('NodeUnpublishVolume', { volume_id: id, target_path: target });
  await ctx.node('NodeUnstageVolume', { volume_id: id, staging_target_path: staging });
  await ctx.controller('ControllerUnpublishVolume', { volume_id: id, node_id: info['node_id'] });
  ctx.say('ControllerUnpublishVolume: the node is released');
  await ctx.controller('DeleteSnapshot', { snapshot_id: 'snap-demo' });
  ctx.say('DeleteSnapshot: the layer is merged back into the volume in the background, its space freed');
}
