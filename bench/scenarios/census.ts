/**
 * Process spawns per RPC: the tools the driver runs for each call, read from
 * its debug log (one "command" line per tool run, the RPC's closing line
 * after them; calls are made one at a time so each command belongs to the
 * next closing line). The floor is the fewest tools the same work needs.
 * Counts do not drift with machine load, unlike times.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Ctx } from '../lib/context.js';
import { SERVER_ARGS } from '../lib/context.js';
import { createRequest, GiB, startDriver } from '../lib/driver.js';
import { controllerPublish, stageAndPublish, unpublishAndUnstage } from '../lib/kubelet.js';

interface LogLine {
  msg?: string;
  rpc?: string;
  durationMs?: number;
  argv?: string[];
  code?: string;
}

export async function census(ctx: Ctx): Promise<void> {
  const d = await startDriver(
    { base: ctx.base, mounts: ctx.shares, kubeletDir: ctx.kubelet, tag: 'census', args: [...SERVER_ARGS, '--log-level', 'debug'] },
    ctx.cleanup,
  );
  const marks: { label: string; from: number }[] = [];
  let calls = 0;
  const mark = async (label: string, fn: () => Promise<unknown>) => {
    marks.push({ label, from: calls });
    await fn();
  };
  const c = d.client;
  const call = async (service: 'controller' | 'node', method: string, req: object) => {
    calls++;
    return c[service](method, req);
  };
  const results: { label: string; commands: string[][]; ms: number[] }[] = [];
  try {
    // Probe (logged at trace, so unseen) ran `qemu-img --version` at start-up: a first call takes those lines.
    await call('controller', 'ControllerGetCapabilities', {});
    for (const format of ['raw', 'qcow2']) {
      const id = `bench-census-${format}`;
      await mark(`CreateVolume ${format}`, () => call('controller', 'CreateVolume', createRequest(id, 10 * GiB, { format, mounts: 'xfs' })));
      calls++;
      const context = await controllerPublish(d, id);
      await mark(`NodeStageVolume + NodePublishVolume ${format}`, async () => {
        calls += 2;
        await stageAndPublish(d, ctx.kubelet, id, context);
      });
      await mark(`NodeUnpublishVolume + NodeUnstageVolume ${format}`, async () => {
        calls += 2;
        await unpublishAndUnstage(d, ctx.kubelet, id);
      });
      calls++;
      await c.controller('ControllerUnpublishVolume', { volume_id: id, node_id: 'bench-node' });
      if (format === 'qcow2') {
        await mark('CreateSnapshot (reflink)', () => call('controller', 'CreateSnapshot', { name: 'bench-census-snap', source_volume_id: id }));
        await mark('CreateVolume from snapshot, linked', () =>
          call(
            'controller',
            'CreateVolume',
            createRequest('bench-census-clone', 10 * GiB, { format: 'qcow2', mounts: 'xfs' }, { snapshot: { snapshot_id: 'bench-census-snap' } }),
          ),
        );
        await mark('ListVolumes (3 volumes, one page)', () => call('controller', 'ListVolumes', { max_entries: 100 }));
        await mark('GetCapacity', () => call('controller', 'GetCapacity', { volume_capabilities: [], parameters: { format: 'qcow2' } }));
        await call('controller', 'DeleteVolume', { volume_id: 'bench-census-clone' });
        await call('controller', 'DeleteSnapshot', { snapshot_id: 'bench-census-snap' });
      }
      await mark(`DeleteVolume ${format}`, () => call('controller', 'DeleteVolume', { volume_id: id }));
    }
    marks.push({ label: '', from: calls });
  } finally {
    await d.stop();
  }
  // Walk the log: commands pile up until an RPC's closing line takes them.
  const text = await readFile(join(ctx.base, 'driver-census.log'), 'utf8');
  const perCall: { commands: string[][]; ms: number[] }[] = [];
  let pending: string[][] = [];
  let pendingMs: number[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    const l = JSON.parse(line) as LogLine;
    if ((l.msg === 'command' || l.msg === 'command failed') && l.argv !== undefined) {
      pending.push(l.argv);
      pendingMs.push(l.durationMs ?? 0);
    } else if (l.rpc !== undefined && l.durationMs !== undefined && l.code !== undefined) {
      // Probe runs `qemu-img --version` now and then; it is not one of the calls counted.
      if (l.rpc !== 'Probe' && l.rpc !== 'GetPluginInfo') perCall.push({ commands: pending, ms: pendingMs });
      pending = [];
      pendingMs = [];
    }
  }
  for (let i = 0; i + 1 < marks.length; i++) {
    const m = marks[i];
    const next = marks[i + 1];
    if (m === undefined || next === undefined) continue;
    const slice = perCall.slice(m.from, next.from);
    results.push({ label: m.label, commands: slice.flatMap((s) => s.commands), ms: slice.flatMap((s) => s.ms) });
  }
  const FLOORS: Record<string, [number, string]> = {
    'CreateVolume raw': [1, 'qemu-img create'],
    'CreateVolume qcow2': [1, 'qemu-img create'],
    'NodeStageVolume + NodePublishVolume raw': [4, 'losetup, mkfs, mount, mount --bind'],
    'NodeUnpublishVolume + NodeUnstageVolume raw': [3, 'umount ×2, losetup -d'],
    'NodeStageVolume + NodePublishVolume qcow2': [5, 'qemu-storage-daemon, losetup, mkfs, mount, mount --bind'],
    'NodeUnpublishVolume + NodeUnstageVolume qcow2': [3, 'umount ×2, losetup -d (the export ends over QMP)'],
    'CreateSnapshot (reflink)': [0, 'FICLONE ioctl in-process'],
    'CreateVolume from snapshot, linked': [1, 'qemu-img create -b'],
    'ListVolumes (3 volumes, one page)': [0, 'metadata only'],
    GetCapacity: [0, 'statfs in-process'],
    'DeleteVolume raw': [0, 'rename + rm in-process'],
    'DeleteVolume qcow2': [0, 'rename + rm in-process'],
  };
  const name = (argv: string[]) => {
    const [tool, ...rest] = argv;
    const sub = rest.find((a) => !a.startsWith('-')) ?? '';
    const base = (tool ?? '').split('/').pop() ?? '';
    return base === 'qemu-img' || base === 'mount'
      ? `${base} ${base === 'mount' && rest.includes('--bind') ? '--bind' : sub.startsWith('/') ? '' : sub}`.trim()
      : base === 'losetup'
        ? `losetup ${rest.find((a) => a.startsWith('--')) ?? ''}`
        : base;
  };
  for (const r of results) {
    const [floor, floorLabel] = FLOORS[r.label] ?? [0, ''];
    const counts = new Map<string, number>();
    for (const a of r.commands) counts.set(name(a), (counts.get(name(a)) ?? 0) + 1);
    const list = [...counts].map(([k, v]) => (v > 1 ? `${k} ×${v}` : k)).join(', ');
    const spent = r.ms.reduce((s, x) => s + x, 0);
    ctx.results.add({
      item: 4,
      key: `spawns.${r.label.replace(/[^a-zA-Z0-9]+/g, '-')}`,
      label: `process spawns: ${r.label}`,
      unit: 'spawns',
      value: r.commands.length,
      floor,
      floorLabel,
      ratio: floor === 0 ? null : r.commands.length / floor,
      runs: 1,
      samples: 1,
      note: `${list || 'none'}${r.commands.length > 0 ? `; ${spent.toFixed(0)} ms in tools` : ''}`,
      detail: r.commands,
    });
  }
}
