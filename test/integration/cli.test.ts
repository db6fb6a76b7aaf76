/**
 * The admin commands (import, move, export, list, doctor) run as the real
 * binary on scratch mounts (xfs with reflink, xfs without, tmpfs), next to a
 * real server that must see what they did. Data is checked with qemu-io.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { createRequest, MiB, mountCap } from '../helpers/csi.js';
import { registerNodes } from '../helpers/nodes.js';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { MAIN, startDriver, type Driver } from '../helpers/server.js';
import { ifMade } from '../helpers/teardown.js';
import { untilExited } from '../helpers/wait.js';

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function qemuIo(image: string, format: string, command: string): string {
  return execFileSync('qemu-io', ['-f', format, '-c', command, image], { encoding: 'utf8' });
}
/** qemu-io exits 1 and says so on stdout when the data differs from the pattern. */
function matches(image: string, format: string, pattern: number, offset = 0, len = '1M'): boolean {
  try {
    return !/Pattern verification failed/.test(qemuIo(image, format, `read -P 0x${pattern.toString(16)} ${offset} ${len}`));
  } catch (e) {
    if (/Pattern verification failed/.test(String((e as { stdout?: string }).stdout))) return false;
    throw e;
  }
}
function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}
function info(image: string): Record<string, unknown> {
  return JSON.parse(qemuImg('info', '-U', '--output=json', image)) as Record<string, unknown>;
}

