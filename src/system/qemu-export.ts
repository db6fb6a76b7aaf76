/**
 * Exposes a qcow2 (or raw) image as a plain raw file through a FUSE export of
 * the node's data plane (system/data-plane.ts: one qemu-storage-daemon per
 * node), so a loop device can be attached to it (nbd is missing on some nodes;
 * FUSE is everywhere). Each volume's nodes carry its tag in their names, so
 * one volume's commands never touch another's nodes.
 *
 * The export outlives the node plugin: the ExportHandle (plain JSON) plus the
 * files in the volume's state directory are all a later process needs to
 * check, resize or stop it.
 *
 * Options, and why:
 * - qemu ≥ 11 (the data plane says): the export runs on all the daemon's
 *   iothreads with growable=on, which sets FUSE up for asynchronous direct I/O
 *   (~32 requests in flight instead of one), and the loop device over it uses
 *   direct I/O. Never a direct-io loop over an export without it: qemu 7.2's
 *   export corrupts data so (NODE-FACTS). On 7.2 the loop stays buffered.
 * - aio=io_uring,cache.direct=on: no second copy of the data in the node's
 *   page cache (the filesystem inside the loop caches already), and flushes
 *   reach the share. Where the image's filesystem has no O_DIRECT, qemu says so
 *   and we retry with cache.direct=off; where io_uring is unavailable (seccomp,
 *   sysctl, old kernel), with aio=threads. The handle records what was used.
 * - locking=on: qemu's image locks stay on (auto would quietly drop them where
 *   OFD locks are missing); a second writer, or a writer beside readers, fails.
 *   Never force-share.
 * - read-only on every node plus a read-only export for readers: they take
 *   shared locks and coexist with other readers only.
 * - discard=unmap for writers: fstrim in the volume punches holes in the image,
 *   so thin volumes give space back to the share.
 * - raw images are exported from the file node itself: no format layer per request.
 */
