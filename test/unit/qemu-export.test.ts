/**
 * The data plane's command line, the QMP steps of an export, how a qemu's
 * schema is read, and which qemu the tools run as.
 */
import { describe, expect, it } from 'vitest';
import { featuresOf, planeArgs, type DataPlaneFeatures } from '../../src/system/data-plane.js';
import { exportSteps } from '../../src/system/qemu-export.js';
import { findQemu, systemQemu, toolOf } from '../../src/system/qemu-tools.js';

const qemu11: DataPlaneFeatures = { version: '11.1.3', asyncDirectIo: true, multiThread: true, iothreads: ['io0', 'io1'] };
const qemu72: DataPlaneFeatures = { version: '7.2.22', asyncDirectIo: false, multiThread: false, iothreads: ['io0', 'io1'] };
const TAG = '0123456789abcdef';

describe('data plane command line', () => {
  it('starts iothreads and the QMP monitor, and exports nothing by itself', () => {
    expect(planeArgs('/k/plugins/d/dp', 2, true)).toEqual([
      'qemu-storage-daemon',
      '--object',
      'iothread,id=io0',
      '--object',
      'iothread,id=io1',
      '--chardev',
      'socket,id=qmp0,path=/k/plugins/d/dp/qmp.sock,server=on,wait=off',
      '--monitor',
      'chardev=qmp0',
      '--pidfile',
      '/k/plugins/d/dp/qsd.pid',
      '--daemonize',
    ]);
    expect(planeArgs('/a,b', 1, false)).not.toContain('--daemonize');
    expect(planeArgs('/a,b', 1, false)).toContain('socket,id=qmp0,path=/a,,b/qmp.sock,server=on,wait=off');
  });
});

describe('export steps', () => {
  it('exports a writable qcow2 on every iothread with growable (async direct I/O) on qemu 11', () => {
    const steps = exportSteps(
      '/share/v,1/disk.qcow2',
      { format: 'qcow2', readOnly: false, stateDir: '/s', tag: TAG },
      '/s/export.raw',
      'io_uring',
      true,
      qemu11,
    );
    expect(steps).toEqual([
      {
        command: 'blockdev-add',
        args: {
          driver: 'file',
          filename: '/share/v,1/disk.qcow2',
          aio: 'io_uring',
          cache: { direct: true },
          locking: 'on',
          'node-name': `t${TAG}f`,
          discard: 'unmap',
        },
      },
      { command: 'blockdev-add', args: { driver: 'qcow2', 'node-name': `t${TAG}`, file: `t${TAG}f`, discard: 'unmap' } },
      {
        command: 'block-export-add',
        args: {
          type: 'fuse',
          id: `e${TAG}`,
          'node-name': `t${TAG}`,
          mountpoint: '/s/export.raw',
          writable: true,
          growable: true,
          iothread: ['io0', 'io1'],
        },
      },
    ]);
  });

  it('on qemu 7.2: neither growable nor iothreads (its export corrupts data under a direct-io loop)', () => {
    const steps = exportSteps('/i.qcow2', { format: 'qcow2', readOnly: false, stateDir: '/s', tag: TAG }, '/s/export.raw', 'io_uring', true, qemu72);
    expect(steps.at(-1)).toEqual({
      command: 'block-export-add',
      args: { type: 'fuse', id: `e${TAG}`, 'node-name': `t${TAG}`, mountpoint: '/s/export.raw', writable: true },
    });
  });

  it('opens a backing chain as named read-only nodes, bottom first, under the image', () => {
    const chain = [
      { node: `s${TAG}bbbb`, image: '/share/filedriver/snapshots/b/disk.qcow2', format: 'qcow2' as const },
      { node: `s${TAG}aaaa`, image: '/share/filedriver/snapshots/a/disk.raw', format: 'raw' as const },
    ];
    const steps = exportSteps(
      '/share/filedriver/volumes/v/disk.qcow2',
      { format: 'qcow2', readOnly: false, stateDir: '/s', tag: TAG, chain },
      '/s/export.raw',
      'threads',
      false,
      qemu11,
    );
    const file = (filename: string) => ({ driver: 'file', filename, aio: 'threads', cache: { direct: false }, locking: 'on' });
    expect(steps.slice(0, 2).map((s) => s.args)).toEqual([
      { driver: 'raw', 'node-name': `s${TAG}aaaa`, 'read-only': true, file: file('/share/filedriver/snapshots/a/disk.raw') },
      {
        driver: 'qcow2',
        'node-name': `s${TAG}bbbb`,
        'read-only': true,
        file: file('/share/filedriver/snapshots/b/disk.qcow2'),
        backing: `s${TAG}aaaa`,
      },
    ]);
    expect(steps[3]?.args).toMatchObject({ 'node-name': `t${TAG}`, backing: `s${TAG}bbbb` });
  });

  it('exports a raw image read-only straight from its file node, without growable', () => {
    const steps = exportSteps(
      '/share/disk.raw',
      { format: 'raw', readOnly: true, stateDir: '/s', tag: TAG },
      '/s/export.raw',
      'io_uring',
      true,
      qemu11,
    );
    expect(steps).toHaveLength(2);
    expect(steps[0]?.args).toMatchObject({ 'node-name': `t${TAG}f`, 'read-only': true });
    expect(steps[1]?.args).toEqual({
      type: 'fuse',
      id: `e${TAG}`,
      'node-name': `t${TAG}f`,
      mountpoint: '/s/export.raw',
      writable: false,
      iothread: ['io0', 'io1'],
    });
    expect(JSON.stringify(steps)).not.toMatch(/force-share|discard/);
  });

  it("keeps every node name within qemu's 31 characters", () => {
    const names = exportSteps('/i', { format: 'qcow2', readOnly: false, stateDir: '/s', tag: TAG }, '/s/e', 'io_uring', true, qemu11).map(
      (s) => s.args['node-name'] as string,
    );
    for (const n of names) expect(n.length).toBeLessThanOrEqual(31);
  });
});

