/**
 * Item 2 (rest): CreateVolume with many volumes on the mount against a twin
 * server whose mount has none (interleaved), ListVolumes over all of them
 * with full pagination (time-boxed), and GetCapacity with them present. The volumes are written straight into the driver's layout
 * (`filedriver/volumes/<id>/{volume.json,disk.qcow2}`, the tiny image a
 * valid qcow2 with 512-byte clusters) — creating 10,000 through the RPC would
 * take minutes and measure CreateVolume again.
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Ctx } from '../lib/context.js';
import { driver, SERVER_ARGS } from '../lib/context.js';
import { makeShare } from '../lib/scratch.js';
import { createRequest, GiB, startDriver, type Driver } from '../lib/driver.js';
import { median, medianOfRuns, runStats, type RunStats } from '../lib/stats.js';
import { pool, sh, timed } from '../lib/sh.js';
import { getCapacity } from './controller.js';

const PAGE = 100;

const make = (d: Driver, name: string) => d.client.controller('CreateVolume', createRequest(name, GiB, { format: 'qcow2', mounts: 'ext4' }));

/**
 * Two servers at once, alike but for their "ext4" mount: one holds the volumes, the other none.
 * Their CreateVolume series are interleaved, so drift on a shared machine hits both alike.
 */
async function createSeries(
  ctx: Ctx,
  none: Driver,
  many: Driver,
): Promise<{ cold: Record<'none' | 'many', number>; runs: Record<'none' | 'many', RunStats[]> }> {
  // The first placement of a fresh process builds the committed-bytes ledger.
  const cold = { none: await timed(() => make(none, 'bench-ev-none-cold')), many: await timed(() => make(many, 'bench-ev-many-cold')) };
  const runs = { none: [] as RunStats[], many: [] as RunStats[] };
  for (let r = 0; r < ctx.scale.runs; r++) {
    const order = r % 2 === 0 ? (['none', 'many'] as const) : (['many', 'none'] as const);
    for (const side of order) {
      const d = side === 'none' ? none : many;
      const s: number[] = [];
      for (let i = 0; i < ctx.scale.samples; i++) s.push(await timed(() => make(d, `bench-ev-${side}-${r}-${i}`)));
      runs[side].push(runStats(s));
    }
  }
  return { cold, runs };
}

async function deleteSeries(ctx: Ctx, d: Driver, tag: string): Promise<void> {
  const ids = [`bench-ev-${tag}-cold`];
  for (let r = 0; r < ctx.scale.runs; r++) for (let i = 0; i < ctx.scale.samples; i++) ids.push(`bench-ev-${tag}-${r}-${i}`);
  await pool(ids.length, 4, (i) => d.client.controller('DeleteVolume', { volume_id: ids[i] }));
}

/** Writes `count` volumes into the layout of the mount at `share`; returns their ids. */
async function populate(ctx: Ctx, share: string, count: number): Promise<string[]> {
  const template = join(ctx.base, 'tiny.qcow2');
  await sh(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', template, '1M']);
  const image = await readFile(template);
  const root = join(share, 'filedriver', 'volumes');
  const ids = Array.from({ length: count }, (_, i) => `pvc-bench-list-${String(i).padStart(6, '0')}`);
  const createdAt = new Date().toISOString();
  await pool(count, 32, async (i) => {
    const id = ids[i] as string;
    const dir = join(root, id);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'disk.qcow2'), image);
    const record = {
      schema: 1,
      id,
      name: id,
      format: 'qcow2',
      sizeBytes: String(1 << 20),
      createdAt,
      parameters: { format: 'qcow2' },
      contentSource: null,
      backing: null,
      pvc: { name: `claim-${i}`, namespace: 'bench' },
      publications: [],
    };
    await writeFile(join(dir, 'volume.json'), `${JSON.stringify(record, null, 2)}\n`);
  });
  return ids;
}

/** The floor of listing: readdir of every mount's volumes/ and every volume.json read and parsed, in-process. */
async function readAllRecords(shares: string[]): Promise<number> {
  let n = 0;
  for (const share of shares) {
    const dir = join(share, 'filedriver', 'volumes');
    const ids = (await readdir(dir).catch(() => [] as string[])).sort();
    for (const id of ids) {
      JSON.parse(await readFile(join(dir, id, 'volume.json'), 'utf8'));
      n++;
    }
  }
  return n;
}

