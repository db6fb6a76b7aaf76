/**
 * Item 7 (issue 12): qcow2 snapshots as layers on a share without reflink.
 *
 * 7a. Snapshot time against the data written. On a loop-mounted ext4 share
 *     (no reflink), per run a fresh qcow2 filesystem volume is published and
 *     staged, `D` bytes are written into its filesystem (fio, O_DIRECT, synced)
 *     and a writer keeps writing synced 1 MiB files (`dd … conv=fsync` in a
 *     loop); CreateSnapshot is then called and retried as csi-snapshotter does
 *     (after 1 s, then 2 s, 4 s…) until `ready_to_use`. The bench also watches
 *     the volume's image inode: the node's switch is the moment it changes.
 *     Then a detached volume holding the same data (written with qemu-img
 *     bench) is snapshotted — one call — and, for contrast, `qemu-img convert`
 *     (the full copy snapshots used to be on such shares) copies the same image.
 *     Per size, one volume of each kind is written and snapshotted several
 *     times in a row: the first snapshot freezes all `D` bytes, the later ones
 *     what was written since (the data stays in the chain under them). Writing
 *     `D` is most of the time; writing it again for every snapshot would make
 *     the item take many minutes on a shared 2-core machine.
 *
 * 7b. Read latency against chain depth. The data (1 GiB) sits in the bottom
 *     layer under N layers (N = 0, 1, 4, 8, 16, 31; 31 snapshots under a top is
 *     MAX_CHAIN), each holding a little data of its own (two 64 KiB clusters,
 *     one in each L2 table the reads touch). One chain of 31 snapshots is built
 *     through the driver on a detached volume; N = 1, 4, 8, 16 are linked
 *     clones of snapshot 1, 4, 8, 16 of it, N = 31 the volume itself, N = 0 a
 *     volume holding the data in its own top. All six are published as block
 *     volumes (qemu-storage-daemon FUSE export + loop) and read with fio, 4 KiB
 *     random reads, O_DIRECT, iodepth 1 and 32, interleaved within each run,
 *     page cache dropped before each job. The share is ext4 on an image in RAM
 *     (tmpfs): the harshest floor, where every per-request cost shows in full.
 *
 * The controller and the node plugin run as two processes, as Kubernetes
 * deploys them (a Deployment and a DaemonSet): in one `--mode all` process the
 * node's switch and the controller's CreateSnapshot retries share the
 * volume's in-process lock.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import type { Ctx } from '../lib/context.js';
import { DRIVER_NAME, SERVER_ARGS } from '../lib/context.js';
import { GiB, MiB, createRequest, mountCap, startDriver, type Driver } from '../lib/driver.js';
import { podPaths } from '../lib/kubelet.js';
import { makeShare } from '../lib/scratch.js';
import { median } from '../lib/stats.js';
import { alternate, settled, sh, sleep, timed } from '../lib/sh.js';

const sizeLabel = (bytes: number): string => (bytes >= GiB ? `${bytes / GiB} GiB` : `${bytes / MiB} MiB`);
const short = (bytes: number): string => sizeLabel(bytes).replace(' ', '');

/** csi-snapshotter requeues a snapshot that is not ready with its rate limiter: 1 s (--retry-interval-start), doubling. */
const SNAPSHOTTER_RETRY_MS = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000];
/** The issue's target for a snapshot of a published volume on a share without reflink. */
const READY_TARGET_MS = 2_000;

const DEPTHS = [0, 1, 4, 8, 16, 31] as const;
const DEPTH_DATA = GiB;
const DEPTH_VOLUME = 2 * GiB;
const CLUSTER = 64 * 1024;

interface Pair {
  controller: Driver;
  node: Driver;
}

/** A controller and a node plugin on the same shares, as two processes. */
async function startPair(ctx: Ctx, tag: string, mounts: Record<string, string>): Promise<Pair> {
  const common = { base: ctx.base, mounts, kubeletDir: ctx.kubelet };
  const controller = await startDriver({ ...common, tag: `${tag}-controller`, args: [...SERVER_ARGS, '--mode', 'controller'] }, ctx.cleanup);
  try {
    const node = await startDriver({ ...common, tag: `${tag}-node`, args: [...SERVER_ARGS, '--mode', 'node'] }, ctx.cleanup);
    return { controller, node };
  } catch (e) {
    await controller.stop();
    throw e;
  }
}

