/**
 * `npm run demo`: the driver's main job on an embedded default. Makes a scratch
 * loop-mounted xfs share, serves CSI on a local socket and walks a volume
 * through what the sidecars and kubelet would ask, printing each step.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { buildApp } from '../src/app.js';
import { buildConfig } from '../src/config.js';
import { connect, type Call } from './client.js';
import { startServer } from '../src/csi/server.js';
import { makeRunner } from '../src/system/command.js';
import { makeScratchShare } from './scratch.js';
import { nodeSteps } from './node-steps.js';

const say = (text: string): boolean => process.stdout.write(`${text}\n`);

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo mounts a scratch filesystem: run it as root');
  const log = pino({ level: process.env['FILEDRIVER_LOG_LEVEL'] ?? 'warn' });
  const run = makeRunner(log);
  const workDir = await mkdtemp(join(tmpdir(), 'filedriver-demo-run-'));
  say('== filedriver demo: a scratch 2 GiB xfs share, loop-mounted as mount "scratch"');
  const share = await makeScratchShare(run, 2048);
  const socket = join(workDir, 'csi.sock');
  const config = buildConfig({ endpoint: `unix://${socket}`, mounts: [`scratch=${share.path}`], nodeId: 'demo-node', kubeletDir: workDir });
  const app = buildApp(config, log);
  await app.prepare();
  const server = await startServer(socket, app.services, log);
  const client = connect(socket);
  // As the sidecars do: ABORTED (the volume busy, e.g. with a background merge) is asked again.
  const retrying =
    (call: Call): Call =>
    async (method, request) => {
      for (let i = 0; ; i++) {
        try {
          return await call(method, request);
        } catch (e) {
          if ((e as { code?: number }).code !== 10 || i >= 50) throw e;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    };
  const { identity } = client;
  const controller = retrying(client.controller);
  const node = retrying(client.node);
  try {
    const info = await identity('GetPluginInfo', {});
    say(`serving ${info['name']} ${info['vendor_version']} on ${socket}`);
    say(`Probe: ready=${String((await identity('Probe', {}))['ready']?.value)}`);
    const cap = await controller('GetCapacity', { parameters: { format: 'qcow2' } });
    say(`GetCapacity (qcow2): ${cap['available_capacity']} bytes free`);

    const created = await controller('CreateVolume', {
      name: 'pvc-demo',
      capacity_range: { required_bytes: String(256 * 1024 * 1024) },
      volume_capabilities: [{ mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
      parameters: { format: 'qcow2' },
    });
    const volume = created['volume'];
    say(`CreateVolume pvc-demo: id=${volume.volume_id} size=${volume.capacity_bytes} context=${JSON.stringify(volume.volume_context)}`);
    say(`  topology: ${JSON.stringify(volume.accessible_topology[0].segments)}`);
    say(`  image: ${join(share.path, 'filedriver/volumes', volume.volume_id, 'disk.qcow2')}`);
    const again = await controller('CreateVolume', {
      name: 'pvc-demo',
      capacity_range: { required_bytes: String(256 * 1024 * 1024) },
      volume_capabilities: [{ mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
      parameters: { format: 'qcow2' },
    });
    say(`CreateVolume again (a retry): same volume ${again['volume'].volume_id}`);

    await nodeSteps({ controller, node, identity, say, workDir }, volume);

    const grown = await controller('ControllerExpandVolume', {
      volume_id: volume.volume_id,
      capacity_range: { required_bytes: String(512 * 1024 * 1024) },
    });
    say(`ControllerExpandVolume to 512 MiB: capacity=${grown['capacity_bytes']} node_expansion_required=${String(grown['node_expansion_required'])}`);
    const got = await controller('ControllerGetVolume', { volume_id: volume.volume_id });
    say(`ControllerGetVolume: condition=${JSON.stringify(got['status'].volume_condition)}`);
    const list = await controller('ListVolumes', { max_entries: 10 });
    say(`ListVolumes: ${list['entries'].map((e: any) => e.volume.volume_id).join(', ')}`);
    const after = await controller('GetCapacity', { parameters: { format: 'qcow2' } });
    say(`GetCapacity (qcow2, thin, counts committed sizes): ${after['available_capacity']} bytes`);
    await controller('DeleteVolume', { volume_id: volume.volume_id });
    say('DeleteVolume: done');
    await controller('DeleteVolume', { volume_id: volume.volume_id });
    say('DeleteVolume again (a retry): still success');
  } finally {
    client.close();
    await server.shutdown(2_000);
    await app.close();
    await share.remove();
    await rm(workDir, { recursive: true, force: true });
    say('== cleaned up: server stopped, share unmounted, scratch files removed');
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
