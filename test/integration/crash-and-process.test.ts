/**
 * The server as a process: crash safety of creation, start-up clean-up,
 * signals, socket handling, and the command line.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createRequest, GiB, MiB } from '../helpers/csi.js';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { MAIN, startDriver } from '../helpers/server.js';

describe.skipIf(!isRoot)('crash safety', () => {
  let share: Scratch;
  let dir: string;
  beforeEach(() => {
    rootOnlyReason();
    share = makeScratch('xfs', 1024);
    dir = mkdtempSync(join(tmpdir(), 'fdtest-sock-'));
  });
  afterEach(() => {
    share.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('leaves no half volume after kill -9 mid-create, and a retry succeeds', async () => {
    const tree = join(share.path, 'filedriver');
    const driver = await startDriver({ mounts: { s: share.path }, dir });
    // Fully preallocated raw images take a while to write: the kill lands mid-work.
    const names = Array.from({ length: 8 }, (_, i) => `pvc-crash-${i}`);
    const req = (name: string) =>
      createRequest(name, { capacity_range: { required_bytes: String(96n * MiB) }, parameters: { format: 'raw', preallocation: 'full' } });
    const pending = names.map((n) => driver.client.controller('CreateVolume', req(n)).catch(() => undefined));
    let settled = false; // all answered (failures included): nothing left to interrupt
    void Promise.all(pending).then(() => (settled = true));
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- set by the then() above while this loop waits
    while (!settled && readdirSync(join(tree, 'tmp')).length === 0 && readdirSync(join(tree, 'volumes')).length < names.length) {
      await new Promise((r) => setTimeout(r, 5));
    }
    await driver.kill();
    await Promise.all(pending);

    for (const id of readdirSync(join(tree, 'volumes'))) {
      expect(readdirSync(join(tree, 'volumes', id)).sort()).toEqual(['disk.raw', 'volume.json']);
      expect(statSync(join(tree, 'volumes', id, 'disk.raw')).size).toBe(Number(96n * MiB));
    }
    const again = await startDriver({ mounts: { s: share.path }, dir });
    try {
      // A health probe file is not a half volume: one the kill cut short stays (start-up never removes
      // probe files, another process may be probing the share), as the admin commands' tests allow too.
      expect(readdirSync(join(tree, 'tmp')).filter((e) => !e.startsWith('.probe-'))).toEqual([]);
      for (const n of names) {
        const res = await again.client.controller('CreateVolume', req(n));
        expect(res.volume.capacity_bytes).toBe(String(96n * MiB));
      }
      expect(readdirSync(join(tree, 'volumes')).sort()).toEqual([...names].sort());
    } finally {
      await again.stop();
    }
  });

  it('round-trips sizes above 2^53 bytes exactly', async () => {
    const driver = await startDriver({ mounts: { s: share.path }, dir, args: ['--over-subscription', '100000000'] });
    try {
      const required = (1n << 53n) + 1n;
      const expected = (1n << 53n) + MiB;
      const res = await driver.client.controller(
        'CreateVolume',
        createRequest('pvc-huge', { capacity_range: { required_bytes: required.toString() }, parameters: { clusterSize: '2M' } }),
      );
      expect(res.volume.capacity_bytes).toBe(expected.toString());
      const info = execFileSync('qemu-img', ['info', '--output=json', join(share.path, 'filedriver/volumes/pvc-huge/disk.qcow2')], {
        encoding: 'utf8',
      });
      expect(/"virtual-size":\s*(\d+)/.exec(info)?.[1]).toBe(expected.toString());
      const got = await driver.client.controller('ControllerGetVolume', { volume_id: 'pvc-huge' });
      expect(got.volume.capacity_bytes).toBe(expected.toString());
      const grown = await driver.client.controller('ControllerExpandVolume', {
        volume_id: 'pvc-huge',
        capacity_range: { required_bytes: (expected + GiB).toString() },
      });
      expect(grown.capacity_bytes).toBe((expected + GiB).toString());
    } finally {
      await driver.stop();
    }
  });

  it('replaces a stale socket, makes it 0660, and exits 0 on SIGTERM', async () => {
    const socket = join(dir, 'csi.sock');
    // A crashed server leaves its socket file behind: listen, then die by SIGKILL.
    spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(socket)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    expect(statSync(socket).isSocket()).toBe(true);
    const driver = await startDriver({ mounts: { s: share.path }, dir });
    expect(statSync(socket).mode & 0o777).toBe(0o660);
    expect((await driver.client.identity('Probe')).ready.value).toBe(true);
    expect(await driver.stop()).toBe(0);
    expect(existsSync(socket)).toBe(false);
  });

  it('exits 0 on a SIGTERM that arrives as soon as it has logged its start', async () => {
    const child = spawn(
      process.execPath,
      [MAIN, 'serve', '--endpoint', `unix://${join(dir, 'early.sock')}`, '--mount', `s=${share.path}`, '--node-id', 'n3'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const exited = new Promise<number | string | null>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
    let seen = '';
    // Its start logged, or its end: a server that dies at start fails here at once, not at the test's timeout.
    const started = await Promise.race([
      new Promise<true>((resolve) => {
        child.stdout.on('data', (chunk: Buffer) => {
          seen += chunk.toString();
          if (seen.includes('starting filedriver')) resolve(true);
        });
      }),
      exited.then(() => false),
    ]);
    expect(started, `the server exited before logging its start: ${seen}`).toBe(true);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('refuses to take the socket of a server that still answers on it', async () => {
    const first = await startDriver({ mounts: { s: share.path }, dir });
    try {
      const second = spawnSync(
        process.execPath,
        [MAIN, 'serve', '--endpoint', `unix://${join(dir, 'csi.sock')}`, '--mount', `s=${share.path}`, '--node-id', 'n2'],
        {
          encoding: 'utf8',
          timeout: 20_000,
        },
      );
      expect(second.status).not.toBe(0);
      expect(second.stderr).toMatch(/another process is serving on .*csi\.sock/);
      expect((await first.client.identity('Probe')).ready.value).toBe(true);
    } finally {
      await first.stop();
    }
  });
});

describe('command line', () => {
  const cli = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20_000 });

  it('prints help and version', () => {
    expect(cli(['--help']).stdout).toMatch(/serve/);
    expect(cli(['serve', '--help']).stdout).toMatch(/--mount/);
    const v = cli(['--version']);
    expect(v.status).toBe(0);
    expect(v.stdout).toMatch(/^filedriver \d+\.\d+\.\d+/);
  });

  it('lists every invalid setting, one line each, and exits 2', () => {
    const r = cli([
      'serve',
      '--endpoint',
      'tcp://x',
      '--mount',
      'Bad_Name=/x',
      '--mount',
      'ok=relative',
      '--mode',
      'both',
      '--default-format',
      'vmdk',
    ]);
    expect(r.status).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(5);
    expect(r.stderr).toMatch(/--endpoint tcp:\/\/x must be unix:\/\//);
    expect(r.stderr).toMatch(/Bad_Name/);
    expect(r.stderr).toMatch(/path must be absolute/);
    expect(r.stderr).toMatch(/--mode both/);
    expect(r.stderr).toMatch(/--default-format vmdk/);
  });

  it('reads settings from a config file and the environment, flags winning', () => {
    const d = mkdtempSync(join(tmpdir(), 'fdtest-cfg-'));
    try {
      const file = join(d, 'config.yaml');
      writeFileSync(file, 'endpoint: unix:///tmp/x.sock\nmounts:\n  - name: a\n    path: /srv/a\ndefaultFormat: qcow3\n');
      const r = cli(['serve', '--config', file], { FILEDRIVER_MODE: 'sideways' });
      expect(r.status).toBe(2);
      expect(r.stderr.trim().split('\n').sort()).toEqual([
        'filedriver: --mode sideways must be all, controller or node',
        `filedriver: ${file}: defaultFormat qcow3 must be qcow2 or raw`,
      ]);
      const fixed = cli(['serve', '--config', file, '--default-format', 'raw', '--mode', 'wrong2'], { FILEDRIVER_MODE: 'sideways' });
      expect(fixed.stderr).not.toMatch(/default-format/);
      expect(fixed.stderr).toMatch(/--mode wrong2/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it.each([
    [
      'a config file that is not there',
      ['serve', '--config', '/nonexistent/filedriver.yaml'],
      /^filedriver: \/nonexistent\/filedriver\.yaml: cannot read the config file: no such file$/,
    ],
    [
      'an admin command given a config file that is not there',
      ['list', '--config', '/nonexistent/filedriver.yaml'],
      /^filedriver: \/nonexistent\/filedriver\.yaml: cannot read/,
    ],
    ['an unknown flag', ['serve', '--bogus'], /^filedriver: Unknown option '--bogus' \(see filedriver serve --help\)$/],
  ])('exits 2 on %s, saying so in one line', (_what, args, line) => {
    const r = cli(args);
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toMatch(line);
  });
});
