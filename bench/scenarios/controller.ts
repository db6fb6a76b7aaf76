/**
 * Items 1 and 2 (part): CreateVolume against `qemu-img create` run directly,
 * sequentially and 16 at a time; DeleteVolume against removing the image;
 * GetCapacity over eight mounts against a no-op RPC and statfs of the mounts.
 */
import { mkdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Ctx } from '../lib/context.js';
import { createRequest, MiB, type Driver } from '../lib/driver.js';
import { median, medianOfRuns, runStats, type RunStats } from '../lib/stats.js';
import { alternate, pool, sh, timed } from '../lib/sh.js';

const FORMATS = ['qcow2', 'raw'] as const;
const CONCURRENCY = 16;
/**
 * Size of each created volume. A run makes 90 per format before deleting them, and raw volumes may
 * not over-commit the 24 GiB share; creation time does not depend on the size (sparse files).
 */
const VOLUME_BYTES = 128 * MiB;

interface Series {
  seq: RunStats[];
  conc: RunStats[];
  /** ops/s of each concurrent run */
  rate: number[];
  del: RunStats[];
}
const series = (): Series => ({ seq: [], conc: [], rate: [], del: [] });

type Step = (tag: 's' | 'c', i: number) => Promise<unknown>;

interface SideTimes {
  seq: number[];
  conc: number[];
  /** ops/s of the concurrent part */
  rate: number;
  del: number[];
}

/** One side of a run: creates one by one, then 16 at a time (wall time → rate), then deletes one by one. */
async function oneSide(samples: number, concOps: number, create: Step, remove: Step): Promise<SideTimes> {
  const seq: number[] = [];
  for (let i = 0; i < samples; i++) seq.push(await timed(() => create('s', i)));
  let conc: number[] = [];
  const wall = await timed(async () => {
    conc = await pool(concOps, CONCURRENCY, (i) => create('c', i));
  });
  const del: number[] = [];
  for (let i = 0; i < samples; i++) del.push(await timed(() => remove('s', i)));
  await pool(concOps, 4, (i) => remove('c', i));
  return { seq, conc, rate: (concOps / wall) * 1000, del };
}

export async function createAndDelete(ctx: Ctx, d: Driver): Promise<void> {
  const { runs, samples } = ctx.scale;
  const concOps = samples * 2;
  const floorDir = join(ctx.shares['xfs'] ?? '', 'bench-floor');
  await mkdir(floorDir, { recursive: true });
  const drv = { qcow2: series(), raw: series() };
  const flr = { qcow2: series(), raw: series() };

  for (let r = 0; r < runs; r++) {
    for (const format of FORMATS) {
      const file = (tag: string, i: number) => join(floorDir, `${tag}-${r}-${i}.${format}`);
      const name = (tag: string, i: number) => `bench-cv-${format}-${tag}-${r}-${i}`;
      const floorSide = async () =>
        record(
          flr[format],
          await oneSide(
            samples,
            concOps,
            (tag, i) => sh(['qemu-img', 'create', '-q', '-f', format, file(tag, i), String(VOLUME_BYTES)]),
            (tag, i) => rm(file(tag, i)),
          ),
        );
      const driverSide = async () =>
        record(
          drv[format],
          await oneSide(
            samples,
            concOps,
            (tag, i) => d.client.controller('CreateVolume', createRequest(name(tag, i), VOLUME_BYTES, { format, mounts: 'xfs' })),
            (tag, i) => d.client.controller('DeleteVolume', { volume_id: name(tag, i) }),
          ),
        );
      await alternate(r, floorSide, driverSide);
    }
    ctx.log(`  CreateVolume/DeleteVolume run ${r + 1}/${runs} done`);
  }
  await rm(floorDir, { recursive: true, force: true });

  for (const format of FORMATS) {
    const D = drv[format];
    const F = flr[format];
    for (const [kind, label] of [
      ['seq', 'sequential'],
      ['conc', `×${CONCURRENCY} concurrent`],
    ] as const) {
      const dm = medianOfRuns(D[kind]);
      const fm = medianOfRuns(F[kind]);
      for (const p of ['p50', 'p95'] as const) {
        ctx.results.add({
          item: 1,
          key: `create.${format}.${kind}.${p}`,
          label: `CreateVolume ${format} 128 MiB, ${label}, ${p}`,
          unit: 'ms',
          value: dm[p],
          floor: fm[p],
          floorLabel: `qemu-img create${kind === 'conc' ? ` ×${CONCURRENCY}` : ''}`,
          target: { text: 'ratio ≤ 1.20', met: dm[p] / fm[p] <= 1.2 },
          runs,
          samples: dm.n,
          detail: { driver: D[kind], floor: F[kind] },
        });
      }
    }
    const rate = median(D.rate);
    const floorRate = median(F.rate);
    ctx.results.add({
      item: 1,
      key: `create.${format}.conc.rate`,
      label: `CreateVolume ${format}, ×${CONCURRENCY} concurrent, throughput`,
      unit: 'ops/s',
      value: rate,
      floor: floorRate,
      floorLabel: `qemu-img create ×${CONCURRENCY}`,
      target: { text: 'ratio ≥ 0.83', met: rate / floorRate >= 1 / 1.2 },
      runs,
      samples: runs,
      detail: { driver: D.rate, floor: F.rate },
    });
    const dd = medianOfRuns(D.del);
    const fd = medianOfRuns(F.del);
    ctx.results.add({
      item: 2,
      key: `delete.${format}.p50`,
      label: `DeleteVolume ${format}, sequential, p50`,
      unit: 'ms',
      value: dd.p50,
      floor: fd.p50,
      floorLabel: 'unlink the image in-process',
      runs,
      samples: dd.n,
      note: `p95 ${dd.p95.toFixed(2)} ms`,
      detail: { driver: D.del, floor: F.del },
    });
  }
}

