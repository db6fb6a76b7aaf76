/**
 * `npm run bench [-- --quick] [-- --out FILE] [-- --only 1,3]`: filedriver
 * against its physical floor, side by side (issue 7). Needs root, the tools of
 * scripts/install-deps.sh (with fio) and a built dist/. Every figure is a
 * ratio to a floor measured in the same run; see docs/BENCHMARKS.md.
 */
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, statfs, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../src/csi/proto.js';
import { BASE_PREFIX, Cleanup, releaseHolders, staleBases, sweep } from './lib/cleanup.js';
import { driver, type Ctx, type Scale } from './lib/context.js';
import { driverMain, useDriverBuild } from './lib/driver.js';
import { fmt, machine, Results, table } from './lib/report.js';
import { makeRamShare, makeShare } from './lib/scratch.js';
import { startDriver } from './lib/driver.js';
import { SERVER_ARGS } from './lib/context.js';
import { sh } from './lib/sh.js';
import { createAndDelete, getCapacity } from './scenarios/controller.js';
import { dataPath } from './scenarios/datapath.js';
import { manyVolumes } from './scenarios/listing.js';
import { memory } from './scenarios/memory.js';
import { stageUnstage } from './scenarios/node.js';
import { probes } from './scenarios/probes.js';
import { census } from './scenarios/census.js';
import { snapshotsAndClones } from './scenarios/snapshots.js';
import { readLatencyVsDepth, snapshotTimeVsData } from './scenarios/layers.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const TOOLS = ['qemu-img', 'qemu-io', 'qemu-storage-daemon', 'fio', 'mkfs.xfs', 'mkfs.ext4', 'losetup', 'mount', 'cp'];

const log = (line: string): void => {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
};

function usage(): string {
  return `Usage: npm run bench [-- --quick] [-- --out FILE] [-- --only ITEMS]
  --quick       one run per figure, smaller data (a few minutes); results go to .bench-out/quick.json
  --out FILE    where to write the JSON (default docs/benchmarks.json; with --quick .bench-out/quick.json)
  --only ITEMS  comma-separated items to run (1-7; 7a or 7b for half of item 7); 1 and 2 run
                together. A run of some items replaces only their rows in an existing report
                (see "updates" in the JSON)
  --runs N      repeated runs per figure (default 3; 1 with --quick)
  --driver DIR  benchmark the build in DIR (a checkout with dist/src/main.js; default this one): before/after runs
  --full-list   page through all volumes in ListVolumes however long it takes (default: a 30 s time box, then extrapolated)
`;
}

async function preflight(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the bench needs root (loop devices, mounts, drop_caches)');
  for (const tool of TOOLS) {
    await sh(['sh', '-c', `command -v ${tool}`]).catch(() => {
      throw new Error(`${tool} is missing; run scripts/install-deps.sh`);
    });
  }
  if (!existsSync(driverMain())) throw new Error(`${driverMain()} is missing; npm run build`);
}

/** Data sizes: 1 GiB and 8 GiB when the host has room, else 256 MiB and 2 GiB. */
function chooseScale(
  quick: boolean,
  fullList: boolean,
  freeBytes: number,
): { scale: Scale; xfsMiB: number; ext4MiB: number; note: string | undefined } {
  const fullRoom = freeBytes >= 40 * GiB;
  const big = !quick && fullRoom;
  const dataSmall = big ? GiB : 256 * MiB;
  const dataBig = 8 * dataSmall;
  const scale: Scale = {
    dataSmall,
    dataBig,
    listVolumes: quick ? 2_000 : 10_000,
    memoryVolumes: quick ? 200 : 1_000,
    runs: quick ? 1 : 3,
    samples: quick ? 15 : 30,
    fioSeconds: 2,
    listBudgetSeconds: fullList ? Number.POSITIVE_INFINITY : quick ? 15 : 30,
  };
  // The big data and its convert copy live on xfs at once; the 10 GiB stage volumes need room when raw.
  const xfsMiB = Math.max(24 * 1024, Math.ceil((2.5 * dataBig) / MiB));
  const ext4MiB = 8 * 1024;
  let note: string | undefined;
  if (!quick && !fullRoom) note = `only ${(freeBytes / GiB).toFixed(0)} GiB free under ${tmpdir()}: data scaled down to 256 MiB / 2 GiB`;
  return { scale, xfsMiB, ext4MiB, note };
}

/** Which driver code was measured: its commit, and whether src/ differed from it. */
async function describeBuild(dir: string): Promise<{ path: string; commit: string; dirty: boolean }> {
  const commit = (await sh(['git', '-C', dir, 'log', '-1', '--format=%h %s']).catch(() => ({ stdout: 'unknown' }))).stdout.trim();
  const status = (await sh(['git', '-C', dir, 'status', '--porcelain', '--', 'src']).catch(() => ({ stdout: '' }))).stdout.trim();
  return { path: dir, commit, dirty: status !== '' };
}

type Report = Record<string, unknown> & { results: { item: number }[] };

