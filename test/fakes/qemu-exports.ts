/**
 * QemuExports without qemu: one pretend data plane serving exports by volume
 * tag, as system/qemu-export.ts drives the real one. An export's file is a
 * plain file in its state directory; a FakeLoopDevices given `view` reads the
 * guest data of the image the export serves (its top, after a switch). What
 * the node code relies on: start is idempotent for the same image and mode,
 * another image in the same directory is refused, leftovers of a dead export
 * are cleared; qemu's image locks on the inode (a writer excludes any other
 * export of the image and a FakeQemuImg `hold`, which it shares when given;
 * readers share), refused with `imageLocked`; node names with the tag; the
 * top moving with switchTo; repoint dropping the old chain; block-stream
 * jobs that run until `finishJobs` (refused into a writable export's top,
 * whose resize permission the FUSE export holds); `kill` for an export (or
 * the whole data plane) that died: not alive, its file unreadable, until a
 * stop or a new start clears it.
 *
 * Not modelled: qemu's node graph for reads (the fake reads through the
 * images' own backing references), locks of the backing layers, aio and
 * cache fallbacks, records of 0.1 (one daemon per volume).
 */
import { mkdir, realpath, rm, truncate, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { imageLocked, internal, outOfRange, precondition } from '../../src/domain/errors.js';
import type { Format } from '../../src/domain/parameters.js';
import { TAG, exportId, type ChainLayer, type ExportHandle, type QemuExports, type StartOptions } from '../../src/system/qemu-export.js';
import { guestView, inode, openImage, SECTOR, virtualSize, writeQcow2 } from './image-file.js';
import type { Medium } from './loop-devices.js';
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

interface Job {
  device: string;
  baseNode: string | undefined;
  backingFile: string | undefined;
}

interface Served {
  handle: ExportHandle;
  /** The node the export serves, and every format node of the volume's, with its image. */
  top: string;
  nodes: Map<string, Medium>;
  jobs: Map<string, Job>;
  /** The inode whose lock the export holds (its top's). */
  inode: string | undefined;
  release: (() => void) | undefined;
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
    return s === undefined ? undefined : s.nodes.get(s.top);
  }

  /** The tags of the exports served now. */
  tags(): string[] {
    return [...this.served.keys()];
  }

  /** Export `tag` dies (the data plane lost it), or, without a tag, the whole data plane does. */
  kill(tag?: string): void {
    for (const [t, s] of this.served) {
      if (tag !== undefined && t !== tag) continue;
      s.release?.();
      this.dead.add(s.handle.exportFile);
      this.served.delete(t);
    }
  }

  /** Finishes every running block-stream job: its device holds the streamed layers' data and reads through its base. */
  async finishJobs(): Promise<void> {
    for (const s of this.served.values()) {
      for (const [id, job] of s.jobs) {
        const into = s.nodes.get(job.device);
        const base = job.baseNode === undefined ? undefined : s.nodes.get(job.baseNode);
        if (into !== undefined) await stream(into, base, job.backingFile);
        s.jobs.delete(id);
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
    const chain = o.format === 'qcow2' ? (o.chain ?? []) : [];
    for (const file of [...chain.map((l) => l.image), image]) {
      if ((await inode(file)) === undefined) throw internal(`cannot export ${image}: Could not open '${file}': No such file or directory`);
    }
    const ino = await inode(image);
    const other = [...this.served.values()].some((s) => s.inode === ino && (!o.readOnly || !s.handle.readOnly));
    if (other || (await this.options.qemuImg?.holds(image)) === true) {
      const lock = o.readOnly ? 'shared "write"' : '"write"';
      throw imageLocked(`image ${image} is in use by another process (qemu image lock): Failed to get ${lock} lock`);
    }
    const exportFile = join(dir, 'export.raw');
    await writeFile(join(dir, 'export.json'), JSON.stringify({ image, format: o.format, readOnly: o.readOnly, aio: 'io_uring', directIo: true }));
    await writeFile(exportFile, '');
    const top = o.format === 'qcow2' ? `t${o.tag}` : `t${o.tag}f`;
    const nodes = new Map<string, Medium>(chain.map((l) => [l.node, { path: l.image, format: l.format }]));
    nodes.set(top, { path: image, format: o.format });
    const asyncDirectIo = this.options.asyncDirectIo ?? true;
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
    const release = o.readOnly ? undefined : await this.options.qemuImg?.hold(image);
    this.served.set(o.tag, { handle, top, nodes, jobs: new Map(), inode: ino, release });
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
    const top = s.nodes.get(s.top) as Medium;
    const current = await virtualSize(top.path, top.format);
    if (bytes < current) throw outOfRange(`image ${h.image} is ${current} bytes; shrinking to ${bytes} is not supported`);
    if (bytes === current) return;
    const img = await openImage(top.path, top.format);
    if (img.format === 'qcow2') await writeQcow2(top.path, { ...img.qcow2, sizeBytes: bytes });
    else await truncate(top.path, Number(bytes));
  }

  async switchTo(h: ExportHandle, overlay: string, nodeName: string): Promise<void> {
    this.act('switchTo', h, overlay, nodeName);
    if (h.readOnly) throw precondition(`the export of ${h.image} is read-only; it has no writes to move`);
    const s = this.serving(h);
    if (s.top === nodeName) return;
    await openImage(overlay, 'qcow2').catch((e: unknown) => {
      throw internal(`blockdev-add of ${nodeName}f for ${overlay} failed: Could not open '${overlay}': ${(e as Error).message}`);
    });
    // blockdev-snapshot: the old top keeps its data read-only under the overlay, and its write lock goes.
    s.release?.();
    s.nodes.set(nodeName, { path: overlay, format: 'qcow2' });
    s.top = nodeName;
    s.inode = await inode(overlay);
    s.release = await this.options.qemuImg?.hold(overlay);
  }

  async top(h: ExportHandle): Promise<string> {
    this.act('top', h);
    return this.serving(h).top;
  }

  async repoint(h: ExportHandle, top: string, base: ChainLayer): Promise<void> {
    this.act('repoint', h, top, base);
    const s = this.serving(h);
    if ((await inode(base.image)) === undefined) {
      throw internal(`blockdev-add of ${base.image} failed: Could not open '${base.image}': No such file or directory`);
    }
    const node = s.nodes.get(top);
    if (node === undefined) throw internal(`blockdev-reopen of ${h.image} onto ${base.image} failed: Cannot find node ${top}`);
    // The volume's other nodes were the old chain: closed.
    s.nodes = new Map([
      [top, node],
      [base.node, { path: base.image, format: base.format }],
    ]);
  }

  async stream(h: ExportHandle, job: { id: string; device: string; baseNode?: string | undefined; backingFile?: string | undefined }): Promise<void> {
    this.act('stream', h, job);
    const s = this.serving(h);
    const fail = (why: string) => internal(`block-stream into ${job.device} of ${h.image} failed: ${why}`);
    if (!s.nodes.has(job.device)) throw fail(`Cannot find device='${job.device}' nor node-name='${job.device}'`);
    if (job.baseNode !== undefined && !s.nodes.has(job.baseNode)) throw fail(`Cannot find node ${job.baseNode}`);
    if (s.jobs.has(job.id)) throw fail(`Job ID '${job.id}' already in use`);
    if (job.device === s.top && !h.readOnly)
      throw fail(`Permission conflict on node '${job.device}': permissions 'resize' are both required by an export and unshared by a stream job`);
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

  private find(h: ExportHandle): Served | undefined {
    const s = this.served.get(h.tag ?? '');
    return s !== undefined && s.handle.id === h.id ? s : undefined;
  }

  /** The export `h` names, as a QMP command needs it (`query-block-exports`). */
  private serving(h: ExportHandle): Served {
    const s = this.find(h);
    if (s === undefined) throw internal(`the qemu export of ${h.image} is missing from query-block-exports`);
    return s;
  }

  private async remove(stateDir: string, tag: string): Promise<void> {
    const s = this.served.get(tag);
    s?.release?.();
    this.served.delete(tag);
    const dir = await realpath(stateDir).catch(() => undefined);
    if (dir !== undefined) await this.clear(dir);
  }

  /** The state files of whatever export was in `dir` (a dead one's FUSE mount goes with them). */
  private async clear(dir: string): Promise<void> {
    this.dead.delete(join(dir, 'export.raw'));
    await Promise.all(STATE_FILES.map((f) => rm(join(dir, f), { force: true })));
  }
}

/** block-stream's result: `into` holds what its chain down to `base` showed, and reads through `base` named `backingFile`. */
async function stream(into: Medium, base: Medium | undefined, backingFile: string | undefined): Promise<void> {
  const top = await openImage(into.path, 'qcow2');
  if (top.format !== 'qcow2') return;
  const all = await guestView(into.path, 'qcow2');
  const below = base === undefined ? new Map<number, Buffer>() : await guestView(base.path, base.format);
  const zero = Buffer.alloc(SECTOR);
  const sectors = new Map(top.qcow2.sectors);
  for (const i of new Set([...all.keys(), ...below.keys()])) {
    const now = all.get(i) ?? zero;
    if (!sectors.has(i) && !now.equals(below.get(i) ?? zero)) sectors.set(i, now);
  }
  const format: Format | undefined = base?.format;
  await writeQcow2(into.path, { ...top.qcow2, backing: backingFile, backingFormat: backingFile === undefined ? undefined : format, sectors });
}