function record(s: Series, side: SideTimes): void {
  s.seq.push(runStats(side.seq));
  s.conc.push(runStats(side.conc));
  s.rate.push(side.rate);
  s.del.push(runStats(side.del));
}

export const capacityRequest = {
  volume_capabilities: [{ mount: { fs_type: 'ext4', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
  parameters: { format: 'qcow2' },
};

/** GetCapacity over all eight mounts; `tag` distinguishes the run with many volumes. */
export async function getCapacity(ctx: Ctx, d: Driver, tag: '' | 'many', seconds: number): Promise<void> {
  const paths = Object.values(ctx.shares);
  const runs = ctx.scale.runs;
  const cap: RunStats[] = [];
  const noop: RunStats[] = [];
  const fsFloor: RunStats[] = [];
  let calls = 0;
  for (let r = 0; r < runs; r++) {
    // Interleaved with a no-op RPC so both see the same machine; long enough for the 2 s health cache to expire.
    const c: number[] = [];
    const n: number[] = [];
    const end = performance.now() + seconds * 1000;
    while (performance.now() < end) {
      n.push(await timed(() => d.client.identity('GetPluginInfo')));
      c.push(await timed(() => d.client.controller('GetCapacity', capacityRequest)));
    }
    calls += c.length;
    cap.push(runStats(c));
    noop.push(runStats(n));
    const f: number[] = [];
    for (let i = 0; i < 200; i++) f.push(await timed(() => Promise.all(paths.map((p) => statfs(p, { bigint: true })))));
    fsFloor.push(runStats(f));
  }
  const c = medianOfRuns(cap);
  const n = medianOfRuns(noop);
  const f = medianOfRuns(fsFloor);
  const what = tag === '' ? '8 mounts' : `8 mounts, ${ctx.scale.listVolumes.toLocaleString('en')} volumes`;
  for (const p of ['p50', 'p95'] as const) {
    ctx.results.add({
      item: 2,
      key: `capacity${tag === '' ? '' : '.many'}.${p}`,
      label: `GetCapacity, ${what}, ${p}`,
      unit: 'ms',
      value: c[p],
      floor: n[p],
      floorLabel: 'GetPluginInfo (no-op RPC)',
      ...(p === 'p50' ? { target: { text: 'p50 < 2 ms', met: c.p50 < 2 } } : {}),
      runs,
      samples: calls,
      note:
        p === 'p50'
          ? `statfs of the 8 mounts in-process: p50 ${f.p50.toFixed(3)} ms`
          : `max ${c.max.toFixed(1)} ms (no-op RPC max ${n.max.toFixed(1)} ms)`,
      ...(p === 'p50' ? { detail: { getCapacity: cap, noop, statfs: fsFloor } } : {}),
    });
  }
}