describe("reading a qemu's features from its QMP schema", () => {
  // Shapes as query-qmp-schema gives them: type names masked, member names real.
  const schema = (iothreadType: string, fuseMembers: string[]) => [
    { name: 'block-export-add', 'meta-type': 'command', 'arg-type': '10' },
    {
      name: '10',
      'meta-type': 'object',
      members: [
        { name: 'id', type: 'str' },
        { name: 'iothread', type: iothreadType },
      ],
      variants: [
        { case: 'fuse', type: '11' },
        { case: 'nbd', type: '12' },
      ],
    },
    { name: '11', 'meta-type': 'object', members: fuseMembers.map((name) => ({ name, type: 'str' })) },
    { name: '20', 'meta-type': 'alternate', members: [{ type: 'str' }, { type: '[str]' }] },
    { name: '[str]', 'meta-type': 'array' },
  ];

  it('qemu 11: iothread takes a list, the FUSE export has growable', () => {
    expect(featuresOf(schema('20', ['mountpoint', 'growable', 'allow-other']), '11.1.3', ['io0'])).toEqual({
      version: '11.1.3',
      asyncDirectIo: true,
      multiThread: true,
      iothreads: ['io0'],
    });
  });

  it('qemu 7.2: one iothread name, and growable does not mean async direct I/O there', () => {
    expect(featuresOf(schema('str', ['mountpoint', 'growable']), '7.2.22', [])).toMatchObject({ asyncDirectIo: false, multiThread: false });
  });

  it('an unexpected schema gives the safe answers', () => {
    expect(featuresOf([], '12.0.0', [])).toMatchObject({ asyncDirectIo: false, multiThread: false });
  });
});

describe('which qemu runs', () => {
  it('the system qemu by default when no private one is installed at the named place', () => {
    expect(systemQemu.argv('qemu-img', ['info', 'x'])).toEqual(['qemu-img', 'info', 'x']);
    expect(findQemu('system')).toBe(systemQemu);
    expect(() => findQemu('/nonexistent/qemu')).toThrow(/no filedriver-qemu\.json.*install-qemu\.sh/);
  });

  it('a tool through a prefix keeps its name for logs and process checks', () => {
    expect(toolOf(['/p/bin/qemu-img', '--library-path', '/p/lib', '--argv0', 'qemu-img', '/p/usr/bin/qemu-img', 'info'])).toBe('qemu-img');
    expect(toolOf(['/usr/bin/losetup', '-a'])).toBe('losetup');
  });
});
