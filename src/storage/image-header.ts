/**
 * A cheap health look at an image without starting qemu-img: its first bytes.
 * ListVolumes reports a condition for every entry of a page, and a
 * `qemu-img check` per entry (tens of ms each) made a page of 100 take
 * seconds; ControllerGetVolume still runs the full check for one volume.
 */
import { open } from 'node:fs/promises';
import type { Format } from '../domain/parameters.js';

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
/** qcow2 v3 header: incompatible_features at byte 72; bit 1 = qemu found corruption and marked the image. */
const INCOMPATIBLE_AT = 72;
const CORRUPT_BIT = 1n << 1n;

/** What is wrong with these first bytes of an image, or undefined when nothing is visible. */
export function headerProblem(head: Buffer, format: Format): string | undefined {
  if (format === 'raw') return undefined; // raw has no header: any bytes are guest data
  if (head.length < 8 || head.readUInt32BE(0) !== QCOW2_MAGIC) return 'the image does not start with a qcow2 header';
  const version = head.readUInt32BE(4);
  if (version < 3) return undefined; // v2 has no feature bits to read
  if (head.length < INCOMPATIBLE_AT + 8) return 'the qcow2 header is truncated';
  if ((head.readBigUInt64BE(INCOMPATIBLE_AT) & CORRUPT_BIT) !== 0n) return 'qemu marked the qcow2 image corrupt';
  return undefined;
}

/** Reads the header of `path` and judges it; a missing file is the caller's business (it throws). */
export async function imageHeaderProblem(path: string, format: Format): Promise<string | undefined> {
  const fh = await open(path, 'r'); // also for raw: a missing image must throw
  try {
    const head = Buffer.alloc(INCOMPATIBLE_AT + 8);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    return headerProblem(head.subarray(0, bytesRead), format);
  } finally {
    await fh.close();
  }
}

/**
 * The backing reference written in a qcow2 header (bytes 8–19 give its offset
 * and length), or undefined for none: how far a merge got, without spawning
 * qemu-img. qemu writes the header after the data, so this is what it will read.
 */
export async function backingReference(path: string): Promise<string | undefined> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(20);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    if (bytesRead < head.length || head.readUInt32BE(0) !== QCOW2_MAGIC) throw new Error(`${path} is not a qcow2 image`);
    const offset = head.readBigUInt64BE(8);
    const length = head.readUInt32BE(16);
    if (offset === 0n || length === 0) return undefined;
    if (length > 1023) throw new Error(`${path} names a backing file longer than qemu allows`);
    const name = Buffer.alloc(length);
    await fh.read(name, 0, length, Number(offset));
    return name.toString('utf8');
  } finally {
    await fh.close();
  }
}