import { mkdir, open, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { type Runner } from './command.js';
import { daemonRunning, type DataPlane, type DataPlaneFeatures } from './data-plane.js';
import { mountAt, readMountInfo } from './mountinfo.js';
import { Qmp, type QmpValue } from './qmp.js';
import { describe, imageLocked, internal, outOfRange, precondition } from '../domain/errors.js';
import type { Format } from '../domain/parameters.js';

export interface ExportHandle {
  image: string;
  format: Format;
  readOnly: boolean;
  /** The raw view of the image: attach a loop device here. */
  exportFile: string;
  /** The data plane's monitor (or, in records of 0.1, the volume's own daemon's). */
  qmpSocket: string;
  /** The export's id in the data plane; absent in records of 0.1 (one daemon per volume, export0). */
  id?: string;
  /** The volume's tag: every node of the volume's has it after its first letter. */
  tag?: string;
  aio: 'io_uring' | 'threads';
  directIo: boolean;
  /** The loop device over the export may use direct I/O: the export does asynchronous direct I/O. */
  loopDirectIo?: boolean;
  /** The qemu version serving it and the iothreads it runs on. */
  qemu?: string;
  threads?: number;
  /** Records of 0.1: the volume's own daemon. */
  pid?: number;
  pidFile?: string;
}

/** A layer under the image, opened read-only under a name of ours so later QMP commands can name it. */
export interface ChainLayer {
  node: string;
  image: string;
  format: Format;
}

export interface StartOptions {
  format: Format;
  readOnly: boolean;
  /** The volume's tag (16 hex digits): in its export's id and its nodes' names. */
  tag: string;
  /**
   * The image's backing chain, nearest layer first. Given, qemu opens it as
   * these named nodes instead of following the images' backing references.
   * Their names must carry the tag.
   */
  chain?: readonly ChainLayer[];
  /** Holds the export file and export.json; created if missing. */
  stateDir: string;
}

export interface QemuExports {
  /**
   * Idempotent for the same image and mode in the same stateDir (returns the
   * running export); another export there → 'precondition'; an image locked
   * by another process → 'precondition' with qemu's message.
   */
  start(image: string, options: StartOptions): Promise<ExportHandle>;
  /** The export is served and its FUSE mount is live. */
  isAlive(handle: ExportHandle): Promise<boolean>;
  /** Grows the image (never shrinks); the export file shows the new size on return. */
  resize(handle: ExportHandle, bytes: bigint): Promise<void>;
  /**
   * Moves the export's writes to `overlay`, a qcow2 file backed by the image
   * it serves now (blockdev-add, then blockdev-snapshot, which flushes the old
   * top first): from then on the old image is not written. Idempotent: an
   * export already on `nodeName` is left as it is.
   */
  switchTo(handle: ExportHandle, overlay: string, nodeName: string): Promise<void>;
  /** The node the export serves now (the top of its chain). */
  top(handle: ExportHandle): Promise<string>;
  /**
   * Makes node `top` (added by switchTo) read through `base` — an image with
   * the same data as its current backing chain — and closes the old chain
   * (blockdev-add, blockdev-reopen, blockdev-del). The data the export shows
   * does not change.
   */
  repoint(handle: ExportHandle, top: string, base: ChainLayer): Promise<void>;
  /**
   * Starts copying the layers between `device` and `baseNode` (all of them
   * without one) into `device`, which then reads through `baseNode`, its header
   * naming `backingFile` (block-stream). Returns at once: the job runs in qemu.
   */
  stream(handle: ExportHandle, job: { id: string; device: string; baseNode?: string | undefined; backingFile?: string | undefined }): Promise<void>;
  /** Ids of the block jobs running for the export's volume. */
  jobs(handle: ExportHandle): Promise<string[]>;
  /**
   * Removes the export and the volume's nodes, unmounts any leftover FUSE
   * mount and removes the state files. Idempotent; works from a fresh
   * process. Detach loop devices from the export file first.
   */
  stop(handle: ExportHandle): Promise<void>;
  /** stop() for whatever export of volume `tag` there is, from its state dir alone: a crash may have left one unrecorded. */
  stopIn(stateDir: string, tag: string): Promise<void>;
}

/** qemu node names: a letter, then at most 30 of [A-Za-z0-9_.-]. A tag fits with a kind letter and 13 more. */
export const TAG = /^[0-9a-f]{16}$/;
export const exportId = (tag: string): string => `e${tag}`;
const topNodeOf = (tag: string): string => `t${tag}`;
/** The file node under a format node we add (named so a blockdev-reopen can name it). */
const fileNode = (node: string): string => `${node}f`;
/** Whether node `name` is one of volume `tag`'s (a kind letter, then the tag). */
const owns = (tag: string, name: string): boolean => name.slice(1, 1 + tag.length) === tag;

// 'Failed to get "write" lock' (writer) or 'Failed to get shared "write" lock' (reader).
const LOCK_CONFLICT = /Failed to get (shared )?".*" lock/;

interface Intent {
  image: string;
  format: Format;
  readOnly: boolean;
  aio?: ExportHandle['aio'];
  directIo?: boolean;
}

/** One QMP command of an export's start, in order. */
export interface Step {
  command: string;
  args: Record<string, QmpValue>;
}

/**
 * The QMP commands that export `image`: the chain bottom first, each naming
 * the one below it; the image's file and format nodes; the export.
 */
export function exportSteps(
  image: string,
  o: StartOptions,
  exportFile: string,
  aio: ExportHandle['aio'],
  directIo: boolean,
  f: DataPlaneFeatures,
): Step[] {
  const common = o.readOnly ? { 'read-only': true } : { discard: 'unmap' };
  const file = (filename: string): Record<string, QmpValue> => ({ driver: 'file', filename, aio, cache: { direct: directIo }, locking: 'on' });
  const chain = o.format === 'qcow2' ? (o.chain ?? []) : [];
  const steps: Step[] = chain
    .map((layer, i) => {
      const below = chain[i + 1];
      return {
        command: 'blockdev-add',
        args: {
          driver: layer.format,
          'node-name': layer.node,
          'read-only': true,
          file: file(layer.image),
          ...(below === undefined ? {} : { backing: below.node }),
        },
      };
    })
    .reverse();
  const top = topNodeOf(o.tag);
  steps.push({ command: 'blockdev-add', args: { ...file(image), 'node-name': fileNode(top), ...common } });
  // Without a chain, qemu follows the image's own backing reference, as qemu-img does.
  const backing = chain[0] === undefined ? {} : { backing: chain[0].node };
  if (o.format === 'qcow2')
    steps.push({ command: 'blockdev-add', args: { driver: 'qcow2', 'node-name': top, file: fileNode(top), ...backing, ...common } });
  steps.push({ command: 'block-export-add', args: exportArgs(o, exportFile, o.format === 'qcow2' ? top : fileNode(top), f) });
  return steps;
}

function exportArgs(o: StartOptions, exportFile: string, node: string, f: DataPlaneFeatures): Record<string, QmpValue> {
  const threads = f.multiThread && f.iothreads.length > 0 ? { iothread: f.iothreads } : {};
  return {
    type: 'fuse',
    id: exportId(o.tag),
    'node-name': node,
    mountpoint: exportFile,
    writable: !o.readOnly,
    ...(loopDirect(o, f) ? { growable: true } : {}),
    ...threads,
  };
}

/** growable (and with it async direct I/O) only on a writable export of a qemu that has it. */
const loopDirect = (o: { readOnly: boolean }, f: DataPlaneFeatures): boolean => f.asyncDirectIo && !o.readOnly;

const readText = (path: string): Promise<string | undefined> =>
  readFile(path, 'utf8').catch((e: unknown) => {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw e;
  });

const fuseMounted = async (path: string): Promise<boolean> => mountAt(await readMountInfo(), path)?.fsType.startsWith('fuse') === true;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const listOf = <T>(r: { ok: true; value: unknown } | { ok: false; error: string }): T[] => (r.ok && Array.isArray(r.value) ? (r.value as T[]) : []);

export function makeQemuExports(plane: DataPlane, run: Runner, log: Logger): QemuExports {
  const legacy = (h: ExportHandle): boolean => h.id === undefined;
  const idOf = (h: ExportHandle): string => h.id ?? 'export0';

  /** A QMP session with the daemon serving `h`. */
  function qmp<T>(h: ExportHandle, ms: number, body: (q: Qmp) => Promise<T>): Promise<T> {
    return legacy(h) ? Qmp.session(h.qmpSocket, ms, body) : plane.session(ms, (q) => body(q));
  }

  /** Removes the nodes nothing uses any more: parents before children, so round until nothing changes. */
  async function dropNodes(q: Qmp, names: readonly string[]): Promise<string[]> {
    let left = [...names];
    for (let progress = true; progress && left.length > 0;) {
      progress = false;
      for (const name of [...left]) {
        const r = await q.execute('blockdev-del', { 'node-name': name });
        if (r.ok || /Cannot find node|Failed to find node/i.test(r.error)) {
          left = left.filter((n) => n !== name);
          progress = true;
        }
      }
    }
    return left;
  }

  const namedNodes = async (q: Qmp): Promise<string[]> =>
    listOf<{ 'node-name'?: string }>(await q.execute('query-named-block-nodes', { flat: true }))
      .map((n) => n['node-name'] ?? '')
      .filter((n) => n !== '' && !n.startsWith('#'));

  /** Removes volume `tag`'s export (if any) and every node of its, in one session. */
  async function removeIn(q: Qmp, tag: string): Promise<void> {
    const id = exportId(tag);
    if (listOf<{ id: string }>(await q.execute('query-block-exports')).some((e) => e.id === id)) {
      const del = await q.execute('block-export-del', { id });
      // The export goes once its requests are done; the FUSE unmount is part of that.
      if (del.ok && !(await q.event('BLOCK_EXPORT_DELETED', 10_000))) log.warn({ id }, 'the export did not report its removal in 10 s');
    }
    const left = await dropNodes(
      q,
      (await namedNodes(q)).filter((n) => owns(tag, n)),
    );
    if (left.length > 0) throw internal(`the data plane still holds nodes ${left.join(', ')} of the volume after its export was removed`);
  }

  /** The export's FUSE mount (a dead daemon leaves a stale one) and the state files. */
  async function clearDir(dir: string, image: string): Promise<void> {
    const exportFile = join(dir, 'export.raw');
    for (let round = 0; round < 3 && (await fuseMounted(exportFile)); round++) {
      // "Transport endpoint is not connected"; a loop device still on it makes it busy.
      await run(['umount', exportFile]).catch(() => run(['umount', '-l', exportFile]));
    }
    if (await fuseMounted(exportFile)) throw internal(`cannot unmount the FUSE export of ${image} at ${exportFile}`);
    await Promise.all(['export.raw', 'export.json', 'export.json.tmp', 'qmp.sock', 'qsd.pid'].map((f) => rm(join(dir, f), { force: true })));
  }

  /** A daemon of 0.1 serving this one volume from its state dir: ended as gently as it lets us. */
  async function endLegacy(dir: string, image: string): Promise<void> {
    const pid = Number.parseInt((await readText(join(dir, 'qsd.pid'))) ?? '', 10);
    if (!Number.isInteger(pid) || pid <= 0 || !(await daemonRunning(pid, join(dir, 'qsd.pid')))) return;
    try {
      await Qmp.session(join(dir, 'qmp.sock'), 5_000, async (q) => {
        const del = await q.execute('block-export-del', { id: 'export0' });
        if (del.ok) await q.event('BLOCK_EXPORT_DELETED', 3_000);
        await q.execute('quit').catch(() => undefined);
      });
    } catch (e) {
      log.warn({ image, pid, err: describe(e) }, 'qemu-storage-daemon did not answer QMP');
    }
    for (const signal of [undefined, 'SIGTERM', 'SIGKILL'] as const) {
      if (signal !== undefined) {
        log.warn({ image, pid, signal }, 'qemu-storage-daemon still running; signalling it');
        try {
          process.kill(pid, signal);
        } catch {
          return;
        }
      }
      for (const end = Date.now() + 5_000; Date.now() < end; await sleep(50)) if (!(await daemonRunning(pid, join(dir, 'qsd.pid')))) return;
    }
    throw internal(`qemu-storage-daemon ${pid} for ${image} survived SIGKILL`);
  }

  async function start(imageArg: string, o: StartOptions): Promise<ExportHandle> {
    if (!TAG.test(o.tag)) throw internal(`volume tag ${o.tag} is not 16 hex digits`);
    const image = resolve(imageArg);
    await mkdir(o.stateDir, { recursive: true, mode: 0o700 });
    const dir = await realpath(o.stateDir); // mountinfo shows real paths
    const exportFile = join(dir, 'export.raw');
    const intentFile = join(dir, 'export.json');
    await endLegacy(dir, image);
    return plane.session(60_000, async (q, f) => {
      const handle = (aio: ExportHandle['aio'], directIo: boolean): ExportHandle => ({
        image,
        format: o.format,
        readOnly: o.readOnly,
        exportFile,
        qmpSocket: plane.socket,
        id: exportId(o.tag),
        tag: o.tag,
        aio,
        directIo,
        loopDirectIo: loopDirect(o, f),
        qemu: f.version,
        threads: f.multiThread ? f.iothreads.length : 1,
      });
      let intent: Partial<Intent> = {};
      try {
        intent = JSON.parse((await readText(intentFile)) ?? '{}') as Partial<Intent>;
      } catch {
        // unreadable: treated as another export's
      }
      const served = listOf<{ id: string }>(await q.execute('query-block-exports')).some((e) => e.id === exportId(o.tag));
      if (served && (intent.image !== image || intent.format !== o.format || intent.readOnly !== o.readOnly)) {
        throw precondition(`${dir} already has an export of ${intent.image ?? 'another image'}`);
      }
      if (served && (await fuseMounted(exportFile))) return handle(intent.aio ?? 'io_uring', intent.directIo ?? true);
      await removeIn(q, o.tag); // leftovers of a crash half-way through a start or stop
      await clearDir(dir, image);
      let aio: ExportHandle['aio'] = 'io_uring';
      let directIo = true;
      for (;;) {
        // Written before the export starts, so a crash right after it still leaves it adoptable.
        await writeFile(`${intentFile}.tmp`, JSON.stringify({ image, format: o.format, readOnly: o.readOnly, aio, directIo } satisfies Intent));
        await rename(`${intentFile}.tmp`, intentFile);
        await (await open(exportFile, 'a', 0o600)).close(); // a FUSE export mounts over a regular file
        const failed = await runSteps(q, exportSteps(image, o, exportFile, aio, directIo, f));
        if (failed === undefined) break;
        await removeIn(q, o.tag);
        await clearDir(dir, image);
        if (LOCK_CONFLICT.test(failed)) throw imageLocked(`image ${image} is in use by another process (qemu image lock): ${failed}`);
        if (directIo && /O_DIRECT/.test(failed)) directIo = false;
        else if (aio === 'io_uring' && /io_uring/i.test(failed)) aio = 'threads';
        else throw internal(`cannot export ${image}: ${failed}`);
        log.info({ image, aio, directIo, reason: failed }, 'qemu export falls back to other I/O options');
      }
      if (!(await fuseMounted(exportFile))) {
        await removeIn(q, o.tag);
        throw internal(`the export of ${image} did not mount ${exportFile}`);
      }
      log.debug({ image, aio, directIo, qemu: f.version, threads: f.iothreads.length }, 'qemu export started');
      return handle(aio, directIo);
    });
  }

  /** Runs the steps in order; the first failure's message, or undefined when all went through. */
  async function runSteps(q: Qmp, steps: readonly Step[]): Promise<string | undefined> {
    for (const step of steps) {
      const r = await q.execute(step.command, step.args);
      if (!r.ok) return r.error;
    }
    return undefined;
  }

  async function isAlive(h: ExportHandle): Promise<boolean> {
    if (!(await fuseMounted(h.exportFile))) return false;
    if (legacy(h)) return h.pid !== undefined && h.pidFile !== undefined && daemonRunning(h.pid, h.pidFile);
    try {
      return await plane.session(5_000, async (q) => listOf<{ id: string }>(await q.execute('query-block-exports')).some((e) => e.id === h.id));
    } catch {
      return false; // the data plane is down or gone
    }
  }

  /** The node the export serves now: after a snapshot switch, no longer the one it started with. */
  async function topNode(q: Qmp, h: ExportHandle): Promise<string> {
    const exp = listOf<{ id?: string; 'node-name'?: string }>(await q.execute('query-block-exports')).find((e) => e.id === idOf(h));
    if (exp?.['node-name'] === undefined) throw internal(`the qemu export of ${h.image} is missing from query-block-exports`);
    return exp['node-name'];
  }

  async function switchTo(h: ExportHandle, overlay: string, node: string): Promise<void> {
    if (h.readOnly) throw precondition(`the export of ${h.image} is read-only; it has no writes to move`);
    await qmp(h, 30_000, async (q) => {
      const top = await topNode(q, h);
      if (top === node) return;
      const file = {
        driver: 'file',
        'node-name': fileNode(node),
        filename: overlay,
        aio: h.aio,
        cache: { direct: h.directIo },
        locking: 'on',
        discard: 'unmap',
      };
      const overlayNode = { driver: 'qcow2', 'node-name': node, file: fileNode(node), backing: null, discard: 'unmap' };
      for (const args of [file, overlayNode]) {
        const add = await q.execute('blockdev-add', args);
        // Added before a crash of the plugin, but not switched: the node is there to use.
        if (!add.ok && !/Duplicate node/i.test(add.error)) throw internal(`blockdev-add of ${args['node-name']} for ${overlay} failed: ${add.error}`);
      }
      const snap = await q.execute('blockdev-snapshot', { node: top, overlay: node });
      if (!snap.ok) {
        await dropNodes(q, [node, fileNode(node)]);
        throw internal(`blockdev-snapshot of ${h.image} onto ${overlay} failed: ${snap.error}`);
      }
    });
  }

  async function repoint(h: ExportHandle, top: string, base: ChainLayer): Promise<void> {
    await qmp(h, 60_000, async (q) => {
      const file = { driver: 'file', filename: base.image, aio: h.aio, cache: { direct: h.directIo }, locking: 'on' };
      const add = await q.execute('blockdev-add', { driver: base.format, 'node-name': base.node, 'read-only': true, file });
      if (!add.ok && !/Duplicate node/i.test(add.error)) throw internal(`blockdev-add of ${base.image} failed: ${add.error}`);
      const reopen = await q.execute('blockdev-reopen', {
        options: [{ driver: 'qcow2', 'node-name': top, file: fileNode(top), backing: base.node, discard: 'unmap' }],
      });
      if (!reopen.ok) throw internal(`blockdev-reopen of ${h.image} onto ${base.image} failed: ${reopen.error}`);
      // The volume's other nodes are the old chain: let them go, so its files can be removed.
      const keep = new Set([top, fileNode(top), base.node]);
      const mine = (n: string): boolean => (h.tag === undefined ? true : owns(h.tag, n));
      const left = await dropNodes(
        q,
        (await namedNodes(q)).filter((n) => mine(n) && !keep.has(n)),
      );
      if (left.length > 0) log.warn({ image: h.image, nodes: left }, 'old layers are still in use in the export; they close when it stops');
    });
  }

  async function stream(h: ExportHandle, job: { id: string; device: string; baseNode?: string | undefined; backingFile?: string | undefined }) {
    await qmp(h, 10_000, async (q) => {
      const base = {
        ...(job.baseNode === undefined ? {} : { 'base-node': job.baseNode }),
        ...(job.backingFile === undefined ? {} : { 'backing-file': job.backingFile }),
      };
      const r = await q.execute('block-stream', { 'job-id': job.id, device: job.device, ...base });
      if (!r.ok) throw internal(`block-stream into ${job.device} of ${h.image} failed: ${r.error}`);
    });
  }

  async function jobs(h: ExportHandle): Promise<string[]> {
    return qmp(h, 10_000, async (q) => {
      // A job started with a job-id reports it as `device`; the node names of its volume carry its tag.
      const all = listOf<{ device?: string }>(await q.execute('query-block-jobs')).map((j) => j.device ?? '');
      return h.tag === undefined ? all : all.filter((id) => owns(h.tag ?? '', id));
    });
  }

  async function resize(h: ExportHandle, bytes: bigint): Promise<void> {
    if (h.readOnly) throw precondition(`the export of ${h.image} is read-only; it cannot be resized`);
    if (!(await isAlive(h))) throw precondition(`the export of ${h.image} is not running`);
    const size = async (): Promise<bigint> => (await stat(h.exportFile, { bigint: true })).size;
    const current = await size();
    if (bytes < current) throw outOfRange(`image ${h.image} is ${current} bytes; shrinking to ${bytes} is not supported`);
    if (bytes === current) return;
    await qmp(h, 30_000, async (q) => {
      const r = await q.execute('block_resize', { 'node-name': await topNode(q, h), size: bytes });
      if (!r.ok) throw internal(`block_resize of ${h.image} to ${bytes} bytes failed: ${r.error}`);
    });
    // The kernel caches the export file's attributes for qemu's 1 s FUSE timeout and a loop
    // --set-capacity reads that cached size: return only once a stat shows the new one.
    for (const end = Date.now() + 5_000; (await size()) !== bytes; await sleep(100)) {
      if (Date.now() > end) throw internal(`the export of ${h.image} still shows the old size after block_resize`);
    }
  }

  async function stopIn(stateDir: string, tag: string): Promise<void> {
    const dir = await realpath(stateDir).catch((e: unknown) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // never started: nothing to stop
      throw e;
    });
    let image = dir ?? stateDir;
    try {
      image = (JSON.parse((await readText(join(image, 'export.json'))) ?? '{}') as Partial<Intent>).image ?? image;
    } catch {
      // unreadable intent: the messages name the directory instead
    }
    if (dir !== undefined) await endLegacy(dir, image);
    // A data plane that is not running serves nothing of ours; do not start one to find that out.
    if ((await plane.look()) !== undefined) await plane.session(30_000, (q) => removeIn(q, tag));
    if (dir !== undefined) await clearDir(dir, image);
  }

  async function stop(h: ExportHandle): Promise<void> {
    const dir = dirname(h.exportFile);
    if (legacy(h)) {
      await endLegacy(dir, h.image);
      await clearDir(dir, h.image);
      return;
    }
    await stopIn(dir, h.tag ?? basename(dir));
  }

  return { start, isAlive, resize, switchTo, repoint, stream, jobs, top: (h) => qmp(h, 10_000, (q) => topNode(q, h)), stop, stopIn };
}
