import { describe, expect, it } from 'vitest';
import { mountAt, parseMountInfo } from '../../src/system/mountinfo.js';
import { parseInfo } from '../../src/system/qemu-img.js';
import { summarise } from '../../src/system/command.js';

// Captured from Debian 12 (kernel 6.1), trimmed.
const MOUNTINFO = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
45 22 0:40 / /srv/with\\040space rw,relatime shared:20 - nfs4 filer:/export rw,vers=4.2
46 22 7:0 / /tmp/fdtest-x/mnt rw,relatime shared:21 - xfs /dev/loop0 rw,attr2
47 46 0:50 / /tmp/fdtest-x/mnt rw,relatime shared:22 - tmpfs fdtest rw,size=65536k
`;

// qemu-img 7.2 info --output=json for a 2^53+1MiB qcow2.
const INFO = `{
    "virtual-size": 9007199255789568,
    "filename": "disk.qcow2",
    "cluster-size": 2097152,
    "format": "qcow2",
    "actual-size": 4202496,
    "format-specific": { "type": "qcow2", "data": { "compat": "1.1" } },
    "dirty-flag": false
}`;

describe('mountinfo', () => {
  const entries = parseMountInfo(MOUNTINFO);
  it('parses fields and unescapes paths', () => {
    expect(entries).toHaveLength(4);
    expect(entries[1]).toMatchObject({ mountPoint: '/srv/with space', fsType: 'nfs4', source: 'filer:/export' });
  });
  it('finds the topmost mount at a path', () => {
    expect(mountAt(entries, '/tmp/fdtest-x/mnt')?.fsType).toBe('tmpfs');
    expect(mountAt(entries, '/tmp/fdtest-x')).toBeUndefined();
  });
});

describe('qemu-img info', () => {
  it('keeps sizes above 2^53 exact', () => {
    expect(parseInfo(INFO)).toEqual({ format: 'qcow2', virtualSize: 9007199255789568n, actualSize: 4202496n, backingFile: undefined });
  });

  it("reads the image's sizes, not those of its file child that qemu 11 lists first", () => {
    // qemu-img 11.1 info --output=json, shortened; a filename with brackets and a key's name in it.
    const info = `{
    "children": [ { "name": "file", "info": { "children": [ ], "virtual-size": 8716288, "filename": "a{\\"virtual-size\\": 1}[.qcow2", "format": "file", "actual-size": 8654848 } } ],
    "virtual-size": 1073741824, "filename": "a{\\"virtual-size\\": 1}[.qcow2", "cluster-size": 65536, "format": "qcow2", "actual-size": 8654848 }`;
    expect(parseInfo(info)).toEqual({ format: 'qcow2', virtualSize: 1073741824n, actualSize: 8654848n, backingFile: undefined });
  });
});

describe('stderr summaries', () => {
  it('keeps the last lines, bounded', () => {
    expect(summarise('a\n\nb\nc\nd\n')).toBe('b; c; d');
    expect(summarise('x'.repeat(1000)).length).toBeLessThanOrEqual(401);
  });
});

describe('logged commands', () => {
  it('hide credential-like option values', async () => {
    const { loggable } = await import('../../src/system/command.js');
    expect(loggable(['mount', '-o', 'ro,password=hunter2,cred=x', '/dev/loop0', '/mnt'])).toEqual([
      'mount',
      '-o',
      'ro,password=***,cred=***',
      '/dev/loop0',
      '/mnt',
    ]);
  });
});
