/**
 * Item 3: snapshots and clones of a volume with a small and a big amount of
 * data written (8× apart). On the reflink xfs share a snapshot, a linked
 * clone, a full clone (reflink of a flat base) and a PVC clone (hidden reflink
 * snapshot + overlay) should cost the same whatever the data; a full
 * `qemu-img convert` copy of the same image is the floor they are held against.
 * On ext4 (no reflink) a qcow2 snapshot is a layer since 43c3264 (the volume's image becomes the
 * snapshot, the volume goes on in an overlay): O(1), held against the same copy. Item 7
 * (layers.ts) measures layers fully: published volumes under a writer, data sizes, chain depth.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Ctx } from '../lib/context.js';
import { GiB, MiB, createRequest, type Driver } from '../lib/driver.js';
import { median } from '../lib/stats.js';
import { alternate, settled, sh, timed } from '../lib/sh.js';

const VOLUME_BYTES = 10 * GiB;

const sizeLabel = (bytes: number): string => (bytes >= GiB ? `${bytes / GiB} GiB` : `${bytes / MiB} MiB`);

/**
 * Fills the first `bytes` of the image with a pattern: `qemu-img bench` writes 1 MiB requests,
 * 16 in flight, O_DIRECT — ten times faster than qemu-io's one request at a time.
 */
async function writeData(image: string, bytes: number): Promise<number> {
  const count = String(Math.ceil(bytes / MiB));
  const args = ['qemu-img', 'bench', '-w', '-c', count, '-d', '16', '-s', '1M', '-S', '1M', '--pattern=90', '-t', 'none', '-f', 'qcow2', image];
  return timed(() => sh(args, { timeoutMs: 1_800_000 }));
}

interface Times {
  snapshot: number[];
  linked: number[];
  full: number[];
  pvc: number[];
  convert: number[];
  reflink: number[];
}

async function measureXfs(ctx: Ctx, d: Driver, bytes: number, runs: number): Promise<Times> {
  const xfs = ctx.shares['xfs'] ?? '';
  const label = sizeLabel(bytes).replace(' ', '');
  const src = `bench-snapsrc-${label}`;
  const params = { format: 'qcow2', mounts: 'xfs' };
  await d.client.controller('CreateVolume', createRequest(src, VOLUME_BYTES, params));
  const image = join(xfs, 'filedriver', 'volumes', src, 'disk.qcow2');
  const writeMs = await writeData(image, bytes);
  ctx.log(`  wrote ${sizeLabel(bytes)} into ${src} in ${(writeMs / 1000).toFixed(1)} s`);
  const floorDir = join(xfs, 'bench-floor');
  await mkdir(floorDir, { recursive: true });
  const t: Times = { snapshot: [], linked: [], full: [], pvc: [], convert: [], reflink: [] };
  for (let r = 0; r < runs; r++) {
    const snap = `bench-snap-${label}-${r}`;
    const fromSnap = { snapshot: { snapshot_id: snap } };
    const driverSide = async () => {
      t.snapshot.push(await settled(() => d.client.controller('CreateSnapshot', { name: snap, source_volume_id: src })));
      t.linked.push(
        await settled(() => d.client.controller('CreateVolume', createRequest(`bench-lc-${label}-${r}`, VOLUME_BYTES, params, fromSnap))),
      );
      t.full.push(
        await settled(() =>
          d.client.controller('CreateVolume', createRequest(`bench-fc-${label}-${r}`, VOLUME_BYTES, { ...params, cloneMode: 'full' }, fromSnap)),
        ),
      );
      t.pvc.push(
        await settled(() =>
          d.client.controller('CreateVolume', createRequest(`bench-pc-${label}-${r}`, VOLUME_BYTES, params, { volume: { volume_id: src } })),
        ),
      );
    };
    const floorSide = async () => {
      const copy = join(floorDir, `convert-${label}-${r}.qcow2`);
      t.convert.push(
        await settled(() => sh(['qemu-img', 'convert', '-U', '-f', 'qcow2', '-O', 'qcow2', '-S', '4k', image, copy], { timeoutMs: 1_800_000 })),
      );
      await rm(copy);
      const clone = join(floorDir, `reflink-${label}-${r}.qcow2`);
      t.reflink.push(await settled(() => sh(['cp', '--reflink=always', '--', image, clone])));
      await rm(clone);
    };
    await alternate(r, floorSide, driverSide);
    for (const v of [`bench-lc-${label}-${r}`, `bench-fc-${label}-${r}`, `bench-pc-${label}-${r}`])
      await d.client.controller('DeleteVolume', { volume_id: v });
    await d.client.controller('DeleteSnapshot', { snapshot_id: snap });
    ctx.log(`  ${sizeLabel(bytes)} run ${r + 1}/${runs}: snapshot ${t.snapshot.at(-1)?.toFixed(0)} ms, convert ${t.convert.at(-1)?.toFixed(0)} ms`);
  }
  await d.client.controller('DeleteVolume', { volume_id: src });
  await rm(floorDir, { recursive: true, force: true });
  return t;
}