const stopPair = async (p: Pair): Promise<void> => {
  await p.node.stop();
  await p.controller.stop();
};

/** Calls as the sidecars and kubelet do: ABORTED (busy, e.g. a background merge) is retried. */
async function retried<T>(call: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await call();
    } catch (e) {
      if ((e as { code?: number }).code !== status.ABORTED || i >= 300) throw e;
      await sleep(100);
    }
  }
}

function blockCap() {
  return { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
}

type Access = 'mount' | 'block';
const capOf = (access: Access) => (access === 'block' ? blockCap() : mountCap());

async function attach(p: Pair, ctx: Ctx, id: string, access: Access): Promise<string> {
  const cap = capOf(access);
  const paths = podPaths(ctx.kubelet, id);
  // A driver with a node registry answers NOT_FOUND until the node plugin has recorded itself on the
  // share (within a second of its start); the external-attacher retries, and so does this.
  const publish = () =>
    retried(() =>
      p.controller.client.controller('ControllerPublishVolume', { volume_id: id, node_id: 'bench-node', volume_capability: cap, readonly: false }),
    );
  let res: unknown;
  for (let i = 0; ; i++) {
    try {
      res = await publish();
      break;
    } catch (e) {
      if ((e as { code?: number }).code !== status.NOT_FOUND || i >= 50) throw e;
      await sleep(200);
    }
  }
  const context = (res as { publish_context?: Record<string, string> }).publish_context ?? {};
  await retried(() =>
    p.node.client.node('NodeStageVolume', { volume_id: id, staging_target_path: paths.staging, volume_capability: cap, publish_context: context }),
  );
  await retried(() =>
    p.node.client.node('NodePublishVolume', {
      volume_id: id,
      staging_target_path: paths.staging,
      target_path: paths.target,
      volume_capability: cap,
      readonly: false,
      publish_context: context,
    }),
  );
  return paths.target;
}

async function detach(p: Pair, ctx: Ctx, id: string): Promise<void> {
  const paths = podPaths(ctx.kubelet, id);
  await retried(() => p.node.client.node('NodeUnpublishVolume', { volume_id: id, target_path: paths.target }));
  await retried(() => p.node.client.node('NodeUnstageVolume', { volume_id: id, staging_target_path: paths.staging }));
  await retried(() => p.controller.client.controller('ControllerUnpublishVolume', { volume_id: id, node_id: 'bench-node' }));
}

const imageOf = (share: string, id: string): string => join(share, 'filedriver', 'volumes', id, 'disk.qcow2');
const inode = async (path: string): Promise<bigint | undefined> => (await stat(path, { bigint: true }).catch(() => undefined))?.ino;

/** A pod writing on: synced 1 MiB files, round and round, in its own process group. */
class Writer {
  private readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;
  private readonly undo: () => Promise<void>;

  constructor(ctx: Ctx, dir: string) {
    const script = `i=0; while :; do dd if=/dev/urandom of=${dir}/w$((i%4)) bs=64k count=16 conv=fsync status=none || exit 7; i=$((i+1)); done`;
    this.child = spawn('sh', ['-c', script], { detached: true, stdio: 'ignore' });
    this.exited = new Promise((r) => this.child.once('exit', (code) => r(code)));
    this.undo = ctx.cleanup.add(`writer in ${dir}`, () => this.kill());
  }

  /** Whether it is still writing (never failed). */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private group(signal: NodeJS.Signals | 0): boolean {
    try {
      process.kill(-(this.child.pid ?? 0), signal);
      return true;
    } catch {
      return false;
    }
  }

  private async kill(): Promise<void> {
    this.group('SIGKILL');
    await Promise.race([this.exited, sleep(5_000)]);
    // dd may still sit in an fsync: its open file keeps the mount busy.
    for (let i = 0; i < 600 && this.group(0); i++) await sleep(50);
  }

  /** Stops it; returns its exit code if it had stopped by itself (7: a write failed). */
  async stop(): Promise<number | null> {
    const selfStopped = this.running ? null : this.child.exitCode;
    await this.undo();
    return selfStopped;
  }
}

interface OnlineRun {
  /** From the first CreateSnapshot until a retry answered ready_to_use, retried as csi-snapshotter does. */
  ready: number;
  /** From the first CreateSnapshot until the node renamed the overlay in (the image inode changed). */
  switched: number;
  /** The first call alone: the controller freezes the image and makes the overlay. */
  firstCall: number;
  calls: number;
  writerOk: boolean;
  writeMiBs: number;
}

/** CreateSnapshot until ready, retried after 1 s, 2 s, 4 s…; the node's switch is watched meanwhile. */
async function snapshotUntilReady(p: Pair, share: string, volumeId: string, name: string): Promise<Omit<OnlineRun, 'writerOk' | 'writeMiBs'>> {
  const image = imageOf(share, volumeId);
  const frozen = await inode(image);
  const t0 = performance.now();
  let switched = Number.NaN;
  let watching = true;
  const watcher = (async () => {
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- cleared below once the snapshot is ready
    while (watching) {
      const now = await inode(image);
      if (now !== undefined && now !== frozen) {
        switched = performance.now() - t0;
        return;
      }
      await sleep(10);
    }
  })();
  const call = () =>
    retried(() => p.controller.client.controller('CreateSnapshot', { name, source_volume_id: volumeId })) as Promise<{
      snapshot: { ready_to_use?: boolean };
    }>;
  try {
    let calls = 1;
    let res = await call();
    const firstCall = performance.now() - t0;
    for (const wait of SNAPSHOTTER_RETRY_MS) {
      if (res.snapshot.ready_to_use === true) break;
      await sleep(wait);
      res = await call();
      calls++;
    }
    if (res.snapshot.ready_to_use !== true) throw new Error(`snapshot ${name} of ${volumeId} not ready after ${calls} calls`);
    const ready = performance.now() - t0;
    watching = false;
    await watcher;
    return { ready, switched, firstCall, calls };
  } finally {
    watching = false;
    await watcher;
  }
}

/** Fills `bytes` of a file in a mounted filesystem: 1 MiB writes, O_DIRECT, synced at the end. */
async function fillFile(file: string, bytes: number): Promise<number> {
  const args = [
    'fio',
    '--name=fill',
    `--filename=${file}`,
    `--size=${bytes}`,
    '--rw=write',
    '--bs=1M',
    '--direct=1',
    '--ioengine=libaio',
    '--iodepth=8',
    '--end_fsync=1',
    '--output-format=json',
  ];
  const ms = await timed(() => sh(args, { timeoutMs: 1_800_000 }));
  return bytes / MiB / (ms / 1000);
}

/** Fills the first `bytes` of a detached qcow2 image: 1 MiB O_DIRECT writes, 16 in flight. */
async function fillImage(image: string, bytes: number): Promise<void> {
  const args = [
    'qemu-img',
    'bench',
    '-w',
    '-c',
    String(Math.ceil(bytes / MiB)),
    '-d',
    '16',
    '-s',
    '1M',
    '-S',
    '1M',
    '--pattern=90',
    '-t',
    'none',
    '-f',
    'qcow2',
    image,
  ];
  await sh(args, { timeoutMs: 1_800_000 });
}

/** Gives the blocks of what was deleted back to the host (the share's image is a sparse file). */
async function trim(share: string): Promise<void> {
  await sh(['fstrim', share]).catch(() => undefined);
}

interface SizeResult {
  online: OnlineRun[];
  detached: number[];
  convert: number[];
}

/**
 * Snapshots of volumes holding `bytes`: `online` in a row of a published volume being written (the
 * first freezes all `bytes`, the next ones what the writer added since), `offline` in a row of a
 * detached one (likewise), and one `qemu-img convert` of the same data. Filling the volumes is most
 * of the time; every snapshot after the first costs a second or two.
 */
async function measureSize(
  ctx: Ctx,
  p: Pair,
  share: string,
  bytes: number,
  online: number,
  offline: number,
  convertFirst: boolean,
): Promise<SizeResult> {
  const label = short(bytes);
  const volumeBytes = Math.ceil((bytes * 1.25) / GiB) * GiB + GiB;
  const params = { format: 'qcow2', mounts: 'ext4l' };
  const out: SizeResult = { online: [], detached: [], convert: [] };
  const c = (method: string, req: object) => retried(() => p.controller.client.controller(method, req));

  // Published and written to.
  const vol = `bench-lay-on-${label}`;
  const snaps: string[] = [];
  await c('CreateVolume', createRequest(vol, volumeBytes, params));
  let writer: Writer | undefined;
  let attached = false;
  try {
    const target = await attach(p, ctx, vol, 'mount');
    attached = true;
    const writeMiBs = await fillFile(join(target, 'data.bin'), bytes);
    ctx.log(`  ${sizeLabel(bytes)} written into the published ${vol} at ${writeMiBs.toFixed(0)} MiB/s`);
    await sh(['sync']);
    writer = new Writer(ctx, target);
    await sleep(1_000);
    for (let r = 0; r < online; r++) {
      const snap = `bench-lay-on-snap-${label}-${r}`;
      snaps.push(snap);
      const run = await snapshotUntilReady(p, share, vol, snap);
      const writerOk = writer.running;
      out.online.push({ ...run, writerOk, writeMiBs });
      ctx.log(
        `  ${sizeLabel(bytes)} online ${r + 1}/${online}: ready ${run.ready.toFixed(0)} ms (${run.calls} calls), node switched at ${run.switched.toFixed(0)} ms, first call ${run.firstCall.toFixed(0)} ms`,
      );
      await sleep(300);
    }
    const code = await writer.stop();
    writer = undefined;
    if (code !== null || out.online.some((o) => !o.writerOk))
      ctx.results.note(`7: the writer in ${vol} stopped during the snapshots (exit ${String(code)})`);
  } finally {
    await writer?.stop();
    if (attached) await detach(p, ctx, vol);
    await c('DeleteVolume', { volume_id: vol });
    // Newest first: none is left with a dependent, so nothing is merged.
    for (const snap of snaps.reverse()) await c('DeleteSnapshot', { snapshot_id: snap });
  }
  await trim(share);

  // Detached, the same data; and the full copy of it.
  const dvol = `bench-lay-off-${label}`;
  const dsnaps: string[] = [];
  await c('CreateVolume', createRequest(dvol, volumeBytes, params));
  const floorDir = join(share, 'bench-floor');
  try {
    const image = imageOf(share, dvol);
    await fillImage(image, bytes);
    await mkdir(floorDir, { recursive: true });
    const copy = join(floorDir, `convert-${label}.qcow2`);
    await alternate(
      convertFirst ? 1 : 0,
      async () => {
        for (let r = 0; r < offline; r++) {
          const snap = `bench-lay-off-snap-${label}-${r}`;
          dsnaps.push(snap);
          out.detached.push(await settled(() => c('CreateSnapshot', { name: snap, source_volume_id: dvol })));
        }
      },
      async () => {
        out.convert.push(
          await settled(() => sh(['qemu-img', 'convert', '-U', '-f', 'qcow2', '-O', 'qcow2', '-S', '4k', image, copy], { timeoutMs: 1_800_000 })),
        );
        await rm(copy, { force: true });
      },
    );
    ctx.log(
      `  ${sizeLabel(bytes)} detached: snapshots ${out.detached.map((x) => x.toFixed(0)).join(', ')} ms; qemu-img convert ${out.convert.at(-1)?.toFixed(0)} ms`,
    );
  } finally {
    await c('DeleteVolume', { volume_id: dvol });
    for (const snap of dsnaps.reverse()) await c('DeleteSnapshot', { snapshot_id: snap });
    await rm(floorDir, { recursive: true, force: true });
  }
  await trim(share);
  return out;
}

export async function snapshotTimeVsData(ctx: Ctx): Promise<void> {
  const { dataSmall, dataBig, runs } = ctx.scale;
  // Room for the big data and its convert copy at once, and the volume's filesystem.
  const sizeMiB = Math.max(12 * 1024, Math.ceil((2.5 * dataBig + 2 * GiB) / MiB));
  const share = await makeShare(ctx.base, 'ext4l', 'ext4', sizeMiB, ctx.cleanup);
  ctx.log(`  ext4 share (no reflink) of ${(sizeMiB / 1024).toFixed(0)} GiB at ${share}`);
  const p = await startPair(ctx, 'item7a', { ext4l: share });
  let small: SizeResult;
  let big: SizeResult;
  try {
    // Online runs are cheap once the data is written, and their time depends on where the node's
    // one-second poll falls: more of them show the spread.
    const online = ctx.quick ? 2 : 2 * runs + 1;
    small = await measureSize(ctx, p, share, dataSmall, online, runs, false);
    big = await measureSize(ctx, p, share, dataBig, online, runs, true);
  } finally {
    await stopPair(p);
  }
  const [ls, lb] = [sizeLabel(dataSmall), sizeLabel(dataBig)];
  for (const [res, l] of [
    [small, ls],
    [big, lb],
  ] as const) {
    const ready = median(res.online.map((o) => o.ready));
    const conv = median(res.convert);
    ctx.results.add({
      item: 7,
      key: `layer.online.ready.${l.replace(' ', '')}`,
      label: `CreateSnapshot of a published qcow2 volume being written, ext4 share (no reflink), ${l} written: until ready_to_use (retried after 1, 2, 4 s…)`,
      unit: 'ms',
      value: ready,
      floor: conv,
      floorLabel: `qemu-img convert of the ${l}`,
      target: { text: `≤ ${READY_TARGET_MS} ms`, met: res.online.every((o) => o.ready <= READY_TARGET_MS) },
      runs: 1,
      samples: res.online.length,
      note: `first (all ${l} in the frozen layer) ${res.online[0]?.ready.toFixed(0)} ms, max ${Math.max(...res.online.map((o) => o.ready)).toFixed(0)} ms; calls: ${res.online.map((o) => o.calls).join(' ')}; writer never failed: ${res.online.every((o) => o.writerOk) ? 'yes' : '**no**'}`,
      detail: { online: res.online, convert: res.convert },
    });
    ctx.results.add({
      item: 7,
      key: `layer.online.switched.${l.replace(' ', '')}`,
      label: `  the node's switch (image inode changed), ${l} written: from the first CreateSnapshot`,
      unit: 'ms',
      value: median(res.online.map((o) => o.switched)),
      floor: null,
      floorLabel: 'the node polls its volumes each second',
      ratio: null,
      runs: 1,
      samples: res.online.length,
      note: `max ${Math.max(...res.online.map((o) => o.switched)).toFixed(0)} ms; first call (freeze + overlay) p50 ${median(res.online.map((o) => o.firstCall)).toFixed(0)} ms`,
      detail: res.online.map((o) => ({ switched: o.switched, firstCall: o.firstCall })),
    });
    ctx.results.add({
      item: 7,
      key: `layer.detached.${l.replace(' ', '')}`,
      label: `CreateSnapshot of a detached qcow2 volume, ext4 share (no reflink), ${l} written`,
      unit: 'ms',
      value: median(res.detached),
      floor: conv,
      floorLabel: `qemu-img convert of the ${l}`,
      runs: 1,
      samples: res.detached.length,
      note: `first (all ${l} in the frozen layer) ${res.detached[0]?.toFixed(0)} ms`,
      detail: { detached: res.detached, convert: res.convert },
    });
  }
  for (const [key, label, pick] of [
    ['online', 'published, until ready', (r: SizeResult) => median(r.online.map((o) => o.ready))],
    ['detached', 'detached', (r: SizeResult) => median(r.detached)],
    ['convert', '(floor) qemu-img convert', (r: SizeResult) => median(r.convert)],
  ] as const) {
    const growth = pick(big) / pick(small);
    ctx.results.add({
      item: 7,
      key: `layer.${key}.growth`,
      label: `${label}: time ${lb} / ${ls}`,
      unit: 'x',
      value: growth,
      floor: null,
      floorLabel: '—',
      ratio: null,
      ...(key === 'convert' ? {} : { target: { text: '≈ 1 (≤ 1.5)', met: growth <= 1.5 } }),
      runs: 1,
      samples: key === 'online' ? small.online.length + big.online.length : key === 'detached' ? small.detached.length + big.detached.length : 2,
    });
  }
}

// ---------------------------------------------------------------- 7b: depth

interface FioRead {
  iops: number;
  meanUs: number;
  p50Us: number;
  p99Us: number;
}

async function dropCaches(): Promise<void> {
  await sh(['sync']);
  await writeFile('/proc/sys/vm/drop_caches', '3\n');
}

async function fioRead(device: string, depth: number, seconds: number): Promise<FioRead> {
  const args = [
    'fio',
    '--name=depth',
    `--filename=${device}`,
    `--size=${DEPTH_DATA}`,
    '--direct=1',
    '--ioengine=libaio',
    '--rw=randread',
    '--bs=4k',
    `--iodepth=${depth}`,
    '--numjobs=1',
    `--runtime=${seconds}`,
    '--time_based',
    '--randrepeat=0',
    '--output-format=json',
  ];
  const { stdout } = await sh(args, { timeoutMs: 300_000 });
  type Job = { read: { iops: number; clat_ns: { percentile?: Record<string, number> }; lat_ns: { mean: number } } };
  const job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: Job[] }).jobs[0];
  if (job === undefined) throw new Error(`fio printed no job for ${device}`);
  const pct = job.read.clat_ns.percentile ?? {};
  return {
    iops: job.read.iops,
    meanUs: job.read.lat_ns.mean / 1000,
    p50Us: (pct['50.000000'] ?? Number.NaN) / 1000,
    p99Us: (pct['99.000000'] ?? Number.NaN) / 1000,
  };
}

