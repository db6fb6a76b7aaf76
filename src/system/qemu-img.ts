/**
 * qemu-img: create, inspect, resize and check images. Image locking stays on;
 * read-only inspection of an image another process holds uses -U (force-share),
 * which qemu allows for readers.
 */
import { CommandFailed, type Runner } from './command.js';
import { imageLocked } from '../domain/errors.js';
import type { Format, Preallocation } from '../domain/parameters.js';

export interface CreateOptions {
  preallocation?: Preallocation;
  clusterSize?: bigint;
}

export interface ImageInfo {
  format: string;
  virtualSize: bigint;
  actualSize: bigint;
  backingFile: string | undefined;
}

export type CheckResult = { ok: true } | { ok: false; problem: string };

/** One image of a backing chain, as `qemu-img info --backing-chain` names it. */
export interface ChainLink {
  /** As qemu resolved it: a path, or a protocol/`json:` name when the chain is not plain files. */
  filename: string;
  format: string;
  /** A qcow2 external data file (`-o data_file=`), which holds the guest data outside the image. */
  dataFile: string | undefined;
}

export interface QemuImg {
  version(): Promise<string>;
  create(path: string, format: Format, sizeBytes: bigint, options?: CreateOptions): Promise<void>;
  /**
   * A qcow2 image whose unwritten clusters read from `backing` (a path relative to `path`'s directory).
   * `unsafe`: do not open the backing (it may be written and locked by an export until the switch).
   */
  createOverlay(path: string, backing: string, backingFormat: Format, sizeBytes: bigint, options?: { unsafe?: boolean }): Promise<void>;
  /** A sparse-preserving copy, flattening any backing chain; `progress` shows qemu's bar on a terminal. */
  convert(source: string, sourceFormat: Format, target: string, targetFormat: Format, options?: { progress?: boolean }): Promise<void>;
  /**
   * Whether two images hold the same guest-visible data (sizes may differ only by zeros).
   * Give `formats` when known: a raw image whose data looks like a qcow2 header is otherwise probed as qcow2.
   */
  same(a: string, b: string, formats?: { a: Format; b: Format }): Promise<boolean>;
  /** `format` skips qemu's probing (a raw image whose data looks like a qcow2 header stays raw). */
  info(path: string, format?: Format): Promise<ImageInfo>;
  /** The image and every image behind it, top first. Fails when one of them cannot be opened. */
  backingChain(path: string, format?: Format): Promise<ChainLink[]>;
  /**
   * Whether another qemu process holds the image open for writing: opening it
   * without -U asks for qemu's shared "write" lock, which a writer holds.
   */
  inUse(path: string, format?: Format): Promise<boolean>;
  /** Bytes a flattened copy of the image in `targetFormat` needs (`qemu-img measure`). */
  measure(path: string, format: Format, targetFormat: Format): Promise<bigint>;
  /** `preallocation` falloc/full allocates the grown part too, so a thick image stays thick. */
  resize(path: string, format: Format, sizeBytes: bigint, preallocation?: Preallocation): Promise<void>;
  check(path: string, format: Format): Promise<CheckResult>;
  /**
   * Makes a qcow2 image read through `backing` (relative to its directory; null: none) instead of
   * its current backing, first copying in every cluster where the two differ (safe mode): what
   * the image reads never changes, so an interrupted rebase is simply run again. 'in use' when a
   * qemu process holds the image (its lock).
   */
  rebase(path: string, backing: { ref: string; format: Format } | null): Promise<'done' | 'in use'>;
}

/** Integers from qemu-img JSON, read as text: sizes can exceed 2^53. */
/**
 * The integer value of a top-level key, exactly (JSON.parse would round sizes
 * above 2^53). Top-level only: qemu ≥ 8 nests the protocol layer's own
 * "virtual-size" (the file's length) under "children", before the image's.
 */
export function jsonInteger(json: string, key: string): bigint | undefined {
  const wanted = JSON.stringify(key);
  let depth = 0;
  for (let i = 0; i < json.length; i++) {
    const ch = json[i];
    if (ch === '{' || ch === '[') depth++;
    else if (ch === '}' || ch === ']') depth--;
    else if (ch === '"') {
      let end = i + 1;
      while (end < json.length && json[end] !== '"') end += json[end] === '\\' ? 2 : 1;
      if (depth === 1 && json.slice(i, end + 1) === wanted) {
        const m = /^\s*:\s*(\d+)/.exec(json.slice(end + 1));
        if (m?.[1] !== undefined) return BigInt(m[1]);
      }
      i = end;
    }
  }
  return undefined;
}

export function parseInfo(json: string): ImageInfo {
  const data = JSON.parse(json) as { format?: string; 'backing-filename'?: string };
  return {
    format: data.format ?? 'unknown',
    virtualSize: jsonInteger(json, 'virtual-size') ?? 0n,
    actualSize: jsonInteger(json, 'actual-size') ?? 0n,
    backingFile: data['backing-filename'],
  };
}

export function parseChain(json: string): ChainLink[] {
  const data = JSON.parse(json) as unknown;
  const links = (Array.isArray(data) ? data : [data]) as {
    filename?: string;
    format?: string;
    'format-specific'?: { data?: { 'data-file'?: string } };
  }[];
  return links.map((l) => ({
    filename: l.filename ?? '',
    format: l.format ?? 'unknown',
    dataFile: l['format-specific']?.data?.['data-file'],
  }));
}

const LOCK_ERROR = /Failed to get ".*" lock|Is another process using the image/;

/** Turns qemu's lock conflict into a precondition failure naming the image. */
function lockAware(path: string, e: unknown): never {
  if (e instanceof CommandFailed && LOCK_ERROR.test(e.stderr)) {
    throw imageLocked(`image ${path} is in use by another qemu process (qemu image lock held)`);
  }
  throw e;
}

