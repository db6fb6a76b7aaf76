/**
 * Whether an image on a mount may be adopted as a volume: a regular file inside
 * the mount and outside the driver tree (symlinks resolved), a qcow2 or raw
 * image that no qemu process or loop device is using, whose backing chain and
 * data stay on the mount.
 */
import { realpath, stat } from 'node:fs/promises';
import { isAbsolute, sep } from 'node:path';
import { insideMount } from '../controller/sources.js';
import { imageLocked, invalid, precondition } from '../domain/errors.js';
import { isFormat, type Format } from '../domain/parameters.js';
import type { Layout } from '../storage/layout.js';
import { CommandFailed } from '../system/command.js';
import type { Context } from './context.js';

export interface Vetted {
  /** The image's real path. */
  image: string;
  format: Format;
  sizeBytes: bigint;
  /** Images behind it (real paths), nearest first; empty for a standalone image. */
  backing: string[];
  /** Hard links to the file, the image's own name included. */
  links: number;
  /** What qemu-img's probing sees; differs from `format` when the admin insisted on raw. */
  probed: string;
}

export async function vetImage(ctx: Context, layout: Layout, relative: string, wanted: Format | undefined): Promise<Vetted> {
  const image = await insideMount(layout, relative);
  const st = await stat(image);
  if (!st.isFile()) throw invalid(`${relative} on mount ${layout.mountPath} is not a regular file`);

  const loops = await ctx.loops.findByFile(image);
  if (loops.length > 0) throw precondition(`image ${image} is in use: attached to loop device ${loops.map((l) => l.device).join(', ')}`);

  const probed = (await ctx.qemuImg.info(image)).format;
  if (wanted === undefined && !isFormat(probed)) {
    throw invalid(`${image} is a ${probed} image; filedriver volumes are qcow2 or raw (convert it first: qemu-img convert -O qcow2)`);
  }
  if (wanted === 'qcow2' && probed !== 'qcow2') throw invalid(`${image} is not a qcow2 image (qemu-img sees ${probed})`);
  const format: Format = wanted ?? (probed as Format);
  const info = await ctx.qemuImg.info(image, format);
  if (info.virtualSize === 0n || (format === 'raw' && info.virtualSize % 512n !== 0n)) {
    throw invalid(`${image} is ${info.virtualSize} bytes; a disk is a positive number of whole 512-byte sectors`);
  }
  // A qcow2 image imported as raw bytes is still locked as the qcow2 image it is.
  if (await ctx.qemuImg.inUse(image, isFormat(probed) ? probed : format))
    throw imageLocked(`image ${image} is in use by another qemu process (qemu image lock held)`);
  const backing = await chainOnMount(ctx, layout, image, format);
  return { image, format, sizeBytes: info.virtualSize, backing, links: st.nlink, probed };
}

/** The real paths of the images behind `image`; refused when any leaves the mount or is unreadable. */
async function chainOnMount(ctx: Context, layout: Layout, image: string, format: Format): Promise<string[]> {
  let chain;
  try {
    chain = await ctx.qemuImg.backingChain(image, format);
  } catch (e) {
    if (e instanceof CommandFailed) throw invalid(`the backing chain of ${image} cannot be read: ${e.message}`);
    throw e;
  }
  const root = await realpath(layout.mountPath);
  const backing: string[] = [];
  for (const [i, link] of chain.entries()) {
    if (link.dataFile !== undefined) {
      throw invalid(`${link.filename} keeps its data in the external file ${link.dataFile}; such images cannot be imported`);
    }
    if (i === 0) continue;
    const real = isAbsolute(link.filename) ? await realpath(link.filename).catch(() => undefined) : undefined;
    if (real === undefined || !real.startsWith(root + sep)) {
      throw invalid(`${image} is backed by ${link.filename}, outside the mount ${root}: a volume's backing chain must stay on its mount`);
    }
    backing.push(real);
  }
  return backing;
}
