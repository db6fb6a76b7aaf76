import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { humanBytes } from '../../src/cli/context.js';
import { persistentVolumeYaml, pvName, quantity } from '../../src/cli/pv.js';
import { buildAdminConfig, ConfigError } from '../../src/config.js';
import { parseChain } from '../../src/system/qemu-img.js';

// qemu-img 7.2 info --backing-chain --output=json: an overlay on a raw image, and a qcow2 with a data file; trimmed.
const CHAIN = `[
    {
        "backing-filename-format": "raw",
        "virtual-size": 16777216,
        "filename": "/srv/a/images/top.qcow2",
        "format": "qcow2",
        "format-specific": { "type": "qcow2", "data": { "compat": "1.1", "corrupt": false } },
        "full-backing-filename": "/srv/a/images/base.raw",
        "backing-filename": "base.raw"
    },
    { "virtual-size": 16777216, "filename": "/srv/a/images/base.raw", "format": "raw" }
]`;
const DATA_FILE = `{
    "filename": "/srv/a/df.qcow2",
    "format": "qcow2",
    "format-specific": { "type": "qcow2", "data": { "compat": "1.1", "data-file": "/elsewhere/data.raw", "data-file-raw": false } }
}`;

describe('qemu-img backing chains', () => {
  it('lists each image top first', () => {
    expect(parseChain(CHAIN)).toEqual([
      { filename: '/srv/a/images/top.qcow2', format: 'qcow2', dataFile: undefined },
      { filename: '/srv/a/images/base.raw', format: 'raw', dataFile: undefined },
    ]);
  });
  it('names an external data file', () => {
    expect(parseChain(DATA_FILE)).toEqual([{ filename: '/srv/a/df.qcow2', format: 'qcow2', dataFile: '/elsewhere/data.raw' }]);
  });
});

describe('PersistentVolume for an imported image', () => {
  it.each([
    [64n << 20n, '64Mi'],
    [3n << 30n, '3Gi'],
    [1536n << 20n, '1536Mi'],
    [2n << 40n, '2Ti'],
    [512n, '512'],
    [4096n, '4Ki'],
  ])('gives %s bytes as %s', (bytes, text) => {
    expect(quantity(bytes)).toBe(text);
  });

  it.each([
    ['vm-1', 'vm-1'],
    ['My_Disk.v2', 'my-disk.v2'],
    ['_x_', 'x'],
    ['___', 'imported-volume'],
  ])('names the PV of volume %s %s', (id, name) => {
    expect(pvName(id)).toBe(name);
  });

  it('requires the mount topology and keeps the data on delete', () => {
    const pv = parseYaml(
      persistentVolumeYaml({
        driverName: 'files.example.com',
        volumeId: 'Vm_1',
        mount: 'fast',
        format: 'raw',
        sizeBytes: 1n << 30n,
        origin: 'fast/vm.raw',
      }),
    );
    expect(pv.metadata.name).toBe('vm-1');
    expect(pv.spec).toMatchObject({
      capacity: { storage: '1Gi' },
      persistentVolumeReclaimPolicy: 'Retain',
      storageClassName: '',
      csi: { driver: 'files.example.com', volumeHandle: 'Vm_1', volumeAttributes: { format: 'raw', mount: 'fast' } },
    });
    expect(pv.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions).toEqual([
      { key: 'files.example.com/mount-fast', operator: 'In', values: ['true'] },
    ]);
  });
});

describe('admin command settings', () => {
  it('need mounts but no endpoint', () => {
    const config = buildAdminConfig({ mounts: ['a=/srv/a', 'b=/srv/b/'] }, { driverName: 'files.example.com' });
    expect(config).toEqual({
      driverName: 'files.example.com',
      defaultFormat: 'qcow2',
      mounts: [
        { name: 'a', path: '/srv/a' },
        { name: 'b', path: '/srv/b' },
      ],
      overSubscription: 1,
      healthCacheSeconds: 2,
      qemu: undefined,
      kubeletDir: '/var/lib/kubelet',
    });
  });
  it("take the qemu and the kubelet dir (doctor looks at this host's data plane there)", () => {
    expect(buildAdminConfig({ mounts: ['a=/x'], qemu: 'system', kubeletDir: '/k' })).toMatchObject({ qemu: 'system', kubeletDir: '/k' });
    expect(() => buildAdminConfig({ mounts: ['a=/x'], qemu: 'relative/dir' })).toThrow(
      /--qemu relative\/dir must be an absolute directory or system/,
    );
  });
  it('report bad settings as serve does', () => {
    expect(() => buildAdminConfig({})).toThrow(ConfigError);
    expect(() => buildAdminConfig({ mounts: ['a=/x'], overSubscription: '0' })).toThrow(/over-subscription/);
  });
});

describe('human sizes', () => {
  it.each([
    [0n, '0 B'],
    [1536n, '1.5 KiB'],
    [64n << 20n, '64 MiB'],
    [(1n << 30n) + (1n << 29n), '1.5 GiB'],
    [200n << 30n, '200 GiB'],
  ])('%s bytes read %s', (bytes, text) => {
    expect(humanBytes(bytes)).toBe(text);
  });
});
