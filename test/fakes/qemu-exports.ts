/**
 * QemuExports without qemu: one pretend data plane serving exports by volume
 * tag, as system/qemu-export.ts drives the real one. Each export is a graph
 * of named nodes, each holding its image file open (so, as in qemu, the
 * renames of a layer switch change nothing for it), with a backing node
 * given by name or, as qemu does without one, opened from the image's
 * header. An export's file is a plain file in its state directory; a
 * FakeLoopDevices given `view` reads the guest data of the export's top.
 *
 * What the node code relies on: start is idempotent for the same image and
 * mode, another image in the same directory is refused, leftovers of a dead
 * export are cleared; qemu's image lock on the top's inode (a writer
 * excludes any other export of it and a FakeQemuImg `hold`, which it shares
 * when given; readers share), refused with `imageLocked`; node names with
 * the tag; switchTo putting an overlay on top (and moving the write lock to
 * it); repoint giving the top a new backing and closing the old chain;
 * block-stream jobs that run until `finishJobs`, refused into a writable
 * export's top (whose resize permission the FUSE export holds); `kill` for
 * an export, or the whole data plane, that died: not alive, its file
 * unreadable, until a stop or a new start clears it.
 *
 * Not modelled: the locks of backing layers, aio and cache fallbacks,
 * records of 0.1 (one daemon per volume).
 */