export async function manyVolumes(ctx: Ctx): Promise<void> {
  const ext4 = ctx.shares['ext4'] ?? '';
  const count = ctx.scale.listVolumes;
  const many = count.toLocaleString('en');

  const populateMs = await timed(() => populate(ctx, ext4, count));
  ctx.log(`  wrote ${many} volumes into the layout in ${(populateMs / 1000).toFixed(1)} s`);
  ctx.results.note(
    `${many} volumes were written straight into ext4's filedriver/volumes/ (volume.json + a 1.8 KiB qcow2 with 512-byte clusters) in ${(populateMs / 1000).toFixed(1)} s.`,
  );
  // The twin of "ext4" without volumes, for the server that has none.
  const empty = await makeShare(ctx.base, 'ext4-empty', 'ext4', 8 * 1024, ctx.cleanup);
  // What was just written must not be in the next fsync's journal commit.
  await sh(['sync']);
  const none = await startDriver(
    { base: ctx.base, mounts: { ...ctx.shares, ext4: empty }, kubeletDir: ctx.kubelet, tag: 'none', args: SERVER_ARGS },
    ctx.cleanup,
  );
  const d = await driver(ctx, 'many');
  const series = await createSeries(ctx, none, d);
  await deleteSeries(ctx, none, 'none');
  await none.stop();
  ctx.log(`  CreateVolume with ${many} volumes and with none done`);
  for (const p of ['p50', 'p95'] as const) {
    const v = medianOfRuns(series.runs.many)[p];
    const f = medianOfRuns(series.runs.none)[p];
    ctx.results.add({
      item: 2,
      key: `create.many.${p}`,
      label: `CreateVolume qcow2 with ${many} volumes on the mount, ${p}`,
      unit: 'ms',
      value: v,
      floor: f,
      floorLabel: 'a twin server with none, interleaved',
      target: { text: 'ratio ≤ 1.10', met: v / f <= 1.1 },
      runs: ctx.scale.runs,
      samples: ctx.scale.runs * ctx.scale.samples,
      detail: series.runs,
    });
  }
  ctx.results.add({
    item: 2,
    key: 'create.many.cold',
    label: `first CreateVolume after start, ${many} volumes`,
    unit: 'ms',
    value: series.cold.many,
    floor: series.cold.none,
    floorLabel: 'same with none',
    runs: 1,
    samples: 1,
    note: 'one sample each: the committed-bytes ledger is built on the first placement',
  });

  await getCapacity(ctx, d, 'many', ctx.quick ? 3 : 6);
  ctx.log(`  GetCapacity with ${many} volumes done`);

  // ListVolumes: every page until next_token is empty — or until the time box is spent, then extrapolated.
  const budgetMs = ctx.scale.listBudgetSeconds * 1000;
  const pages: number[] = [];
  let entries = 0;
  let token = '';
  const started = performance.now();
  do {
    let res: { entries: unknown[]; next_token: string } = { entries: [], next_token: '' };
    pages.push(
      await timed(async () => {
        res = (await d.client.controller('ListVolumes', { max_entries: PAGE, starting_token: token })) as typeof res;
      }),
    );
    entries += res.entries.length;
    token = res.next_token;
  } while (token !== '' && performance.now() - started < budgetMs);
  const measured = performance.now() - started;
  const complete = token === '';
  const floorRuns: number[] = [];
  let floorCount = 0;
  for (let r = 0; r < 3; r++)
    floorRuns.push(
      await timed(async () => {
        floorCount = await readAllRecords(Object.values(ctx.shares));
      }),
    );
  const floor = median(floorRuns);
  const totalPages = Math.ceil(floorCount / PAGE);
  const total = complete ? measured : (measured / entries) * floorCount;
  ctx.log(
    `  ListVolumes: ${entries} entries in ${pages.length} pages, ${(measured / 1000).toFixed(1)} s${complete ? '' : ` (time box; ${(total / 1000).toFixed(0)} s extrapolated for all ${floorCount})`}`,
  );
  if (complete && entries !== floorCount) ctx.results.note(`ListVolumes returned ${entries} entries; ${floorCount} volumes were on the mounts.`);
  if (!complete) {
    ctx.results.note(
      `ListVolumes was stopped after ${pages.length} of ${totalPages} pages (${entries} of ${floorCount} volumes, ${(measured / 1000).toFixed(0)} s time box; --full-list lifts it); its total is extrapolated linearly — every page costs the same.`,
    );
  }
  ctx.results.add({
    item: 2,
    key: 'list.total',
    label: `ListVolumes, ${many} volumes, all pages of ${PAGE}${complete ? '' : ' (extrapolated)'}`,
    unit: 's',
    value: total / 1000,
    floor: floor / 1000,
    floorLabel: 'readdir + read every volume.json in-process',
    runs: 1,
    samples: pages.length,
    note: complete ? 'one full pagination; the floor is the median of 3' : `measured ${pages.length} of ${totalPages} pages, then extrapolated`,
    detail: { pagesMs: pages, floorMs: floorRuns, entries, volumes: floorCount, complete },
  });
  const pageStats = runStats(pages);
  ctx.results.add({
    item: 2,
    key: 'list.page.p50',
    label: `ListVolumes, one page of ${PAGE}, p50`,
    unit: 'ms',
    value: pageStats.p50,
    floor: (floor / floorCount) * PAGE,
    floorLabel: `the floor per ${PAGE} volumes`,
    runs: 1,
    samples: pages.length,
  });

  await deleteSeries(ctx, d, 'many');
  await d.stop();
  const rmMs = await timed(() => rm(join(ext4, 'filedriver', 'volumes'), { recursive: true, force: true }));
  ctx.log(`  removed the ${many} volumes in ${(rmMs / 1000).toFixed(1)} s`);
}