/**
 * A run of some items (--only) into an existing report replaces those items' rows and keeps the
 * others: the top-level fields still describe the run the other rows come from, and `updates`
 * says which items a later run measured, when, on what machine and with which driver build.
 */
async function mergeReport(out: string, report: Report, items: ReadonlySet<number>): Promise<Report> {
  const keys = new Set(report.results.map((r) => (r as { key?: string }).key));
  let old: Report;
  try {
    old = JSON.parse(await readFile(out, 'utf8')) as Report;
  } catch {
    return report;
  }
  if (!Array.isArray(old.results)) return report;
  const { results, ...about } = report;
  // Rows of the items run whole go; a half item (7a, 7b) replaces the rows it measured.
  const kept = old.results.filter((r) => !items.has(r.item) && !keys.has((r as { key?: string }).key));
  const merged = [...kept, ...results].sort((a, b) => a.item - b.item);
  const updates = Array.isArray(old['updates']) ? (old['updates'] as unknown[]) : [];
  return { ...old, updates: [...updates, { items: [...items].sort((a, b) => a - b), ...about }], results: merged };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      'full-list': { type: 'boolean' },
      driver: { type: 'string' },
      out: { type: 'string' },
      only: { type: 'string' },
      runs: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(usage());
    return 0;
  }
  const quick = values.quick === true;
  const parts = (values.only ?? '1,2,3,4,5,6,7').split(',').map((s) => s.trim());
  // 7a and 7b select half of item 7; "7" both.
  const halves = new Set(parts.filter((s) => /^7[ab]$/.test(s)));
  const only = new Set(parts.filter((s) => !halves.has(s)).map(Number));
  if (only.has(7)) for (const h of ['7a', '7b']) halves.add(h);
  if (only.has(1) || only.has(2)) {
    only.add(1);
    only.add(2);
  }
  const root = packageRoot();
  const driverRoot = resolve(values.driver ?? root);
  useDriverBuild(driverRoot);
  const out = values.out ?? join(root, quick ? '.bench-out/quick.json' : 'docs/benchmarks.json');
  await preflight();

  for (const stale of await staleBases()) {
    log(`removing what an earlier bench run left in ${stale}`);
    await sweep(stale, log);
  }
  const base = await mkdtemp(join(tmpdir(), BASE_PREFIX));
  await writeFile(join(base, 'bench.pid'), `${process.pid}\n`);
  const cleanup = new Cleanup();
  const results = new Results();
  // One cleanup, however many ways the run ends (done, failed, signalled): all wait for the same one.
  let finishing: Promise<void> | undefined;
  const finish = (): Promise<void> =>
    (finishing ??= (async () => {
      log('cleaning up');
      // What holds the shares goes before the shares' own undo steps (an aborted run leaves volumes staged).
      await releaseHolders(base, log);
      await cleanup.runAll(log);
      // The servers' logs (one JSON line per RPC with its durationMs) outlive the run in .bench-out/logs/.
      const logs = join(packageRoot(), '.bench-out', 'logs');
      await mkdir(logs, { recursive: true });
      for (const f of (await readdir(base).catch(() => [] as string[])).filter((n) => n.startsWith('driver-'))) {
        await copyFile(join(base, f), join(logs, f)).catch(() => undefined);
      }
      await sweep(base, log);
    })());
  let aborted = false;
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      aborted = true;
      log(`${signal}: stopping`);
      void finish().finally(() => process.exit(130));
    });
  }

  const started = Date.now();
  const loadAtStart = loadavg()[0] ?? 0;
  if (loadAtStart > 0.5)
    log(`load average is ${loadAtStart.toFixed(2)}: something else runs on this machine; ratios hold better than absolutes, but expect noise`);
  const failures: string[] = [];
  try {
    const s = await statfs(base);
    const { scale, xfsMiB, ext4MiB, note } = chooseScale(quick, values['full-list'] === true, s.bavail * s.bsize);
    if (values.runs !== undefined) {
      const n = Number(values.runs);
      if (!Number.isInteger(n) || n < 1) throw new Error(`--runs ${values.runs}: a whole number ≥ 1`);
      scale.runs = n;
    }
    if (note !== undefined) {
      log(note);
      results.note(note);
    }
    log(`base ${base}; making 8 shares (xfs ${xfsMiB / 1024} GiB reflink, ext4 ${ext4MiB / 1024} GiB, 6 × ext4 64 MiB)`);
    const shares: Record<string, string> = {};
    shares['xfs'] = await makeShare(base, 'xfs', 'xfs', xfsMiB, cleanup);
    shares['ext4'] = await makeShare(base, 'ext4', 'ext4', ext4MiB, cleanup);
    for (let i = 1; i <= 6; i++) shares[`s${i}`] = await makeShare(base, `s${i}`, 'ext4', 64, cleanup);
    const kubelet = join(base, 'kubelet');
    await mkdir(kubelet, { recursive: true });
    const ctx: Ctx = { base, quick, scale, cleanup, results, log, shares, kubelet };

    const step = async (item: number, name: string, fn: () => Promise<void>, half?: string): Promise<void> => {
      if (!(only.has(item) || (half !== undefined && halves.has(half))) || aborted) return;
      const t0 = Date.now();
      log(`${name}…`);
      try {
        await fn();
        log(`${name}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      } catch (e) {
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- set by the signal handler while fn ran
        if (aborted) return;
        const msg = `${name} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`;
        log(msg);
        failures.push(msg);
      }
    };

    await step(1, 'items 1-2: CreateVolume, DeleteVolume, GetCapacity', async () => {
      const d = await driver(ctx, 'controller');
      try {
        Object.assign(results.probes, await probes(ctx, d));
        await createAndDelete(ctx, d);
        await getCapacity(ctx, d, '', 2.5);
      } finally {
        await d.stop();
      }
    });
    await step(2, `item 2: ${scale.listVolumes} volumes (ListVolumes, CreateVolume, GetCapacity)`, () => manyVolumes(ctx));
    for (const [item, name, fn] of [
      [3, 'item 3: snapshots and clones', snapshotsAndClones],
      [4, 'item 4: NodeStage/NodeUnstage', stageUnstage],
    ] as const) {
      await step(item, name, async () => {
        const d = await driver(ctx, `item${item}`);
        try {
          await fn(ctx, d);
        } finally {
          await d.stop();
        }
      });
    }
    await step(4, 'process spawns per RPC', () => census(ctx));
    await step(5, 'item 5: data path (fio)', async () => {
      const ram = await makeRamShare(base, 'ram', 6 * 1024, cleanup);
      const d = await startDriver({ base, mounts: { ram }, kubeletDir: kubelet, tag: 'item5', args: SERVER_ARGS }, cleanup);
      try {
        await dataPath(ctx, d, 'ram', ram);
      } finally {
        await d.stop();
      }
    });
    await step(6, 'item 6: memory', () => memory(ctx));
    await step(7, 'item 7a: layer snapshots on ext4, time vs data written', () => snapshotTimeVsData(ctx), '7a');
    await step(7, 'item 7b: read latency vs chain depth', () => readLatencyVsDepth(ctx), '7b');

    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- set by the signal handler while the steps ran
    if (aborted) return 130;
    const m = await machine(base);
    m.load.start = loadAtStart;
    m.shares = `sparse image files on the host's ${m.hostFs}, loop-mounted (buffered loop): xfs ${xfsMiB / 1024} GiB with reflink=1, ext4 ${ext4MiB / 1024} GiB, 6 × ext4 64 MiB`;
    if (halves.size > 0) m.shares += '; item 7: its own ext4 share (no reflink) on the host disk, and an ext4 share on an image in tmpfs';
    const seconds = Math.round((Date.now() - started) / 1000);
    const args = process.argv.slice(2).join(' ');
    const command =
      process.env['npm_lifecycle_event'] === 'bench'
        ? `npm run bench${args ? ` -- ${args}` : ''}`
        : `node dist/bench/main.js${args ? ` ${args}` : ''}`;
    const driverBuild = await describeBuild(driverRoot);
    const report = {
      date: new Date().toISOString(),
      command,
      quick,
      durationSeconds: seconds,
      machine: m,
      driver: driverBuild,
      scale,
      notes: results.notes,
      probesMs: results.probes,
      failures,
      results: results.rows,
    };
    await mkdir(dirname(out), { recursive: true });
    const partial = values.only !== undefined && !quick;
    await writeFile(out, `${JSON.stringify(partial ? await mergeReport(out, { ...report, items: parts }, only) : report, null, 2)}\n`);
    const md = [
      `${command} — ${report.date}, ${seconds} s`,
      `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Linux ${m.kernel}, ${m.os}, node ${m.node}, ${m.qemu}`,
      `driver: ${driverBuild.commit}${driverBuild.dirty ? ' + uncommitted changes in src/' : ''} (${driverBuild.path})`,
      `shares: ${m.shares}`,
      `load average: ${m.load.start.toFixed(2)} at start, ${m.load.end.toFixed(2)} at end`,
      '',
      table(results.rows),
      '',
      'Unit costs (p50, ms):',
      ...Object.entries(results.probes).map(([k, v]) => `- ${k}: ${fmt(v as number)}`),
      ...(results.notes.length > 0 ? ['', 'Notes:', ...results.notes.map((n) => `- ${n}`)] : []),
    ].join('\n');
    await mkdir(join(root, '.bench-out'), { recursive: true });
    await writeFile(join(root, '.bench-out', 'latest.md'), `${md}\n`);
    process.stdout.write(`${md}\n\nJSON: ${relative(process.cwd(), out)}\n`);
  } finally {
    await finish();
  }
  if (failures.length > 0) {
    log(`${failures.length} part(s) failed:\n${failures.join('\n')}`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    log(e instanceof Error ? (e.stack ?? e.message) : String(e));
    process.exit(1);
  },
);