// Preallocating a large image on a slow share can take long; everything else is quick.
const SLOW_MS = 60 * 60_000;
const QUICK_MS = 120_000;

const formatArgs = (format: Format | undefined): string[] => (format === undefined ? [] : ['-f', format]);

export function makeQemuImg(run: Runner): QemuImg {
  return {
    async version() {
      const { stdout } = await run(['qemu-img', '--version'], { timeoutMs: 10_000 });
      return stdout.split('\n')[0] ?? stdout;
    },
    async create(path, format, sizeBytes, options = {}) {
      const opts: string[] = [];
      if (options.preallocation !== undefined && options.preallocation !== 'off') {
        opts.push(`preallocation=${options.preallocation}`);
      }
      if (options.clusterSize !== undefined) opts.push(`cluster_size=${options.clusterSize}`);
      const argv = ['qemu-img', 'create', '-q', '-f', format];
      if (opts.length > 0) argv.push('-o', opts.join(','));
      argv.push(path, String(sizeBytes));
      const slow = options.preallocation === 'falloc' || options.preallocation === 'full';
      await run(argv, { timeoutMs: slow ? SLOW_MS : QUICK_MS });
    },
    async createOverlay(path, backing, backingFormat, sizeBytes, options = {}) {
      const unsafe = options.unsafe === true ? ['-u'] : [];
      await run(['qemu-img', 'create', '-q', '-f', 'qcow2', ...unsafe, '-b', backing, '-F', backingFormat, path, String(sizeBytes)], {
        timeoutMs: QUICK_MS,
      });
    },
    async convert(source, sourceFormat, target, targetFormat, options = {}) {
      // -U: the source may be open elsewhere (a snapshot of an attached volume is crash-consistent).
      const argv = ['qemu-img', 'convert', '-U', '-f', sourceFormat, '-O', targetFormat, '-S', '4k'];
      if (options.progress === true) argv.push('-p');
      argv.push(source, target);
      await run(argv, { timeoutMs: SLOW_MS, ...(options.progress === true ? { inheritOutput: true } : {}) });
    },
    async same(a, b, formats) {
      const both = formats === undefined ? [] : ['-f', formats.a, '-F', formats.b];
      try {
        await run(['qemu-img', 'compare', '-U', '-q', ...both, a, b], { timeoutMs: SLOW_MS });
        return true;
      } catch (e) {
        if (e instanceof CommandFailed && e.exitCode === 1) return false;
        throw e;
      }
    },
    async info(path, format) {
      const { stdout } = await run(['qemu-img', 'info', '-U', '--output=json', ...formatArgs(format), path], { timeoutMs: QUICK_MS });
      return parseInfo(stdout);
    },
    async backingChain(path, format) {
      const argv = ['qemu-img', 'info', '-U', '--backing-chain', '--output=json', ...formatArgs(format), path];
      return parseChain((await run(argv, { timeoutMs: QUICK_MS })).stdout);
    },
    async inUse(path, format) {
      // `info` opens a raw image without asking for any lock, so a raw image is probed
      // with a convert of its first sector into nothing: convert asks that no one writes.
      const escaped = path.replaceAll(',', ',,');
      const argv =
        format === 'raw'
          ? [
              'qemu-img',
              'convert',
              '-n',
              '--image-opts',
              `driver=raw,size=512,file.driver=file,file.filename=${escaped}`,
              '--target-image-opts',
              'driver=null-co,size=512',
            ]
          : ['qemu-img', 'info', '--output=json', ...formatArgs(format), path];
      try {
        await run(argv, { timeoutMs: QUICK_MS });
        return false;
      } catch (e) {
        if (e instanceof CommandFailed && LOCK_ERROR.test(e.stderr)) return true;
        throw e;
      }
    },
    async measure(path, format, targetFormat) {
      const argv = ['qemu-img', 'measure', '-U', '--output=json', '-f', format, '-O', targetFormat, path];
      const { stdout } = await run(argv, { timeoutMs: QUICK_MS });
      return jsonInteger(stdout, 'required') ?? 0n;
    },
    async resize(path, format, sizeBytes, preallocation) {
      const pre = preallocation === 'falloc' || preallocation === 'full' ? [`--preallocation=${preallocation}`] : [];
      // A full preallocation writes every new byte: as slow as the share, so no quick timeout.
      const timeoutMs = preallocation === 'full' ? SLOW_MS : QUICK_MS;
      await run(['qemu-img', 'resize', '-q', '-f', format, ...pre, path, String(sizeBytes)], { timeoutMs }).catch((e: unknown) => lockAware(path, e));
    },
    async rebase(path, backing) {
      const target = backing === null ? ['-b', ''] : ['-b', backing.ref, '-F', backing.format];
      try {
        await run(['qemu-img', 'rebase', '-q', '-f', 'qcow2', ...target, path], { timeoutMs: SLOW_MS });
        return 'done';
      } catch (e) {
        if (e instanceof CommandFailed && LOCK_ERROR.test(e.stderr)) return 'in use';
        throw e;
      }
    },
    async check(path, format) {
      if (format === 'raw') return { ok: true }; // raw has no metadata to check
      try {
        await run(['qemu-img', 'check', '-U', '-q', '-f', format, path], { timeoutMs: QUICK_MS });
        return { ok: true };
      } catch (e) {
        if (e instanceof CommandFailed && e.exitCode === 3) return { ok: true }; // leaked clusters only: harmless
        if (e instanceof CommandFailed) return { ok: false, problem: e.message };
        throw e;
      }
    },
  };
}
