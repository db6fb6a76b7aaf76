/**
 * An in-process QemuImg on real files (test/fakes/image-file.ts has their
 * shape): images with a format, a virtual size, a backing reference and guest
 * data, without qemu. What it models is what test/contract/qemu-img.contract.ts
 * checks against the real qemu-img: sizes rounded up to a sector, no
 * shrinking, overlays that read through their backing (refused when the
 * backing cannot be opened, unless unsafe), flattening copies, safe rebases
 * that never change what the image reads, and qemu's write locks (`hold`: a
 * qemu process writing the image) — on the inode, so a hard link or a rename
 * is the same locked image. `failOn` plants failures, such as a full share.
 *
 * Not modelled: preallocation (recorded only), external data files, qemu's
 * own metadata size beyond a rough `measure`.
 */
import { open, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { imageLocked } from '../../src/domain/errors.js';
import type { Format, Preallocation } from '../../src/domain/parameters.js';
import type { ChainLink, CheckResult, CreateOptions, ImageInfo, QemuImg } from '../../src/system/qemu-img.js';
import {
  allocated,
  backingPath,
  guestView,
  inode,
  openImage,
  SECTOR,
  writeGuest,
  writeQcow2,
  writeRaw,
  type FakeQcow2,
  type Opened,
} from './image-file.js';
import { Recorder, toolFailed } from './recorder.js';

export type QemuImgOp =
  'version' | 'create' | 'createOverlay' | 'convert' | 'same' | 'info' | 'backingChain' | 'inUse' | 'measure' | 'resize' | 'check' | 'rebase';

const CLUSTER = 65536n;
const roundUp = (n: bigint, to: bigint): bigint => ((n + to - 1n) / to) * to;
const failed = (op: string, stderr: string, exitCode = 1) => toolFailed('qemu-img', `qemu-img: ${stderr}`, exitCode, op);

export class FakeQemuImg extends Recorder<QemuImgOp> implements QemuImg {
  /** Inodes a (pretend) qemu process holds open for writing. */
  private readonly held = new Set<string>();

  /** As if a qemu process (an export) opened the image for writing; returns its release. */
  async hold(path: string): Promise<() => void> {
    const key = await inode(path);
    if (key === undefined) throw new Error(`cannot hold ${path}: it does not exist`);
    this.held.add(key);
    return () => this.held.delete(key);
  }

  /** Whether a (pretend) qemu process holds the image open for writing. */
  async holds(path: string): Promise<boolean> {
    return this.held.has((await inode(path)) ?? '');
  }

  /** What a guest would write: `data` at `offset` (both whole sectors) of the image's guest view. */
  async write(path: string, format: Format, offset: number, data: Buffer): Promise<void> {
    await writeGuest(path, format, offset, data);
  }

  async version(): Promise<string> {
    this.act('version');
    return 'qemu-img version 7.2.0 (filedriver test fake)';
  }

  async create(path: string, format: Format, sizeBytes: bigint, options: CreateOptions = {}): Promise<void> {
    this.act('create', path, format, sizeBytes, options);
    await this.parentExists('create', path);
    const size = roundUp(sizeBytes, BigInt(SECTOR));
    if (format === 'raw') return writeRaw(path, size, new Map());
    const clusterBits = (options.clusterSize ?? CLUSTER).toString(2).length - 1;
    await writeQcow2(path, blank(size, clusterBits));
  }

  async createOverlay(path: string, backing: string, backingFormat: Format, sizeBytes: bigint, options: { unsafe?: boolean } = {}): Promise<void> {
    this.act('createOverlay', path, backing, backingFormat, sizeBytes, options);
    await this.parentExists('create', path);
    // Without -u qemu opens the backing (read-only, sharing writes: a held one is fine).
    if (options.unsafe !== true) {
      await openImage(backingPath(path, backing), backingFormat).catch((e: unknown) => {
        throw failed('create', `${path}: Could not open '${backingPath(path, backing)}': ${why(e)}\nCould not open backing image.`);
      });
    }
    await writeQcow2(path, { ...blank(roundUp(sizeBytes, BigInt(SECTOR)), 16), backing, backingFormat });
  }

  async convert(source: string, sourceFormat: Format, target: string, targetFormat: Format): Promise<void> {
    this.act('convert', source, sourceFormat, target, targetFormat);
    const src = await this.opened('convert', source, sourceFormat);
    const view = await guestView(source, sourceFormat);
    await this.parentExists('convert', target);
    if (targetFormat === 'raw') return writeRaw(target, src.sizeBytes, view);
    await writeQcow2(target, { ...blank(src.sizeBytes, 16), sectors: view });
  }

  async same(a: string, b: string, formats?: { a: Format; b: Format }): Promise<boolean> {
    this.act('same', a, b, formats);
    await this.opened('compare', a, formats?.a);
    await this.opened('compare', b, formats?.b);
    const [x, y] = await Promise.all([guestView(a, formats?.a), guestView(b, formats?.b)]);
    return x.size === y.size && [...x].every(([i, s]) => y.get(i)?.equals(s) === true);
  }

  async info(path: string, format?: Format): Promise<ImageInfo> {
    this.act('info', path, format);
    const img = await this.opened('info', path, format);
    return {
      format: img.format,
      virtualSize: img.sizeBytes,
      actualSize: await allocated(path),
      backingFile: img.format === 'qcow2' ? img.qcow2.backing : undefined,
    };
  }

  async backingChain(path: string, format?: Format): Promise<ChainLink[]> {
    this.act('backingChain', path, format);
    return (await this.chain('info', path, format)).map((img) => ({ filename: img.path, format: img.format, dataFile: undefined }));
  }

  async inUse(path: string, format?: Format): Promise<boolean> {
    this.act('inUse', path, format);
    // qemu-img info opens the top image alone (no backing): only its own lock counts.
    await this.opened('info', path, format);
    return this.held.has((await inode(path)) ?? '');
  }

  async measure(path: string, format: Format, targetFormat: Format): Promise<bigint> {
    this.act('measure', path, format, targetFormat);
    const img = await this.opened('measure', path, format);
    if (targetFormat === 'raw') return img.sizeBytes;
    const clusters = new Set([...(await guestView(path, format)).keys()].map((i) => BigInt(i * SECTOR) / CLUSTER));
    // Header, L1, refcount table and block, one L2 table per 512 MiB touched; then the data clusters.
    const l2 = new Set([...clusters].map((c) => c / (CLUSTER / 8n))).size;
    return (4n + BigInt(Math.max(l2, 1)) + BigInt(clusters.size)) * CLUSTER;
  }

  async resize(path: string, format: Format, sizeBytes: bigint, preallocation?: Preallocation): Promise<void> {
    this.act('resize', path, format, sizeBytes, preallocation);
    const chain = await this.chain('resize', path, format);
    const top = chain[0] as Opened;
    if (await this.anyHeld(chain)) throw imageLocked(`image ${path} is in use by another qemu process (qemu image lock held)`);
    const size = roundUp(sizeBytes, BigInt(SECTOR));
    if (size < top.sizeBytes) throw failed('resize', 'Use the --shrink option to perform a shrink operation.');
    if (top.format === 'raw') {
      const fh = await open(path, 'r+');
      await fh.truncate(Number(size)).finally(() => fh.close());
      return;
    }
    await writeQcow2(path, { ...top.qcow2, sizeBytes: size });
  }

  async check(path: string, format: Format): Promise<CheckResult> {
    this.act('check', path, format);
    if (format === 'raw') return { ok: true };
    try {
      await this.opened('check', path, format);
      return { ok: true };
    } catch (e) {
      return { ok: false, problem: why(e) };
    }
  }

  async rebase(path: string, backing: { ref: string; format: Format } | null): Promise<'done' | 'in use'> {
    this.act('rebase', path, backing);
    const chain = await this.chain('rebase', path, 'qcow2');
    const top = chain[0] as Opened & { format: 'qcow2' };
    const next = backing === null ? [] : await this.chain('rebase', backingPath(path, backing.ref), backing.format);
    if (await this.anyHeld([...chain, ...next])) return 'in use';
    // Safe mode: where the old and the new backing differ, the old one's data is copied into the top first.
    const { backing: oldRef, backingFormat: oldFormat } = top.qcow2;
    const before = oldRef === undefined ? new Map<number, Buffer>() : await guestView(backingPath(path, oldRef), oldFormat);
    const after = backing === null ? new Map<number, Buffer>() : await guestView(backingPath(path, backing.ref), backing.format);
    const sectors = new Map(top.qcow2.sectors);
    const last = Number(top.sizeBytes / BigInt(SECTOR));
    for (const i of new Set([...before.keys(), ...after.keys()])) {
      if (i >= last || sectors.has(i)) continue;
      const was = before.get(i) ?? Buffer.alloc(SECTOR);
      if (!was.equals(after.get(i) ?? Buffer.alloc(SECTOR))) sectors.set(i, was);
    }
    await writeQcow2(path, { ...top.qcow2, backing: backing?.ref, backingFormat: backing?.format, sectors });
    return 'done';
  }

  /** The image and every image behind it, top first; a missing one fails as qemu does. */
  private async chain(op: string, path: string, format?: Format): Promise<Opened[]> {
    const links = [await this.opened(op, path, format)];
    for (let img = links[0]; img?.format === 'qcow2' && img.qcow2.backing !== undefined;) {
      const next = backingPath(img.path, img.qcow2.backing);
      img = await openImage(next, img.qcow2.backingFormat).catch((e: unknown) => {
        throw failed(op, `Could not open '${path}': Could not open backing file: Could not open '${next}': ${why(e)}`);
      });
      links.push(img);
      if (links.length > 64) throw failed(op, `Could not open '${path}': backing chain too long`);
    }
    return links;
  }

  private async opened(op: string, path: string, format?: Format): Promise<Opened> {
    return openImage(path, format).catch((e: unknown) => {
      throw failed(op, `Could not open '${path}': ${why(e)}`);
    });
  }

  private async anyHeld(images: readonly Opened[]): Promise<boolean> {
    for (const img of images) if (this.held.has((await inode(img.path)) ?? '')) return true;
    return false;
  }

  private async parentExists(op: string, path: string): Promise<void> {
    if ((await stat(dirname(path)).catch(() => undefined))?.isDirectory() !== true) {
      throw failed(op, `${path}: Could not create '${path}': No such file or directory`);
    }
  }
}

function blank(sizeBytes: bigint, clusterBits: number): FakeQcow2 {
  return { sizeBytes, clusterBits, backing: undefined, backingFormat: undefined, incompatibleFeatures: 0n, sectors: new Map() };
}

function why(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'No such file or directory';
  return e instanceof Error ? e.message : String(e);
}