/** Two clusters of layer `i`'s own, one in each 512 MiB (one L2 table) half of the data. */
async function littleData(image: string, i: number): Promise<void> {
  const offsets = [128 * MiB + i * 2 * CLUSTER, 640 * MiB + i * 2 * CLUSTER];
  const cmds = offsets.flatMap((o) => ['-c', `write -P ${(0x40 + i) % 256} ${o} ${CLUSTER}`]);
  await sh(['qemu-io', '-f', 'qcow2', ...cmds, image]);
}

async function qsdRssKiB(volumeId: string): Promise<number> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (!(argv[0] ?? '').endsWith('qemu-storage-daemon') || !argv.some((a) => a.includes(`/volumes/${volumeId}/`))) continue;
    const st = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(st)?.[1] ?? 'NaN');
  }
  return Number.NaN;
}

/** A tmpfs-backed ext4 share (no reflink): nothing between the reads and memory but the driver's stack. */
async function makeRamExt4(ctx: Ctx, name: string, sizeMiB: number): Promise<string> {
  const ram = join(ctx.base, 'img', `ram-${name}`);
  await mkdir(ram, { recursive: true });
  await sh(['mount', '-t', 'tmpfs', '-o', `size=${sizeMiB + 64}m`, `fdbench-${name}`, ram]);
  ctx.cleanup.add(`tmpfs for ${name}`, async () => {
    await sh(['umount', ram]).catch(() => sh(['umount', '-l', ram]));
  });
  return makeShare(ctx.base, name, 'ext4', sizeMiB, ctx.cleanup, ram);
}

