/**
 * What a fake loop device or a fake qemu node reads: a file held open, so
 * that, as for the kernel's loop driver and for qemu, renaming or unlinking
 * its path afterwards changes nothing for the reader (a layer switch renames
 * the overlay over the image qemu serves). A raw file reads in place; a fake
 * qcow2 image (image-file.ts) reads its own sectors over what lies below it.
 * Reads beyond the end give zeros.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { decodeQcow2, encodeQcow2, SECTOR, type FakeQcow2 } from './image-file.js';

export interface Medium {
  /** Bytes the guest sees. */
  size(): Promise<bigint>;
  read(offset: number, length: number): Promise<Buffer>;
  /** Whole sectors, within the size. */
  write(offset: number, data: Buffer): Promise<void>;
}

export interface OpenFile {
  handle: FileHandle;
  /** The path it was opened by (a relative backing reference is resolved from there, as qemu does at open). */
  path: string;
  /** `dev:ino`, as image-file.ts's inode(). */
  inode: string;
}

export async function openFile(path: string, readOnly: boolean): Promise<OpenFile> {
  const handle = await open(path, readOnly ? 'r' : 'r+');
  const st = await handle.stat();
  return { handle, path, inode: `${st.dev}:${st.ino}` };
}

const wholeSectors = (n: number | bigint): bigint => (BigInt(n) / BigInt(SECTOR)) * BigInt(SECTOR);

/** The file's bytes as they are. */
export function rawMedium(f: OpenFile): Medium {
  return {
    size: async () => wholeSectors((await f.handle.stat()).size),
    async read(offset, length) {
      const out = Buffer.alloc(length);
      if (length > 0) await f.handle.read(out, 0, length, offset);
      return out;
    },
    async write(offset, data) {
      checkWrite(offset, data, await this.size());
      await f.handle.write(data, 0, data.length, offset);
    },
  };
}

/** The fake qcow2 image in an open file (small: a header and the sectors written). */
export async function loadQcow2(f: OpenFile): Promise<FakeQcow2> {
  const { size } = await f.handle.stat();
  const bytes = Buffer.alloc(size);
  if (size > 0) await f.handle.read(bytes, 0, size, 0);
  const img = decodeQcow2(bytes);
  if (img === undefined) throw new Error(`Could not open '${f.path}': Image is not in qcow2 format`);
  return img;
}

export async function storeQcow2(f: OpenFile, img: FakeQcow2): Promise<void> {
  const bytes = encodeQcow2(img);
  await f.handle.truncate(bytes.length);
  await f.handle.write(bytes, 0, bytes.length, 0);
}

/** A qcow2 layer: its own sectors over what `below()` reads (zeros where it gives nothing, and beyond the layer's size). */
export function qcow2Medium(f: OpenFile, below: () => Medium | undefined): Medium {
  return {
    size: async () => (await loadQcow2(f)).sizeBytes,
    async read(offset, length) {
      const img = await loadQcow2(f);
      const out = (await below()?.read(offset, length)) ?? Buffer.alloc(length);
      for (let i = Math.floor(offset / SECTOR); i * SECTOR < offset + length; i++) {
        const at = i * SECTOR - offset;
        const own = BigInt((i + 1) * SECTOR) > img.sizeBytes ? Buffer.alloc(SECTOR) : img.sectors.get(i);
        if (own !== undefined) own.copy(out, Math.max(at, 0), Math.max(-at, 0), Math.min(SECTOR, length - at));
      }
      return out;
    },
    async write(offset, data) {
      const img = await loadQcow2(f);
      checkWrite(offset, data, img.sizeBytes);
      for (let at = 0; at < data.length; at += SECTOR) img.sectors.set((offset + at) / SECTOR, Buffer.from(data.subarray(at, at + SECTOR)));
      await storeQcow2(f, img);
    },
  };
}

function checkWrite(offset: number, data: Buffer, size: bigint): void {
  if (offset % SECTOR !== 0 || data.length % SECTOR !== 0) throw new Error('fake guest writes are whole sectors');
  if (BigInt(offset + data.length) > size) throw new Error(`write of ${data.length} bytes at ${offset} beyond the end (${size} bytes)`);
}
