import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { headerProblem } from '../../src/storage/image-header.js';
import { headerChain } from '../../src/storage/layering.js';
import { Layout } from '../../src/storage/layout.js';

// First 104 bytes of `qemu-img create -f qcow2 x 1G` (qemu-img 7.2, compat 1.1 = version 3).
const V3 = Buffer.from(
  '514649fb00000003000000000000000000000000000000100000000040000000000000000000000200000000000300000000000000010000000000010000000000000000000000000000000000000000000000000000000000000000000000000000000400000070',
  'hex',
);
// First 72 bytes of the same with -o compat=0.10 (version 2: no feature bits).
const V2 = Buffer.from(
  '514649fb0000000200000000000000000000000000000010000000004000000000000000000000020000000000030000000000000001000000000001000000000000000000000000',
  'hex',
);

function withIncompatible(bits: bigint): Buffer {
  const b = Buffer.from(V3);
  b.writeBigUInt64BE(bits, 72);
  return b;
}

describe('image header check', () => {
  it.each([
    ['a fresh v3 qcow2', V3, undefined],
    ['a v2 qcow2', V2, undefined],
    ['a qcow2 left dirty (lazy refcounts, in use)', withIncompatible(1n), undefined],
    ['a qcow2 qemu marked corrupt', withIncompatible(2n), 'qemu marked the qcow2 image corrupt'],
    ['bytes that are not qcow2', Buffer.alloc(104), 'the image does not start with a qcow2 header'],
    ['an empty file', Buffer.alloc(0), 'the image does not start with a qcow2 header'],
    ['a header cut before its feature bits', V3.subarray(0, 40), 'the qcow2 header is truncated'],
  ])('judges %s', (_what, head, problem) => {
    expect(headerProblem(head, 'qcow2')).toBe(problem);
  });

  it('never judges raw data', () => {
    expect(headerProblem(Buffer.alloc(0), 'raw')).toBeUndefined();
    expect(headerProblem(withIncompatible(2n), 'raw')).toBeUndefined();
  });
});

describe('the chain under an image, from its headers', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  /** A qcow2 header naming `backing` (or none), as qemu writes it: the name after the header. */
  const qcow2 = (path: string, backing?: string) => {
    const head = Buffer.from(V3);
    const name = Buffer.from(backing ?? '');
    if (backing !== undefined) {
      head.writeBigUInt64BE(BigInt(head.length), 8);
      head.writeUInt32BE(name.length, 16);
    }
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, Buffer.concat([head, name]));
  };
  const mount = () => {
    const root = mkdtempSync(join(tmpdir(), 'fdtest-chain-'));
    dirs.push(root);
    return new Layout(root);
  };

  it('follows the backing names down to an image without one, nearest first', async () => {
    const layout = mount();
    qcow2(layout.imagePath('pvc-1', 'qcow2'), Layout.backingRef('snap-2', 'qcow2'));
    qcow2(layout.snapshotImage('snap-2', 'qcow2'), Layout.backingRef('snap-1', 'raw'));
    mkdirSync(layout.snapshotDir('snap-1'), { recursive: true });
    writeFileSync(layout.snapshotImage('snap-1', 'raw'), Buffer.alloc(512)); // raw: no header to read
    expect(await headerChain(layout, layout.imagePath('pvc-1', 'qcow2'))).toEqual([
      { id: 'snap-2', format: 'qcow2' },
      { id: 'snap-1', format: 'raw' },
    ]);
    qcow2(layout.imagePath('pvc-2', 'qcow2'));
    expect(await headerChain(layout, layout.imagePath('pvc-2', 'qcow2'))).toEqual([]);
  });

  it('refuses a backing name that is not a snapshot of the same mount', async () => {
    const layout = mount();
    qcow2(layout.imagePath('pvc-1', 'qcow2'), '/etc/shadow');
    await expect(headerChain(layout, layout.imagePath('pvc-1', 'qcow2'))).rejects.toThrow(/reads through \/etc\/shadow, which is not a snapshot/);
    qcow2(layout.imagePath('pvc-2', 'qcow2'), '../../snapshots/../volumes/x/disk.qcow2');
    await expect(headerChain(layout, layout.imagePath('pvc-2', 'qcow2'))).rejects.toThrow(/not a snapshot/);
    // '..' as a snapshot id would name filedriver/disk.qcow2, outside snapshots/.
    qcow2(layout.imagePath('pvc-3', 'qcow2'), '../../snapshots/../disk.qcow2');
    await expect(headerChain(layout, layout.imagePath('pvc-3', 'qcow2'))).rejects.toThrow(/not a snapshot/);
  });

  it('stops at a loop instead of following it forever', async () => {
    const layout = mount();
    qcow2(layout.imagePath('pvc-1', 'qcow2'), Layout.backingRef('snap-a', 'qcow2'));
    qcow2(layout.snapshotImage('snap-a', 'qcow2'), Layout.backingRef('snap-b', 'qcow2'));
    qcow2(layout.snapshotImage('snap-b', 'qcow2'), Layout.backingRef('snap-a', 'qcow2'));
    await expect(headerChain(layout, layout.imagePath('pvc-1', 'qcow2'))).rejects.toThrow(/backing loop/);
  });
});