export async function readLatencyVsDepth(ctx: Ctx): Promise<void> {
  const share = await makeRamExt4(ctx, 'ramext4', 4 * 1024);
  const p = await startPair(ctx, 'item7b', { ramext4: share });
  const c = (method: string, req: object) => retried(() => p.controller.client.controller(method, req));
  const params = { format: 'qcow2', mounts: 'ramext4' };
  const create = (id: string, source?: object) =>
    c('CreateVolume', {
      name: id,
      capacity_range: { required_bytes: String(DEPTH_VOLUME) },
      volume_capabilities: [blockCap()],
      parameters: params,
      ...(source === undefined ? {} : { volume_content_source: source }),
    });
  const src = 'bench-depth-chain';
  const volumeOf = (n: number): string => (n === 0 ? 'bench-depth-0' : n === 31 ? src : `bench-depth-${n}`);
  const snapName = (k: number): string => `bench-depth-snap-${String(k).padStart(2, '0')}`;
  const made: string[] = [];
  const snaps: string[] = [];
  const attached: string[] = [];
  const snapMs: number[] = [];
  const stageMs: Record<number, number> = {};
  const rss: Record<number, number> = {};
  try {
    // N = 0: the data in the volume's own top.
    await create(volumeOf(0));
    made.push(volumeOf(0));
    await fillImage(imageOf(share, volumeOf(0)), DEPTH_DATA);
    await littleData(imageOf(share, volumeOf(0)), 0);
    // The chain: the data, then 31 snapshots, each layer with a little data of its own.
    await create(src);
    made.push(src);
    await fillImage(imageOf(share, src), DEPTH_DATA);
    for (let k = 1; k <= 31; k++) {
      await littleData(imageOf(share, src), k - 1);
      snapMs.push(await timed(() => c('CreateSnapshot', { name: snapName(k), source_volume_id: src })));
      snaps.push(snapName(k));
    }
    await littleData(imageOf(share, src), 31);
    // One more is refused: the cap.
    const refused = await p.controller.client.controller('CreateSnapshot', { name: snapName(32), source_volume_id: src }).then(
      () => 'accepted',
      (e: unknown) => {
        const code = (e as { code?: number }).code;
        return code === status.FAILED_PRECONDITION ? 'refused' : `code ${String(code)}`;
      },
    );
    if (refused === 'accepted') snaps.push(snapName(32));
    ctx.results.note(
      `7: a 32nd snapshot of the 31-snapshot chain was ${refused === 'refused' ? 'refused (FAILED_PRECONDITION), as MAX_CHAIN = 32 says' : refused}`,
    );
    for (const n of DEPTHS.filter((d) => d !== 0 && d !== 31)) {
      await create(volumeOf(n), { snapshot: { snapshot_id: snapName(n) } });
      made.push(volumeOf(n));
      await littleData(imageOf(share, volumeOf(n)), 100 + n);
    }
    const devices: Record<number, string> = {};
    const exportFiles: Record<number, string> = {};
    for (const n of DEPTHS) {
      const t0 = performance.now();
      devices[n] = await attach(p, ctx, volumeOf(n), 'block');
      stageMs[n] = performance.now() - t0;
      attached.push(volumeOf(n));
      rss[n] = await qsdRssKiB(volumeOf(n));
      const stageJson = join(ctx.kubelet, 'plugins', DRIVER_NAME, 'volumes', volumeOf(n), 'stage.json');
      exportFiles[n] = (JSON.parse(await readFile(stageJson, 'utf8')) as { export?: { exportFile?: string } }).export?.exportFile ?? '';
    }
    // The pod's path (the loop device, which reads its FUSE file through the page cache), and the
    // export file itself with O_DIRECT: one FUSE request per read, so qemu walks the chain every time.
    const jobs = [
      ['qd1', devices, 1],
      ['qd32', devices, 32],
      ['export', exportFiles, 1],
    ] as const;
    const got: Record<'qd1' | 'qd32' | 'export', Partial<Record<number, FioRead[]>>> = { qd1: {}, qd32: {}, export: {} };
    const runs = ctx.scale.runs;
    for (let r = 0; r < runs; r++) {
      // Depths in a different order each run: drift on the shared machine hits them alike.
      const order = r % 2 === 0 ? [...DEPTHS] : [...DEPTHS].reverse();
      for (const [key, files, qd] of jobs) {
        for (const n of order) {
          await dropCaches();
          (got[key][n] ??= []).push(await fioRead(files[n] ?? '', qd, ctx.scale.fioSeconds));
        }
      }
      ctx.log(
        `  depth run ${r + 1}/${runs}: p50 µs, device qd1 ${DEPTHS.map((n) => `${n}:${got.qd1[n]?.at(-1)?.p50Us.toFixed(0)}`).join(' ')}; export file ${DEPTHS.map((n) => `${n}:${got.export[n]?.at(-1)?.p50Us.toFixed(0)}`).join(' ')}`,
      );
    }
    for (const n of DEPTHS) rss[n] = Math.max(rss[n] ?? 0, await qsdRssKiB(volumeOf(n)));
    const med = (key: keyof typeof got, n: number, f: (x: FioRead) => number): number => median((got[key][n] ?? []).map(f));
    // On a loaded machine the p50 of a run is low or high with the CPU it got: the lowest is the stack's own cost.
    const least = (key: keyof typeof got, n: number): number => Math.min(...(got[key][n] ?? []).map((x) => x.p50Us));
    const base1 = med('qd1', 0, (x) => x.p50Us);
    const base32 = med('qd32', 0, (x) => x.iops);
    for (const n of DEPTHS) {
      ctx.results.add({
        item: 7,
        key: `depth.${n}.qd1`,
        label: `4 KiB random read of the block volume, iodepth 1, data under ${n} layer${n === 1 ? '' : 's'}: p50 latency`,
        unit: 'µs',
        value: med('qd1', n, (x) => x.p50Us),
        floor: base1,
        floorLabel: 'the same, data in the top (0 layers)',
        runs,
        samples: runs,
        note: `least disturbed run ${least('qd1', n).toFixed(0)} µs; mean ${med('qd1', n, (x) => x.meanUs).toFixed(0)} µs, p99 ${med('qd1', n, (x) => x.p99Us).toFixed(0)} µs, ${med('qd1', n, (x) => x.iops).toFixed(0)} IOPS`,
        detail: got.qd1[n],
      });
    }
    const baseExport = med('export', 0, (x) => x.p50Us);
    for (const n of DEPTHS) {
      ctx.results.add({
        item: 7,
        key: `depth.${n}.export`,
        label: `4 KiB random read of the FUSE export file (O_DIRECT, no page cache), iodepth 1, ${n} layer${n === 1 ? '' : 's'}: p50 latency`,
        unit: 'µs',
        value: med('export', n, (x) => x.p50Us),
        floor: baseExport,
        floorLabel: 'the same, data in the top (0 layers)',
        runs,
        samples: runs,
        note: `least disturbed run ${least('export', n).toFixed(0)} µs; mean ${med('export', n, (x) => x.meanUs).toFixed(0)} µs, p99 ${med('export', n, (x) => x.p99Us).toFixed(0)} µs, ${med('export', n, (x) => x.iops).toFixed(0)} IOPS`,
        detail: got.export[n],
      });
    }
    for (const n of DEPTHS) {
      const v = med('qd32', n, (x) => x.iops);
      ctx.results.add({
        item: 7,
        key: `depth.${n}.qd32`,
        label: `4 KiB random read of the block volume, iodepth 32, data under ${n} layer${n === 1 ? '' : 's'}`,
        unit: 'IOPS',
        value: v,
        floor: base32,
        floorLabel: 'the same, data in the top (0 layers)',
        runs,
        samples: runs,
        note: `p99 ${med('qd32', n, (x) => x.p99Us).toFixed(0)} µs`,
        detail: got.qd32[n],
      });
    }
    for (const n of DEPTHS) {
      ctx.results.add({
        item: 7,
        key: `depth.${n}.stage`,
        label: `NodeStage+NodePublish (block) with ${n} layer${n === 1 ? '' : 's'} under the top; qemu-storage-daemon RSS`,
        unit: 'ms',
        value: stageMs[n] ?? Number.NaN,
        floor: stageMs[0] ?? null,
        floorLabel: '0 layers',
        runs: 1,
        samples: 1,
        note: `qsd VmRSS ${((rss[n] ?? Number.NaN) / 1024).toFixed(1)} MiB`,
      });
    }
    ctx.results.add({
      item: 7,
      key: 'depth.snapshot.detached',
      label: 'CreateSnapshot of a detached volume with 0 / 30 snapshots under it (ext4 in RAM)',
      unit: 'ms',
      value: snapMs[30] ?? Number.NaN,
      floor: snapMs[0] ?? null,
      floorLabel: 'the first snapshot',
      runs: 1,
      samples: 1,
      detail: snapMs,
    });
  } finally {
    for (const id of attached.reverse()) await detach(p, ctx, id).catch((e: unknown) => ctx.log(`  detach ${id}: ${String(e)}`));
    // Volumes first, then snapshots newest first: nothing is left with a dependent, so nothing is merged.
    for (const id of made.reverse()) await c('DeleteVolume', { volume_id: id }).catch((e: unknown) => ctx.log(`  delete ${id}: ${String(e)}`));
    for (const id of snaps.reverse()) await c('DeleteSnapshot', { snapshot_id: id }).catch((e: unknown) => ctx.log(`  delete ${id}: ${String(e)}`));
    await stopPair(p);
  }
}