describe.skipIf(!isRoot)('admin commands', () => {
  let fast: Scratch; // xfs with reflink
  let plain: Scratch; // xfs without reflink
  let ram: Scratch; // tmpfs
  let out: Scratch; // a plain directory for exports
  let driver: Driver;
  let env: Record<string, string>;

  const fd = (...args: string[]): Promise<Result> =>
    new Promise((resolve) => {
      execFile(process.execPath, [MAIN, ...args], { env, encoding: 'utf8' }, (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      });
    });
  const volDir = (s: Scratch, id: string) => join(s.path, 'filedriver/volumes', id);
  const volImage = (s: Scratch, id: string, format = 'qcow2') => join(volDir(s, id), `disk.${format}`);
  const record = (s: Scratch, id: string) => JSON.parse(readFileSync(join(volDir(s, id), 'volume.json'), 'utf8'));
  /** A new image in the mount's images/ with 1 MiB of `pattern` at offset 0. */
  const image = (s: Scratch, name: string, format: string, pattern: number, size = '64M') => {
    const path = join(s.path, 'images', name);
    mkdirSync(join(s.path, 'images'), { recursive: true });
    qemuImg('create', '-q', '-f', format, path, size);
    qemuIo(path, format, `write -P 0x${pattern.toString(16)} 0 1M`);
    return path;
  };
  const tmpEntries = (s: Scratch) => readdirSync(join(s.path, 'filedriver/tmp')).filter((e) => !e.startsWith('.probe-'));
  const c = (method: string, req: object) => driver.client.controller(method, req);
  /** A qemu-storage-daemon holding the image open for writing, as a VM would; returns its stop. */
  const holdWithQemu = (img: string, format: 'qcow2' | 'raw') => {
    const pidfile = join(out.path, `qsd-${format}.pid`);
    const top = format === 'qcow2' ? ['--blockdev', 'driver=qcow2,node-name=top,file=f'] : [];
    execFileSync('qemu-storage-daemon', [
      '--blockdev',
      `driver=file,node-name=f,filename=${img}`,
      ...top,
      '--nbd-server',
      `addr.type=unix,addr.path=${join(out.path, `qsd-${format}.sock`)}`,
      '--export',
      `type=nbd,id=e,node-name=${format === 'qcow2' ? 'top' : 'f'},writable=on`,
      '--daemonize',
      '--pidfile',
      pidfile,
    ]);
    const pid = Number(readFileSync(pidfile, 'utf8').trim());
    return async () => {
      process.kill(pid, 'SIGTERM');
      // Its image lock goes when it has exited.
      await untilExited(pid);
    };
  };

  beforeAll(async () => {
    rootOnlyReason();
    fast = makeScratch('xfs', 1024);
    plain = makeScratch('xfs-noreflink', 1024);
    ram = makeScratch('tmpfs', 512);
    out = makeScratch('dir');
    env = { ...process.env, FILEDRIVER_MOUNTS: `fast=${fast.path},plain=${plain.path},ram=${ram.path}` };
    driver = await startDriver({ mounts: { fast: fast.path, plain: plain.path, ram: ram.path }, args: ['--over-subscription', '10'] });
  });
  afterAll(async () => {
    await ifMade(driver)?.stop();
    for (const s of [fast, plain, ram, out]) ifMade(s)?.cleanup();
  });

  it.each(['import', 'move', 'export', 'list', 'doctor'])('%s --help explains the command', async (command) => {
    const res = await fd(command, '--help');
    expect(res.code).toBe(0);
    expect(res.stdout).toContain(`Usage: filedriver ${command}`);
    expect(res.stdout).toContain('--share NAME=PATH');
    expect((await fd('--help')).stdout).toContain(`  ${command} `);
  });

  it('imports a qcow2 image by reflink, leaving the original, and prints a PersistentVolume', async () => {
    const original = image(fast, 'vm-a.qcow2', 'qcow2', 0xab);
    const before = statSync(original).mtimeMs;
    const res = await fd('import', '--mount', 'fast', '--path', 'images/vm-a.qcow2');
    expect(res.stderr).toMatch(/as volume vm-a on mount fast: qcow2, 64 MiB, by reflink/);
    expect(res.code).toBe(0);
    const pv = parseYaml(res.stdout);
    expect(pv).toMatchObject({
      apiVersion: 'v1',
      kind: 'PersistentVolume',
      metadata: { name: 'vm-a' },
      spec: {
        capacity: { storage: '64Mi' },
        volumeMode: 'Filesystem',
        accessModes: ['ReadWriteOnce'],
        persistentVolumeReclaimPolicy: 'Retain',
        storageClassName: '',
        csi: { driver: 'filedriver.dev', volumeHandle: 'vm-a', fsType: 'ext4', volumeAttributes: { format: 'qcow2', mount: 'fast' } },
        nodeAffinity: {
          required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'filedriver.dev/mount-fast', operator: 'In', values: ['true'] }] }] },
        },
      },
    });
    expect(res.stdout).toMatch(/volumeMode: Filesystem # or Block/);
    expect(record(fast, 'vm-a')).toMatchObject({
      id: 'vm-a',
      name: 'vm-a',
      format: 'qcow2',
      sizeBytes: String(64n * MiB),
      parameters: { format: 'qcow2' },
      contentSource: null,
      backing: null,
      pvc: null,
      publications: [],
    });
    expect(matches(volImage(fast, 'vm-a'), 'qcow2', 0xab)).toBe(true);
    qemuIo(volImage(fast, 'vm-a'), 'qcow2', 'write -P 0xcd 0 1M');
    expect(matches(original, 'qcow2', 0xab)).toBe(true);
    expect(statSync(original).mtimeMs).toBe(before);
    expect(tmpEntries(fast)).toEqual([]);
  });

  it('the server sees an imported volume', async () => {
    const res = await c('ControllerGetVolume', { volume_id: 'vm-a' });
    expect(res.volume).toMatchObject({
      volume_id: 'vm-a',
      capacity_bytes: String(64n * MiB),
      volume_context: { format: 'qcow2', mount: 'fast' },
      accessible_topology: [{ segments: { 'filedriver.dev/mount-fast': 'true' } }],
    });
    expect(res.status.volume_condition.abnormal).toBe(false);
  });

  it('imports a raw image by copy where there is no reflink, detecting the format', async () => {
    image(plain, 'data.img', 'raw', 0x11, '32M');
    const res = await fd('import', '--mount', 'plain', '--path', 'images/data.img', '--name', 'data-1', '--copy');
    expect(res.code).toBe(0);
    expect(res.stderr).toMatch(/as volume data-1 on mount plain: raw, 32 MiB, by copy/);
    expect(parseYaml(res.stdout).spec.csi.volumeAttributes).toEqual({ format: 'raw', mount: 'plain' });
    expect(record(plain, 'data-1')).toMatchObject({ format: 'raw', sizeBytes: String(32n * MiB), parameters: { format: 'raw' } });
    expect(matches(volImage(plain, 'data-1', 'raw'), 'raw', 0x11)).toBe(true);
    expect(existsSync(join(plain.path, 'images/data.img'))).toBe(true);
  });

  it.each([
    ['qcow2', 'ram'],
    ['raw', 'plain'],
  ] as const)('moves a %s image into the driver tree on %s', async (format, mount) => {
    const s = mount === 'ram' ? ram : plain;
    const original = image(s, `moved.${format}`, format, 0x42);
    const res = await fd('import', '--mount', mount, '--path', `images/moved.${format}`, '--name', `moved-${format}`, '--move');
    expect(res.code).toBe(0);
    expect(res.stderr).toMatch(/by move/);
    expect(existsSync(original)).toBe(false);
    expect(record(s, `moved-${format}`).format).toBe(format);
    expect(matches(volImage(s, `moved-${format}`, format), format, 0x42)).toBe(true);
  });

  it('flattens a backing chain inside the mount when copying, and will not move it', async () => {
    const base = image(ram, 'base.qcow2', 'qcow2', 0x5a);
    const overlay = join(ram.path, 'images/overlay.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', overlay, '64M');
    qemuIo(overlay, 'qcow2', 'write -P 0x77 1M 1M');
    const moved = await fd('import', '--mount', 'ram', '--path', 'images/overlay.qcow2', '--move');
    expect(moved.code).toBe(1);
    expect(moved.stderr).toMatch(/filedriver: .*is backed by .*base\.qcow2.*use --copy/);
    expect(existsSync(overlay)).toBe(true);
    const res = await fd('import', '--mount', 'ram', '--path', 'images/overlay.qcow2');
    expect(res.code).toBe(0);
    expect(res.stderr).toMatch(/backing chain flattened/);
    expect(info(volImage(ram, 'overlay'))['backing-filename']).toBeUndefined();
    expect(matches(volImage(ram, 'overlay'), 'qcow2', 0x5a)).toBe(true);
    expect(matches(volImage(ram, 'overlay'), 'qcow2', 0x77, 1024 * 1024)).toBe(true);
    expect(existsSync(base)).toBe(true);
  });

  describe('refuses', () => {
    const refused = async (args: string[], message: RegExp) => {
      const before = readdirSync(join(fast.path, 'filedriver/volumes')).sort();
      const res = await fd('import', '--mount', 'fast', ...args);
      expect(res.stderr).toMatch(message);
      expect(res.code).toBe(1);
      expect(res.stdout).toBe('');
      expect(readdirSync(join(fast.path, 'filedriver/volumes')).sort()).toEqual(before);
      expect(tmpEntries(fast)).toEqual([]);
    };

    it('a path that climbs out of the mount', async () => {
      image(plain, 'other.qcow2', 'qcow2', 0x01);
      const rel = `../../${plain.path.split('/').slice(-2).join('/')}/images/other.qcow2`;
      await refused(['--path', rel], /filedriver: .*resolves to .*outside the mount/);
    });

    it('a symlink that leads out of the mount', async () => {
      symlinkSync(join(plain.path, 'images/other.qcow2'), join(fast.path, 'images/link.qcow2'));
      await refused(['--path', 'images/link.qcow2'], /filedriver: images\/link\.qcow2 resolves to .*outside the mount/);
    });

    it("an image inside filedriver's own tree", async () => {
      await refused(['--path', 'filedriver/volumes/vm-a/disk.qcow2', '--name', 'again'], /inside filedriver's own tree/);
    });

    it('a backing chain that leaves the mount', async () => {
      qemuImg(
        'create',
        '-q',
        '-f',
        'qcow2',
        '-b',
        join(plain.path, 'images/other.qcow2'),
        '-F',
        'qcow2',
        join(fast.path, 'images/escape.qcow2'),
        '64M',
      );
      await refused(['--path', 'images/escape.qcow2'], /is backed by .*other\.qcow2, outside the mount/);
    });

    it.each(['qcow2', 'raw'] as const)('a %s image a qemu process holds', async (format) => {
      image(fast, `busy.${format}`, format, 0x02);
      const release = holdWithQemu(join(fast.path, 'images', `busy.${format}`), format);
      try {
        await refused(['--path', `images/busy.${format}`], /in use by another qemu process \(qemu image lock held\)/);
      } finally {
        await release();
      }
      expect((await fd('import', '--mount', 'fast', '--path', `images/busy.${format}`, '--name', `busy-${format}`)).code).toBe(0);
    });

    it('a raw image attached to a loop device', async () => {
      const img = image(fast, 'looped.raw', 'raw', 0x03, '16M');
      const device = execFileSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).trim();
      try {
        await refused(['--path', 'images/looped.raw'], new RegExp(`in use: attached to loop device ${device}`));
      } finally {
        execFileSync('losetup', ['-d', device]);
      }
    });

    it('a name whose volume exists, on any mount', async () => {
      image(fast, 'dup.qcow2', 'qcow2', 0x04);
      await refused(['--path', 'images/dup.qcow2', '--name', 'data-1'], /volume data-1 already exists on mount plain; choose another --name/);
    });

    it('a bad command line with exit code 2', async () => {
      expect((await fd('import', '--path', 'images/dup.qcow2')).code).toBe(2);
      expect((await fd('import', '--mount', 'fast', '--path', 'x', '--copy', '--move')).code).toBe(2);
      expect((await fd('import', '--mount', 'fast', '--path', 'x', '--format', 'vmdk')).code).toBe(2);
      const res = await fd('list', '--share', 'bad');
      expect(res.code).toBe(2);
      expect(res.stderr).toMatch(/--share bad must be NAME=PATH/);
    });
  });

  it('moves a volume across mounts keeping its id and data, through its node while published', async () => {
    const publish = { volume_id: 'vm-a', node_id: 'node-a', volume_capability: mountCap(), readonly: false };
    await c('ControllerPublishVolume', publish);
    // Published (not staged here): a live move, which waits for the node serving it.
    const waiting = await fd('move', 'vm-a', '--to', 'plain');
    expect(waiting.code).toBe(1);
    expect(waiting.stderr).toMatch(/filedriver: volume vm-a is moving to mount plain; the node serving it has yet to switch; retry/);
    expect(existsSync(volDir(plain, 'vm-a'))).toBe(false);
    await c('ControllerUnpublishVolume', { volume_id: 'vm-a', node_id: 'node-a' });

    const res = await fd('move', 'vm-a', '--to', 'plain');
    expect(res.stderr).toMatch(/moved volume vm-a from mount fast to plain/);
    expect(res.code).toBe(0);
    expect(existsSync(volDir(fast, 'vm-a'))).toBe(false);
    expect(record(plain, 'vm-a')).toMatchObject({ id: 'vm-a', format: 'qcow2', publications: [] });
    expect(matches(volImage(plain, 'vm-a'), 'qcow2', 0xcd)).toBe(true);
    expect((await c('ControllerGetVolume', { volume_id: 'vm-a' })).volume.volume_context.mount).toBe('plain');
    expect((await fd('move', 'nope', '--to', 'fast')).code).toBe(1);
    expect((await fd('move', 'vm-a', '--to', 'nowhere')).stderr).toMatch(/mount nowhere is not configured/);
  });

  it('flattens a linked clone it moves to another mount', async () => {
    await c('CreateVolume', createRequest('pvc-src', { parameters: { mounts: 'fast' } }));
    qemuIo(volImage(fast, 'pvc-src'), 'qcow2', 'write -P 0x99 0 1M');
    await c('CreateSnapshot', { name: 'snap-src', source_volume_id: 'pvc-src' });
    await c(
      'CreateVolume',
      createRequest('pvc-linked', { parameters: { mounts: 'fast' }, volume_content_source: { snapshot: { snapshot_id: 'snap-src' } } }),
    );
    expect(readdirSync(join(fast.path, 'filedriver/snapshots/snap-src/refs'))).toEqual(['pvc-linked']);
    const res = await fd('move', 'pvc-linked', '--to', 'ram');
    expect(res.code).toBe(0);
    expect(res.stderr).toMatch(/flattened: it no longer depends on snapshot snap-src/);
    expect(record(ram, 'pvc-linked').backing).toBeNull();
    expect(info(volImage(ram, 'pvc-linked'))['backing-filename']).toBeUndefined();
    expect(matches(volImage(ram, 'pvc-linked'), 'qcow2', 0x99)).toBe(true);
    expect(readdirSync(join(fast.path, 'filedriver/snapshots/snap-src/refs'))).toEqual([]);
  });

  it('exports a volume, flattened and in another format, and never overwrites', async () => {
    const target = join(out.path, 'vm-a.raw');
    const res = await fd('export', 'vm-a', '--to', target, '--format', 'raw');
    expect(res.code).toBe(0);
    expect(info(target).format).toBe('raw');
    expect(matches(target, 'raw', 0xcd)).toBe(true);
    expect(existsSync(`${target}.partial`)).toBe(false);

    const before = statSync(target).mtimeMs;
    const again = await fd('export', 'vm-a', '--to', target);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/exists; export never overwrites/);
    expect(statSync(target).mtimeMs).toBe(before);
    expect((await fd('export', 'vm-a', '--to', 'relative.qcow2')).code).toBe(2);

    const clone = join(out.path, 'linked.qcow2');
    await c(
      'CreateVolume',
      createRequest('pvc-linked-2', { parameters: { mounts: 'fast' }, volume_content_source: { snapshot: { snapshot_id: 'snap-src' } } }),
    );
    expect((await fd('export', 'pvc-linked-2', '--to', clone)).code).toBe(0);
    expect(info(clone)['backing-filename']).toBeUndefined();
    expect(matches(clone, 'qcow2', 0x99)).toBe(true);
  });

  it('lists volumes and snapshots per mount', async () => {
    // Hidden: two clones still depend on it (with one, it would be merged into that one and removed).
    await c(
      'CreateVolume',
      createRequest('pvc-linked-3', { parameters: { mounts: 'fast' }, volume_content_source: { snapshot: { snapshot_id: 'snap-src' } } }),
    );
    await c('DeleteSnapshot', { snapshot_id: 'snap-src' });
    const res = await fd('list');
    expect(res.code).toBe(0);
    const row = (id: string) => res.stdout.split('\n').find((l) => l.split(/\s+/)[2] === id) ?? '';
    expect(row('vm-a').split(/\s+/).slice(0, 5)).toEqual(['plain', 'volume', 'vm-a', 'qcow2', '64']);
    expect(row('snap-src')).toMatch(/^fast\s+snapshot\s+snap-src\s+qcow2\s+64 MiB.*pvc-linked-2,pvc-linked-3\s+hidden\s/);

    const json = JSON.parse((await fd('list', '--json')).stdout);
    const fastJson = json.mounts.find((m: { name: string }) => m.name === 'fast');
    expect(fastJson).toMatchObject({ mounted: true, usable: true });
    const linked = fastJson.volumes.find((v: { id: string }) => v.id === 'pvc-linked-2');
    expect(linked).toMatchObject({ format: 'qcow2', sizeBytes: String(64n * MiB), backing: 'snap-src', publishedTo: [] });
    expect(BigInt(linked.allocatedBytes)).toBeGreaterThan(0n);
    expect(fastJson.snapshots.find((s: { id: string }) => s.id === 'snap-src')).toMatchObject({
      dependents: ['pvc-linked-2', 'pvc-linked-3'],
      hidden: true,
      internal: false,
      merging: false,
      ready: true,
    });
  });

  it('list and doctor show a snapshot layer waiting for the node that serves its volume', async () => {
    await c('CreateVolume', createRequest('pvc-wait', { parameters: { mounts: 'plain' } }));
    await c('ControllerPublishVolume', { volume_id: 'pvc-wait', node_id: 'node-a', volume_capability: mountCap(), readonly: false });
    expect((await c('CreateSnapshot', { name: 'snap-wait', source_volume_id: 'pvc-wait' })).snapshot.ready_to_use).toBe(false);
    const res = await fd('list');
    const row = (id: string) => res.stdout.split('\n').find((l) => l.split(/\s+/)[2] === id) ?? '';
    expect(row('pvc-wait')).toMatch(/\slayering\s/);
    expect(row('snap-wait')).toMatch(/\snot-ready\s/);
    const json = JSON.parse((await fd('list', '--json')).stdout);
    const plainJson = json.mounts.find((m: { name: string }) => m.name === 'plain');
    expect(plainJson.volumes.find((v: { id: string }) => v.id === 'pvc-wait').pending).toEqual([
      { kind: 'snapshot layer', detail: 'snapshot snap-wait waits for the switch', since: expect.any(String) },
    ]);
    expect(plainJson.snapshots.find((x: { id: string }) => x.id === 'snap-wait')).toMatchObject({ ready: false });
    expect((await fd('doctor')).stdout).toMatch(/note\s+pending\s+plain: volume pvc-wait: snapshot layer: snapshot snap-wait waits for the switch/);
    await c('ControllerUnpublishVolume', { volume_id: 'pvc-wait', node_id: 'node-a' });
    expect((await c('CreateSnapshot', { name: 'snap-wait', source_volume_id: 'pvc-wait' })).snapshot.ready_to_use).toBe(true);
    await c('DeleteVolume', { volume_id: 'pvc-wait' });
    await c('DeleteSnapshot', { snapshot_id: 'snap-wait' });
  });

  it('lists the nodes registered on the mounts, stale ones marked', async () => {
    await registerNodes([ram.path], ['node-down'], new Date(Date.now() - 3 * 3600_000));
    const res = await fd('list');
    const row = (node: string) => res.stdout.split('\n').find((l) => l.split(/\s+/)[0] === node) ?? '';
    expect(row('node-a')).toMatch(/^node-a\s+\d+s ago\s+fresh\s+-\s+fast,plain,ram\s/);
    expect(row('node-down')).toMatch(/^node-down\s+3h ago\s+stale\s/);
    const json = JSON.parse((await fd('list', '--json')).stdout);
    expect(json.nodes.find((n: { node: string }) => n.node === 'node-a')).toMatchObject({
      registeredOn: ['fast', 'plain', 'ram'],
      sees: ['fast', 'plain', 'ram'],
      staged: [],
      stale: false,
    });
    expect(json.nodes.find((n: { node: string }) => n.node === 'node-down')).toMatchObject({ registeredOn: ['ram'], stale: true });
  });

  it('doctor reports leftovers, broken chains, duplicates and orphaned hidden snapshots, and --fix removes what is safe', async () => {
    const healthy = await fd('doctor');
    expect(healthy.stdout).toMatch(/^healthy$/m);
    expect(healthy.code).toBe(0);

    const leftover = join(fast.path, 'filedriver/tmp', `${hostname()}_999999_abc`);
    mkdirSync(leftover);
    writeFileSync(join(leftover, 'disk.qcow2'), 'half a volume');
    const ghost = join(ram.path, 'filedriver/snapshots/ghost');
    mkdirSync(join(ghost, 'refs'), { recursive: true });
    qemuImg('create', '-q', '-f', 'qcow2', join(ghost, 'disk.qcow2'), '16M');
    writeFileSync(
      join(ghost, 'snapshot.json'),
      JSON.stringify({
        schema: 1,
        id: 'ghost',
        name: 'ghost',
        sourceVolumeId: 'gone',
        format: 'qcow2',
        sizeBytes: String(16n * MiB),
        createdAt: new Date(0).toISOString(),
        method: 'copy',
        backing: null,
        deleted: true,
        internal: false,
      }),
    );
    const hourAgo = new Date(Date.now() - 2 * 3600_000);
    utimesSync(join(ghost, 'refs'), hourAgo, hourAgo);
    execFileSync('cp', ['-a', volDir(ram, 'overlay'), volDir(plain, 'overlay')]);
    await registerNodes([plain.path], ['node-gone'], new Date(Date.now() - 3 * 24 * 3600_000));
    const broken = record(ram, 'moved-qcow2');
    writeFileSync(join(volDir(ram, 'moved-qcow2'), 'volume.json'), JSON.stringify({ ...broken, backing: 'no-such-snapshot' }));

    const sick = await fd('doctor', '--json');
    expect(sick.code).toBe(1);
    const report = JSON.parse(sick.stdout);
    expect(report.healthy).toBe(false);
    const problem = (check: string, subject: string) =>
      report.findings.find(
        (f: { check: string; subject: string; status: string }) => f.check === check && f.subject === subject && f.status === 'problem',
      );
    expect(problem('leftover', `fast: tmp/${hostname()}_999999_abc`).message).toMatch(/process 999999 on this host, which is gone/);
    expect(problem('hidden', 'ram: snapshot ghost')).toBeDefined();
    expect(problem('duplicate', 'volume overlay').message).toMatch(/mounts plain, ram|mounts ram, plain/);
    expect(problem('chain', 'ram: volume moved-qcow2').message).toMatch(/snapshot no-such-snapshot, whose directory is missing/);
    expect(report.findings.filter((f: { check: string; status: string }) => f.check === 'tool' && f.status === 'ok')).toHaveLength(6);
    expect(problem('node', 'plain: nodes/node-gone.json').message).toMatch(/no heartbeat for 3d: a node that is gone/);
    expect(report.findings.find((f: { subject: string }) => f.subject === 'ram: nodes/node-down.json')).toMatchObject({ status: 'note' });

    const fixed = await fd('doctor', '--fix');
    expect(fixed.stdout).toMatch(/^fixed\s+leftover\s+fast: tmp\/.*_999999_abc: removed/m);
    expect(fixed.stdout).toMatch(/^fixed\s+hidden\s+ram: snapshot ghost/m);
    expect(fixed.stdout).toMatch(/^fixed\s+node\s+plain: nodes\/node-gone.json/m);
    expect(existsSync(join(plain.path, 'filedriver/nodes/node-gone.json'))).toBe(false);
    expect(existsSync(join(ram.path, 'filedriver/nodes/node-down.json'))).toBe(true);
    expect(fixed.code).toBe(1); // the duplicate and the broken record are for the admin
    expect(existsSync(leftover)).toBe(false);
    expect(existsSync(ghost)).toBe(false);
    expect(existsSync(join(fast.path, 'images/vm-a.qcow2'))).toBe(true);

    rmSync(volDir(plain, 'overlay'), { recursive: true });
    writeFileSync(join(volDir(ram, 'moved-qcow2'), 'volume.json'), JSON.stringify(broken));
    const after = await fd('doctor');
    expect(after.stdout).toMatch(/^healthy$/m);
    expect(after.code).toBe(0);
  });
});
