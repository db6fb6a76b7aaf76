import { describe, expect, it } from 'vitest';
import { headerProblem } from '../../src/storage/image-header.js';

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