import { mkdir, realpath, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { imageLocked, internal, outOfRange, precondition } from '../../src/domain/errors.js';
import type { Format } from '../../src/domain/parameters.js';
import { TAG, exportId, type ChainLayer, type ExportHandle, type QemuExports, type StartOptions } from '../../src/system/qemu-export.js';
import { backingPath, inode, SECTOR } from './image-file.js';
import { loadQcow2, openFile, qcow2Medium, rawMedium, storeQcow2, type Medium, type OpenFile } from './medium.js';
import type { FakeQemuImg } from './qemu-img.js';
import { Recorder } from './recorder.js';

export type QemuExportsOp = 'start' | 'isAlive' | 'resize' | 'switchTo' | 'top' | 'repoint' | 'stream' | 'jobs' | 'stop' | 'stopIn';

export interface FakeQemuExportsOptions {
  /** Shares qemu's image locks with it: a writable export holds its image there, and a hold there locks the image. */
  qemuImg?: FakeQemuImg;
  /** qemu ≥ 11: writable exports do asynchronous direct I/O, so the loop over them may use direct I/O (default true). */
  asyncDirectIo?: boolean;
  socket?: string;
}

interface BlockNode {
  file: OpenFile;
  format: Format;
  backing: string | undefined;
  medium: Medium;
}

interface Job {
  device: string;
  baseNode: string | undefined;
  backingFile: string | undefined;
}

interface Served {
  handle: ExportHandle;
  /** The node the export serves. */
  top: string;
  nodes: Map<string, BlockNode>;
  jobs: Map<string, Job>;
  /** The write lock it holds in the shared FakeQemuImg. */
  release: (() => void) | undefined;
  anonymous: number;
}

const STATE_FILES = ['export.raw', 'export.json', 'export.json.tmp', 'qmp.sock', 'qsd.pid'];

export class FakeQemuExports extends Recorder<QemuExportsOp> implements QemuExports {
  private readonly served = new Map<string, Served>();
  /** Export files of exports that died: a dead FUSE mount, until stopped or started again. */
  private readonly dead = new Set<string>();

  constructor(private readonly options: FakeQemuExportsOptions = {}) {
    super();
  }

  /** What a loop device over `file` reads (FakeLoopDevices' views). */
  view(file: string): Medium | 'dead' | undefined {
    if (this.dead.has(file)) return 'dead';
    const s = [...this.served.values()].find((e) => e.handle.exportFile === file);
    return s?.nodes.get(s.top)?.medium;
  }

  /** The tags of the exports served now. */
  tags(): string[] {
    return [...this.served.keys()];
  }

  /** The node names export `tag` holds, and the image each was opened from. */
  nodes(tag: string): Record<string, string> {
    return Object.fromEntries([...(this.served.get(tag)?.nodes ?? [])].map(([n, b]) => [n, b.file.path]));
  }

  /** Export `tag` dies (the data plane lost it), or, without a tag, the whole data plane does. */
  async kill(tag?: string): Promise<void> {
    for (const [t, s] of this.served) {
      if (tag !== undefined && t !== tag) continue;
      this.dead.add(s.handle.exportFile);
      await this.drop(t);
    }
  }

  /** Finishes every running block-stream job: its device holds what the layers above its base showed, and reads through the base. */
  async finishJobs(): Promise<void> {
    for (const s of this.served.values()) {
      for (const [id, job] of s.jobs) {
        s.jobs.delete(id);
        const into = s.nodes.get(job.device);
        if (into === undefined) continue;
        const base = job.baseNode === undefined ? undefined : s.nodes.get(job.baseNode);
        const size = Number(await into.medium.size());
        const [all, below] = await Promise.all([into.medium.read(0, size), base?.medium.read(0, size) ?? Buffer.alloc(size)]);
        const img = await loadQcow2(into.file);
        for (let i = 0; i * SECTOR < size; i++) {
          const [a, b] = [all.subarray(i * SECTOR, (i + 1) * SECTOR), below.subarray(i * SECTOR, (i + 1) * SECTOR)];
          if (!img.sectors.has(i) && !a.equals(b)) img.sectors.set(i, Buffer.from(a));
        }
        await storeQcow2(into.file, { ...img, backing: job.backingFile, backingFormat: job.backingFile === undefined ? undefined : base?.format });
        into.backing = job.baseNode;
        await this.prune(s);
      }
    }
  }

  async start(imageArg: string, o: StartOptions): Promise<ExportHandle> {
    this.act('start', imageArg, o);
    if (!TAG.test(o.tag)) throw internal(`volume tag ${o.tag} is not 16 hex digits`);
    const image = resolve(imageArg);
    await mkdir(o.stateDir, { recursive: true, mode: 0o700 });
    const dir = await realpath(o.stateDir);
    const running = this.served.get(o.tag);
    if (running !== undefined) {
      const h = running.handle;
      if (h.image !== image || h.format !== o.format || h.readOnly !== o.readOnly) throw precondition(`${dir} already has an export of ${h.image}`);
      return { ...h };
    }
    await this.clear(dir);
    const ino = await inode(image);
    const others = [...this.served.values()].filter((s) => !o.readOnly || !s.handle.readOnly);
    if (others.some((s) => s.nodes.get(s.top)?.file.inode === ino) || (await this.options.qemuImg?.holds(image)) === true) {
      const lock = o.readOnly ? 'shared "write"' : '"write"';
      throw imageLocked(`image ${image} is in use by another process (qemu image lock): Failed to get ${lock} lock`);
    }
    const asyncDirectIo = this.options.asyncDirectIo ?? true;
    const exportFile = join(dir, 'export.raw');
    const handle: ExportHandle = {
      image,
      format: o.format,
      readOnly: o.readOnly,
      exportFile,
      qmpSocket: this.options.socket ?? '/run/filedriver-fake/qmp.sock',
      id: exportId(o.tag),
      tag: o.tag,
      aio: 'io_uring',
      directIo: true,
      loopDirectIo: asyncDirectIo && !o.readOnly,
      qemu: asyncDirectIo ? '11.0.0' : '7.2.0',
      threads: asyncDirectIo ? 2 : 1,
    };
    const s: Served = {
      handle,
      top: o.format === 'qcow2' ? `t${o.tag}` : `t${o.tag}f`,
      nodes: new Map(),
      jobs: new Map(),
      release: undefined,
      anonymous: 0,
    };
    try {
      // The chain bottom first, each naming the one below; the bottom one, and a top without a chain, follow their headers.
      const chain = o.format === 'qcow2' ? [...(o.chain ?? [])].reverse() : [];
      let below: string | undefined;
      for (const layer of chain) below = await this.add(s, layer.node, layer.image, layer.format, true, below);
      await this.add(s, s.top, image, o.format, o.readOnly, below);
    } catch (e) {
      await closeAll(s);
      throw internal(`cannot export ${image}: ${(e as Error).message}`);
    }
    await writeFile(join(dir, 'export.json'), JSON.stringify({ image, format: o.format, readOnly: o.readOnly, aio: 'io_uring', directIo: true }));
    await writeFile(exportFile, '');
    s.release = o.readOnly ? undefined : await this.options.qemuImg?.hold(image);
    this.served.set(o.tag, s);
    return { ...handle };
  }

  async isAlive(h: ExportHandle): Promise<boolean> {
    this.act('isAlive', h);
    return this.find(h) !== undefined;
  }

  async resize(h: ExportHandle, bytes: bigint): Promise<void> {
    this.act('resize', h, bytes);
    if (h.readOnly) throw precondition(`the export of ${h.image} is read-only; it cannot be resized`);
    const s = this.find(h);
    if (s === undefined) throw precondition(`the export of ${h.image} is not running`);
    const top = s.nodes.get(s.top) as BlockNode;
    const current = await top.medium.size();
    if (bytes < current) throw outOfRange(`image ${h.image} is ${current} bytes; shrinking to ${bytes} is not supported`);
    if (bytes === current) return;
    if (top.format === 'qcow2') await storeQcow2(top.file, { ...(await loadQcow2(top.file)), sizeBytes: bytes });
    else await top.file.handle.truncate(Number(bytes));
  }

  async switchTo(h: ExportHandle, overlay: string, nodeName: string): Promise<void> {
    this.act('switchTo', h, overlay, nodeName);
    if (h.readOnly) throw precondition(`the export of ${h.image} is read-only; it has no writes to move`);
    const s = this.serving(h);
    if (s.top === nodeName) return;
    // blockdev-add (backing: null), then blockdev-snapshot: the old top goes under it, read-only, and its write lock with it.
    if (!s.nodes.has(nodeName)) {
      await this.add(s, nodeName, overlay, 'qcow2', false, undefined, false).catch((e: unknown) => {
        throw internal(`blockdev-add of ${nodeName}f for ${overlay} failed: ${(e as Error).message}`);
      });
    }
    (s.nodes.get(nodeName) as BlockNode).backing = s.top;
    s.top = nodeName;
    s.release?.();
    s.release = await this.options.qemuImg?.hold(overlay);
  }

  async top(h: ExportHandle): Promise<string> {
    this.act('top', h);
    return this.serving(h).top;
  }

  async repoint(h: ExportHandle, top: string, base: ChainLayer): Promise<void> {
    this.act('repoint', h, top, base);
    const s = this.serving(h);
    if (!s.nodes.has(base.node)) {
      await this.add(s, base.node, base.image, base.format, true, undefined).catch((e: unknown) => {
        throw internal(`blockdev-add of ${base.image} failed: ${(e as Error).message}`);
      });
    }
    const node = s.nodes.get(top);
    if (node === undefined) throw internal(`blockdev-reopen of ${h.image} onto ${base.image} failed: Cannot find node ${top}`);
    node.backing = base.node;
    await this.prune(s);
  }

  async stream(h: ExportHandle, job: { id: string; device: string; baseNode?: string | undefined; backingFile?: string | undefined }): Promise<void> {
    this.act('stream', h, job);
    const s = this.serving(h);
    const fail = (why: string) => internal(`block-stream into ${job.device} of ${h.image} failed: ${why}`);
    if (!s.nodes.has(job.device)) throw fail(`Cannot find device='${job.device}' nor node-name='${job.device}'`);
    if (job.baseNode !== undefined && !s.nodes.has(job.baseNode)) throw fail(`Cannot find node ${job.baseNode}`);
    if (s.jobs.has(job.id)) throw fail(`Job ID '${job.id}' already in use`);
    if (job.device === s.top && !h.readOnly) {
      throw fail(`Permission conflict on node '${job.device}': permissions 'resize' are both required by an export and unshared by a stream job`);
    }
    s.jobs.set(job.id, { device: job.device, baseNode: job.baseNode, backingFile: job.backingFile });
  }

  async jobs(h: ExportHandle): Promise<string[]> {
    this.act('jobs', h);
    return [...(this.find(h)?.jobs.keys() ?? [])];
  }

  async stop(h: ExportHandle): Promise<void> {
    this.act('stop', h);
    const dir = dirname(h.exportFile);
    await this.remove(dir, h.tag ?? basename(dir));
  }

  async stopIn(stateDir: string, tag: string): Promise<void> {
    this.act('stopIn', stateDir, tag);
    await this.remove(stateDir, tag);
  }

  /**
   * Opens `image` as node `name` over node `backing`, or, with none given and
   * `follow`, over its header's backing reference (resolved from the path it
   * is opened by, opened read-only as an unnamed node, as qemu does).
   */
  private async add(
    s: Served,
    name: string,
    image: string,
    format: Format,
    readOnly: boolean,
    backing: string | undefined,
    follow = true,
  ): Promise<string> {
    const file = await openFile(image, readOnly);
    const node: BlockNode = { file, format, backing, medium: rawMedium(file) };
    s.nodes.set(name, node);
    if (format === 'qcow2') {
      const header = await loadQcow2(file);
      node.medium = qcow2Medium(file, () => (node.backing === undefined ? undefined : s.nodes.get(node.backing)?.medium));
      if (backing === undefined && follow && header.backing !== undefined) {
        node.backing = await this.add(
          s,
          `#block${s.anonymous++}`,
          backingPath(image, header.backing),
          header.backingFormat ?? 'raw',
          true,
          undefined,
        );
      }
    }
    return name;
  }

  /** Closes the nodes nothing reads any more: those not below the top nor in a job. */
  private async prune(s: Served): Promise<void> {
    const keep = new Set<string>();
    for (const start of [s.top, ...[...s.jobs.values()].flatMap((j) => [j.device, j.baseNode ?? ''])]) {
      for (let n: string | undefined = start; n !== undefined && !keep.has(n); n = s.nodes.get(n)?.backing) if (s.nodes.has(n)) keep.add(n);
    }
    for (const [name, node] of s.nodes) {
      if (keep.has(name)) continue;
      s.nodes.delete(name);
      await node.file.handle.close();
    }
  }

  private find(h: ExportHandle): Served | undefined {
    const s = this.served.get(h.tag ?? '');
    return s !== undefined && s.handle.id === h.id ? s : undefined;
  }

  /** The export `h` names, as a QMP command needs it (query-block-exports). */
  private serving(h: ExportHandle): Served {
    const s = this.find(h);
    if (s === undefined) throw internal(`the qemu export of ${h.image} is missing from query-block-exports`);
    return s;
  }

  private async drop(tag: string): Promise<void> {
    const s = this.served.get(tag);
    if (s === undefined) return;
    this.served.delete(tag);
    s.release?.();
    await closeAll(s);
  }

  private async remove(stateDir: string, tag: string): Promise<void> {
    await this.drop(tag);
    const dir = await realpath(stateDir).catch(() => undefined);
    if (dir !== undefined) await this.clear(dir);
  }

  /** The state files of whatever export was in `dir` (a dead one's FUSE mount goes with them). */
  private async clear(dir: string): Promise<void> {
    this.dead.delete(join(dir, 'export.raw'));
    await Promise.all(STATE_FILES.map((f) => rm(join(dir, f), { force: true })));
  }
}

async function closeAll(s: Served): Promise<void> {
  await Promise.all([...s.nodes.values()].map((n) => n.file.handle.close()));
  s.nodes.clear();
}
