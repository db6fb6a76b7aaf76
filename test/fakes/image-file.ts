/**
 * The files FakeQemuImg writes: real files on a real (temp) directory, so that
 * renames, hard links, reflinks and removals by the code under test act on
 * them as on qemu's images. A raw image is its guest data (a sparse file of
 * the virtual size), as with qemu. A fake qcow2 image starts with a real qcow2
 * v3 header — magic, size, cluster bits, feature bits and the backing
 * reference where qemu keeps them, so storage/image-header.ts reads it as it
 * reads qemu's — and keeps its written sectors as JSON at FAKE_DATA_AT (only
 * the fake reads that part; real qemu-img would call the file corrupt).
 */
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Format } from '../../src/domain/parameters.js';

export const SECTOR = 512;
const QCOW2_MAGIC = 0x514649fb;
const HEADER_LENGTH = 104;
const INCOMPATIBLE_AT = 72;
/** Where the fake keeps what qemu keeps in L1/L2 tables and clusters: well after a backing name (≤ 1023 bytes). */
export const FAKE_DATA_AT = 4096;

export interface FakeQcow2 {
  sizeBytes: bigint;
  clusterBits: number;
  /** As written in the header: relative to the image's directory, or absolute. */
  backing: string | undefined;
  backingFormat: Format | undefined;
  incompatibleFeatures: bigint;
  /** Sectors this layer holds, by index: their bytes (a sector of zeros is held too: it hides the backing). */
  sectors: Map<number, Buffer>;
}

export function encodeQcow2(img: FakeQcow2): Buffer {
  const header = Buffer.alloc(FAKE_DATA_AT);
  header.writeUInt32BE(QCOW2_MAGIC, 0);
  header.writeUInt32BE(3, 4);
  if (img.backing !== undefined) {
    const name = Buffer.from(img.backing, 'utf8');
    header.writeBigUInt64BE(BigInt(HEADER_LENGTH), 8);
    header.writeUInt32BE(name.length, 16);
    name.copy(header, HEADER_LENGTH);
  }
  header.writeUInt32BE(img.clusterBits, 20);
  header.writeBigUInt64BE(img.sizeBytes, 24);
  header.writeBigUInt64BE(img.incompatibleFeatures, INCOMPATIBLE_AT);
  header.writeUInt32BE(4, 96); // refcount_order: 16-bit refcounts, as qemu's default
  header.writeUInt32BE(HEADER_LENGTH, 100);
  const sectors = Object.fromEntries([...img.sectors].map(([i, b]) => [String(i), b.toString('base64')]));
  const data = JSON.stringify({ fake: 'filedriver-test-qcow2', backingFormat: img.backingFormat ?? null, sectors });
  return Buffer.concat([header, Buffer.from(data, 'utf8')]);
}

