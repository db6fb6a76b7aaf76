/**
 * Unit costs that explain the ratios: a process spawn, a qemu-img check of a
 * tiny image, a durable small-file write (what volume.json costs), a no-op RPC.
 */
import { mkdir, open, readFile, realpath, rename, rm, statfs, unlink, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { join } from 'node:path';
import type { Ctx } from '../lib/context.js';
import type { Driver } from '../lib/driver.js';
import { percentile } from '../lib/stats.js';
import { pool, sh, timed } from '../lib/sh.js';

async function sample(n: number, fn: (i: number) => Promise<unknown>): Promise<number> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await timed(() => fn(i)));
  return percentile(out, 50);
}

/** Wall time per task of `n` tasks run 16 at a time: what a spawn costs the process under load. */
async function perSpawn(n: number, fn: () => Promise<unknown>): Promise<number> {
  const wall = await timed(() => pool(n, 16, fn));
  return wall / n;
}

export async function probes(ctx: Ctx, d: Driver): Promise<Record<string, number>> {
  const xfs = ctx.shares['xfs'] ?? '';
  const tiny = join(ctx.base, 'probe.qcow2');
  await sh(['qemu-img', 'create', '-q', '-f', 'qcow2', tiny, '1G']);
  const json = `${JSON.stringify({ schema: 1, id: 'x'.repeat(40), parameters: {} }, null, 2)}\n`;
  const p = {
    'spawn /bin/true (child_process.execFile, as the floors do)': await sample(30, () => sh(['/bin/true'])),
    "spawn /bin/true (execa, as the driver's runner does)": await sample(30, () =>
      execa('/bin/true', [], { reject: false, timeout: 60_000, stripFinalNewline: true, stdin: 'ignore' }),
    ),
    '16 concurrent spawns of /bin/true, ms per spawn (execFile)': await perSpawn(64, () => sh(['/bin/true'])),
    '16 concurrent spawns of /bin/true, ms per spawn (execa)': await perSpawn(64, () =>
      execa('/bin/true', [], { reject: false, timeout: 60_000, stripFinalNewline: true, stdin: 'ignore' }),
    ),
    'qemu-img --version': await sample(20, () => sh(['qemu-img', '--version'])),
    'qemu-img check (empty 1 GiB qcow2)': await sample(20, () => sh(['qemu-img', 'check', '-U', '-q', '-f', 'qcow2', tiny])),
    'qemu-img info --output=json': await sample(20, () => sh(['qemu-img', 'info', '-U', '--output=json', tiny])),
    'write + fsync + rename of a small JSON file on the xfs share': await sample(30, async (i) => {
      const tmp = join(xfs, `.probe-${i}.tmp`);
      const fh = await open(tmp, 'wx', 0o644);
      await fh.writeFile(json);
      await fh.sync();
      await fh.close();
      await rename(tmp, join(xfs, `probe-${i}.json`));
    }),
    'mount health check of the 8 mounts, uncached (done again by hand: realpath, mountinfo, 3 mkdir, probe write+unlink, statfs)': await sample(
      30,
      () => Promise.all(Object.values(ctx.shares).map((share) => healthByHand(share))),
    ),
    'GetPluginInfo (no-op RPC round trip)': await sample(200, () => d.client.identity('GetPluginInfo')),
    'Probe RPC (mount health, cached)': await sample(200, () => d.client.identity('Probe')),
  };
  for (let i = 0; i < 30; i++) await rm(join(xfs, `probe-${i}.json`), { force: true });
  await rm(tiny);
  return p;
}

/** What src/storage/mounts.ts does for one mount when its cached health expires. */
async function healthByHand(share: string): Promise<void> {
  const real = await realpath(share);
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  if (!mountinfo.split('\n').some((l) => l.split(' ')[4] === real)) throw new Error(`${share} is not a mount point`);
  const tree = join(share, 'filedriver');
  for (const d of ['volumes', 'snapshots', 'tmp']) await mkdir(join(tree, d), { recursive: true });
  const probe = join(tree, 'tmp', `.probe-bench-${process.pid}`);
  await writeFile(probe, 'filedriver probe\n');
  await unlink(probe);
  await statfs(share, { bigint: true });
}