async function measureExt4Layer(ctx: Ctx, d: Driver, bytes: number, runs: number): Promise<{ snapshot: number[]; convert: number[] }> {
  const ext4 = ctx.shares['ext4'] ?? '';
  const src = 'bench-snapsrc-ext4';
  await d.client.controller('CreateVolume', createRequest(src, VOLUME_BYTES, { format: 'qcow2', mounts: 'ext4' }));
  const image = join(ext4, 'filedriver', 'volumes', src, 'disk.qcow2');
  await writeData(image, bytes);
  const floorDir = join(ext4, 'bench-floor');
  await mkdir(floorDir, { recursive: true });
  const out = { snapshot: [] as number[], convert: [] as number[] };
  const snaps: string[] = [];
  for (let r = 0; r < runs; r++) {
    const snap = `bench-snap-ext4-${r}`;
    const copy = join(floorDir, `convert-${r}.qcow2`);
    const floorSide = async () => {
      // Flattens the chain: the same data whatever layers the snapshots made.
      out.convert.push(
        await settled(() => sh(['qemu-img', 'convert', '-U', '-f', 'qcow2', '-O', 'qcow2', '-S', '4k', image, copy], { timeoutMs: 1_800_000 })),
      );
      await rm(copy);
    };
    const driverSide = async () => {
      out.snapshot.push(await settled(() => d.client.controller('CreateSnapshot', { name: snap, source_volume_id: src })));
      snaps.push(snap);
    };
    await alternate(r, floorSide, driverSide);
  }
  // The volume first, then its snapshots newest first: a snapshot deleted while it backs the
  // volume would be merged into it in the background (a copy of its data) during later runs.
  await d.client.controller('DeleteVolume', { volume_id: src });
  for (const snap of snaps.reverse()) await d.client.controller('DeleteSnapshot', { snapshot_id: snap });
  await rm(floorDir, { recursive: true, force: true });
  return out;
}

const OPS = [
  ['snapshot', 'CreateSnapshot (reflink)', true],
  ['linked', 'CreateVolume from snapshot, linked clone', true],
  ['full', 'CreateVolume from snapshot, cloneMode full (reflink)', true],
  ['pvc', 'CreateVolume from a PVC (hidden reflink snapshot + overlay)', true],
] as const;

export async function snapshotsAndClones(ctx: Ctx, d: Driver): Promise<void> {
  const { dataSmall, dataBig } = ctx.scale;
  const runs = ctx.scale.runs;
  const small = await measureXfs(ctx, d, dataSmall, runs);
  const big = await measureXfs(ctx, d, dataBig, runs);
  const [ls, lb] = [sizeLabel(dataSmall), sizeLabel(dataBig)];
  for (const [key, label] of OPS) {
    const s = median(small[key]);
    const b = median(big[key]);
    for (const [v, c, l] of [
      [s, median(small.convert), ls],
      [b, median(big.convert), lb],
    ] as const) {
      ctx.results.add({
        item: 3,
        key: `${key}.${l.replace(' ', '')}`,
        label: `${label}, ${l} written`,
        unit: 'ms',
        value: v,
        floor: c,
        floorLabel: `qemu-img convert of the ${l}`,
        runs,
        samples: runs,
        detail: { driver: (l === ls ? small : big)[key], convert: (l === ls ? small : big).convert },
      });
    }
    ctx.results.add({
      item: 3,
      key: `${key}.growth`,
      label: `${label}: time ${lb} / ${ls}`,
      unit: 'x',
      value: b / s,
      floor: null,
      floorLabel: '—',
      ratio: null,
      target: { text: '≈ 1 (≤ 1.5)', met: b / s <= 1.5 },
      runs,
      samples: runs * 2,
    });
  }
  const rs = median(small.reflink);
  const rb = median(big.reflink);
  ctx.results.add({
    item: 3,
    key: 'snapshot.vs.reflink',
    label: `CreateSnapshot against cp --reflink of the same image, ${lb}`,
    unit: 'ms',
    value: median(big.snapshot),
    floor: rb,
    floorLabel: 'cp --reflink=always',
    runs,
    samples: runs,
    note: `cp --reflink ${ls}: ${rs.toFixed(1)} ms`,
  });
  ctx.results.add({
    item: 3,
    key: 'convert.growth',
    label: `(floor) qemu-img convert: time ${lb} / ${ls}`,
    unit: 'x',
    value: median(big.convert) / median(small.convert),
    floor: null,
    floorLabel: '—',
    ratio: null,
    runs,
    samples: runs * 2,
  });
  const copy = await measureExt4Layer(ctx, d, dataSmall, runs);
  ctx.results.add({
    item: 3,
    key: 'snapshot.layer.ext4',
    label: `CreateSnapshot of a detached qcow2 volume on ext4 (no reflink: a layer), ${ls} written`,
    unit: 'ms',
    value: median(copy.snapshot),
    floor: median(copy.convert),
    floorLabel: `qemu-img convert of the ${ls} on ext4`,
    runs,
    samples: runs,
    detail: copy,
  });
}