/** The fake qcow2 in `bytes`, or undefined when they do not start with a qcow2 header. */
export function decodeQcow2(bytes: Buffer): FakeQcow2 | undefined {
  if (bytes.length < HEADER_LENGTH || bytes.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
  const offset = Number(bytes.readBigUInt64BE(8));
  const length = bytes.readUInt32BE(16);
  const trailer =
    bytes.length > FAKE_DATA_AT
      ? (JSON.parse(bytes.subarray(FAKE_DATA_AT).toString('utf8')) as { backingFormat: Format | null; sectors: Record<string, string> })
      : undefined;
  return {
    sizeBytes: bytes.readBigUInt64BE(24),
    clusterBits: bytes.readUInt32BE(20),
    backing: offset === 0 || length === 0 ? undefined : bytes.subarray(offset, offset + length).toString('utf8'),
    backingFormat: trailer?.backingFormat ?? undefined,
    incompatibleFeatures: bytes.readBigUInt64BE(INCOMPATIBLE_AT),
    sectors: new Map(Object.entries(trailer?.sectors ?? {}).map(([i, b]) => [Number(i), Buffer.from(b, 'base64')])),
  };
}

/** An image as qemu would open it: its format (given, or probed from the magic), size and backing. */
export type Opened = { format: 'raw'; path: string; sizeBytes: bigint } | { format: 'qcow2'; path: string; sizeBytes: bigint; qcow2: FakeQcow2 };

export async function openImage(path: string, format?: Format): Promise<Opened> {
  const bytes = await readFile(path);
  const qcow2 = format === 'raw' ? undefined : decodeQcow2(bytes);
  if (qcow2 !== undefined) return { format: 'qcow2', path, sizeBytes: qcow2.sizeBytes, qcow2 };
  if (format === 'qcow2') throw new Error(`Could not open '${path}': Image is not in qcow2 format`);
  // qemu's raw driver sees whole sectors: a file's partial last sector counts as a whole one.
  return { format: 'raw', path, sizeBytes: ((BigInt(bytes.length) + 511n) / 512n) * 512n };
}

/** Where a backing reference leads: qemu joins a relative one to the image's directory, unnormalised. */
export function backingPath(image: string, ref: string): string {
  return ref.startsWith('/') ? ref : `${dirname(image)}/${ref}`;
}

/**
 * What the guest reads: every sector that is not all zeros, through the
 * backing chain (a layer's own sectors hide those below; beyond a backing
 * image's end it reads zeros), up to the image's size.
 */
export async function guestView(path: string, format?: Format, depth = 0): Promise<Map<number, Buffer>> {
  if (depth > 64) throw new Error(`backing chain of ${path} is too deep`);
  const img = await openImage(path, format);
  const last = Number((img.sizeBytes + BigInt(SECTOR) - 1n) / BigInt(SECTOR));
  const view = new Map<number, Buffer>();
  if (img.format === 'raw') {
    const bytes = await readFile(path);
    for (let i = 0; i < last; i++) {
      const s = bytes.subarray(i * SECTOR, (i + 1) * SECTOR);
      if (s.some((b) => b !== 0)) view.set(i, Buffer.from(s));
    }
    return view;
  }
  const { backing, backingFormat, sectors } = img.qcow2;
  if (backing !== undefined) {
    for (const [i, s] of await guestView(backingPath(path, backing), backingFormat, depth + 1)) if (i < last) view.set(i, s);
  }
  for (const [i, s] of sectors) {
    if (i >= last) continue;
    if (s.some((b) => b !== 0)) view.set(i, s);
    else view.delete(i);
  }
  return view;
}

/** Writes `view` as a raw image of `sizeBytes` (sparse where it is zero). */
export async function writeRaw(path: string, sizeBytes: bigint, view: ReadonlyMap<number, Buffer>): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(Number(sizeBytes));
    for (const [i, s] of view) if (BigInt(i * SECTOR) < sizeBytes) await fh.write(s, 0, s.length, i * SECTOR);
  } finally {
    await fh.close();
  }
}

export async function writeQcow2(path: string, img: FakeQcow2): Promise<void> {
  await writeFile(path, encodeQcow2(img));
}

/** Bytes the file takes on disk, as qemu's actual-size. */
export async function allocated(path: string): Promise<bigint> {
  return BigInt((await stat(path)).blocks) * 512n;
}

/** qemu's identity of an open image for its locks: the inode (a hard link or a rename is the same image). */
export async function inode(path: string): Promise<string | undefined> {
  const st = await stat(path).catch(() => undefined);
  return st === undefined ? undefined : `${st.dev}:${st.ino}`;
}

/** What a guest writes: `data` at `offset` (both whole sectors), into the top image of a qcow2 chain. */
export async function writeGuest(path: string, format: Format, offset: number, data: Buffer): Promise<void> {
  if (offset % SECTOR !== 0 || data.length % SECTOR !== 0) throw new Error('fake guest writes are whole sectors');
  const img = await openImage(path, format);
  if (BigInt(offset + data.length) > img.sizeBytes) throw new Error(`write beyond the end of ${path}`);
  if (img.format === 'raw') {
    const fh = await open(path, 'r+');
    await fh.write(data, 0, data.length, offset).finally(() => fh.close());
    return;
  }
  for (let at = 0; at < data.length; at += SECTOR) img.qcow2.sectors.set((offset + at) / SECTOR, Buffer.from(data.subarray(at, at + SECTOR)));
  await writeQcow2(path, img.qcow2);
}
