/**
 * Item 5: fio through a published ext4 volume (raw: loop with direct I/O on
 * the image; qcow2: qemu-storage-daemon FUSE export + buffered loop) against
 * the same job on a file directly on the share (xfs, its image in RAM: see
 * makeRamShare). O_DIRECT (libaio), 512 MiB
 * file, laid out once beforehand so every run overwrites allocated blocks;
 * caches dropped before each job; targets interleaved within each run.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Ctx } from '../lib/context.js';
import { createRequest, GiB, type Driver } from '../lib/driver.js';
import { controllerPublish, podPaths, stageAndPublish, unpublishAndUnstage } from '../lib/kubelet.js';
import { median } from '../lib/stats.js';
import { sh } from '../lib/sh.js';

const SIZE = '512M';
const VOLUME_BYTES = 4 * GiB;

const JOBS = [
  { key: 'seqwrite', label: 'sequential write 1 MiB', rw: 'write', bs: '1M', depth: 8, unit: 'MiB/s' },
  { key: 'seqread', label: 'sequential read 1 MiB', rw: 'read', bs: '1M', depth: 8, unit: 'MiB/s' },
  { key: 'randwrite', label: 'random write 4 KiB', rw: 'randwrite', bs: '4k', depth: 32, unit: 'IOPS' },
  { key: 'randread', label: 'random read 4 KiB', rw: 'randread', bs: '4k', depth: 32, unit: 'IOPS' },
] as const;

const TARGETS = { raw: 0.9, qcow2: 0.7 } as const;
/** qcow2 against raw on the same share in the same run (issue 13: qemu 11's export). */
const QCOW2_VS_RAW: Partial<Record<(typeof JOBS)[number]['key'], number>> = { randwrite: 0.4, seqwrite: 0.6 };

interface FioJob {
  read: { bw_bytes: number; iops: number };
  write: { bw_bytes: number; iops: number };
}

async function dropCaches(): Promise<void> {
  await sh(['sync']);
  await writeFile('/proc/sys/vm/drop_caches', '3\n');
}

async function fio(file: string, rw: string, bs: string, depth: number, seconds: number | undefined): Promise<FioJob> {
  const args = [
    'fio',
    '--name=bench',
    `--filename=${file}`,
    `--size=${SIZE}`,
    '--direct=1',
    '--ioengine=libaio',
    `--rw=${rw}`,
    `--bs=${bs}`,
    `--iodepth=${depth}`,
    '--numjobs=1',
    '--output-format=json',
    '--randrepeat=0',
  ];
  if (seconds !== undefined) args.push(`--runtime=${seconds}`, '--time_based');
  const { stdout } = await sh(args, { timeoutMs: 600_000 });
  const job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: FioJob[] }).jobs[0];
  if (job === undefined) throw new Error(`fio printed no job for ${file}`);
  return job;
}

/** `share` is the path of the mount named `mount`, the only one the server `d` was given. */
export async function dataPath(ctx: Ctx, d: Driver, mount: string, share: string): Promise<void> {
  const xfs = share;
  const seconds = ctx.scale.fioSeconds;
  const runs = ctx.scale.runs;
  const directDir = join(xfs, 'bench-fio');
  await mkdir(directDir, { recursive: true });
  const files: Record<string, string> = { direct: join(directDir, 'direct.fio') };
  const ids: string[] = [];
  try {
    for (const format of ['raw', 'qcow2'] as const) {
      const id = `bench-fio-${format}`;
      await d.client.controller('CreateVolume', createRequest(id, VOLUME_BYTES, { format, mounts: mount }));
      ids.push(id);
      await stageAndPublish(d, ctx.kubelet, id, await controllerPublish(d, id));
      files[format] = join(podPaths(ctx.kubelet, id).target, 'bench.fio');
    }
    // Lay the file out once (and allocate the qcow2 clusters): the runs measure steady-state overwrites.
    for (const file of Object.values(files)) await fio(file, 'write', '1M', 8, undefined);
    const got: Record<string, Record<string, number[]>> = {};
    for (let r = 0; r < runs; r++) {
      for (const job of JOBS) {
        for (const [target, file] of Object.entries(files)) {
          await dropCaches();
          const res = await fio(file, job.rw, job.bs, job.depth, seconds);
          const side = job.rw.includes('read') ? res.read : res.write;
          const value = job.unit === 'IOPS' ? side.iops : side.bw_bytes / 2 ** 20;
          ((got[job.key] ??= {})[target] ??= []).push(value);
        }
      }
      ctx.log(`  fio run ${r + 1}/${runs} done`);
    }
    for (const job of JOBS) {
      const direct = median(got[job.key]?.['direct'] ?? []);
      for (const format of ['raw', 'qcow2'] as const) {
        const v = median(got[job.key]?.[format] ?? []);
        ctx.results.add({
          item: 5,
          key: `fio.${job.key}.${format}`,
          label: `${job.label}, ${format} volume (ext4)`,
          unit: job.unit,
          value: v,
          floor: direct,
          floorLabel: 'same job on a file on the share',
          target: { text: `ratio ≥ ${TARGETS[format].toFixed(2)}`, met: v / direct >= TARGETS[format] },
          runs,
          samples: runs,
          detail: got[job.key],
        });
      }
      const wanted = QCOW2_VS_RAW[job.key];
      if (wanted !== undefined) {
        const raw = median(got[job.key]?.['raw'] ?? []);
        const v = median(got[job.key]?.['qcow2'] ?? []);
        ctx.results.add({
          item: 5,
          key: `fio.${job.key}.qcow2-vs-raw`,
          label: `${job.label}, qcow2 against raw (ext4 volumes, same share)`,
          unit: job.unit,
          value: v,
          floor: raw,
          floorLabel: 'same job on a raw volume',
          target: { text: `ratio ≥ ${wanted.toFixed(2)}`, met: v / raw >= wanted },
          runs,
          samples: runs,
          detail: got[job.key],
        });
      }
    }
  } finally {
    for (const id of ids) {
      await unpublishAndUnstage(d, ctx.kubelet, id);
      await d.client.controller('ControllerUnpublishVolume', { volume_id: id, node_id: 'bench-node' });
      await d.client.controller('DeleteVolume', { volume_id: id });
    }
  }
}
