/**
 * Item 6: resident memory of `filedriver serve` idle and after 1,000
 * CreateVolume calls, from /proc/<pid>/status. Floors: a bare node process
 * doing nothing, and the server's own idle figure.
 */
import { spawn } from 'node:child_process';
import type { Ctx } from '../lib/context.js';
import { driver } from '../lib/context.js';
import { createRequest, memoryOf, MiB } from '../lib/driver.js';
import { pool, sleep } from '../lib/sh.js';

async function bareNodeRssKiB(): Promise<number> {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  try {
    await sleep(1000);
    return (await memoryOf(child.pid ?? 0)).rssKiB;
  } finally {
    child.kill('SIGKILL');
  }
}

export async function memory(ctx: Ctx): Promise<void> {
  const bare = await bareNodeRssKiB();
  const d = await driver(ctx, 'memory');
  await sleep(2000);
  const idle = await d.memory();
  const count = ctx.scale.memoryVolumes;
  await pool(count, 8, (i) => d.client.controller('CreateVolume', createRequest(`bench-mem-${i}`, 64 * MiB, { format: 'qcow2', mounts: 'xfs' })));
  await sleep(2000);
  const after = await d.memory();
  // The volumes go with the share at the end of the run.
  await d.stop();
  const mib = (kib: number) => kib / 1024;
  ctx.results.add({
    item: 6,
    key: 'rss.idle',
    label: 'VmRSS of filedriver serve, idle (8 mounts)',
    unit: 'MiB',
    value: mib(idle.rssKiB),
    floor: mib(bare),
    floorLabel: 'bare node process',
    runs: 1,
    samples: 1,
  });
  ctx.results.add({
    item: 6,
    key: 'rss.after',
    label: `VmRSS after ${count.toLocaleString('en')} CreateVolume (×8 concurrent)`,
    unit: 'MiB',
    value: mib(after.rssKiB),
    floor: mib(idle.rssKiB),
    floorLabel: 'idle',
    runs: 1,
    samples: 1,
    note: `VmHWM ${mib(after.hwmKiB).toFixed(0)} MiB`,
  });
}
