import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig, ConfigError, envSettings, readConfigFile } from '../../src/config.js';

/** The problems a build throws, one per line as the command prints them. */
function problemsOf(build: () => unknown): string[] {
  try {
    build();
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe('config', () => {
  const base = { endpoint: 'unix:///run/fd/csi.sock', mounts: ['fast=/srv/fast/'] };

  it('applies defaults and freezes', () => {
    const c = buildConfig(base);
    expect(c).toMatchObject({ socketPath: '/run/fd/csi.sock', mode: 'all', driverName: 'filedriver.dev', defaultFormat: 'qcow2' });
    expect(c.mounts).toEqual([{ name: 'fast', path: '/srv/fast' }]);
    expect(c.defaultSizeBytes).toBe(1n << 30n);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('lets later layers win', () => {
    const c = buildConfig(base, envSettings({ FILEDRIVER_DEFAULT_FORMAT: 'raw', FILEDRIVER_MOUNTS: 'a=/a,b=/b' }), { defaultFormat: 'qcow2' });
    expect(c.defaultFormat).toBe('qcow2');
    expect(c.mounts.map((m) => m.name)).toEqual(['a', 'b']);
  });

  it('reports every problem at once', () => {
    try {
      buildConfig({ endpoint: 'x', mounts: ['A=/a', 'b=/b', 'b=/c'], overSubscription: '0', defaultSize: '1Ki', driverName: 'nodots' });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      const problems = (e as ConfigError).problems;
      expect(problems).toHaveLength(6);
      expect(problems.join('\n')).toMatch(/given twice/);
    }
  });

  it.each([
    ['the same path twice', ['a=/srv/x', 'b=/srv/x/']],
    ['one share inside another', ['a=/srv', 'b=/srv/x']],
    ['the outer one second', ['a=/srv/x/y', 'b=/srv/x']],
    ['a path that only normalises to the same', ['a=/srv/x', 'b=/srv/./x']],
  ])('refuses mounts that overlap: %s', (_what, mounts) => {
    expect(() => buildConfig({ ...base, mounts })).toThrow(/overlaps --mount a=/);
  });

  it('accepts sibling paths that share a prefix', () => {
    expect(buildConfig({ ...base, mounts: ['a=/srv/x', 'b=/srv/xy'] }).mounts).toHaveLength(2);
  });
});

describe('config file', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  function file(text: string): string {
    const dir = mkdtempSync(join(tmpdir(), 'fdtest-cfg-'));
    dirs.push(dir);
    const path = join(dir, 'filedriver.yaml');
    writeFileSync(path, text);
    return path;
  }

  it('reads YAML (and so JSON), mounts as a list or a map, flags winning', () => {
    const f = file('endpoint: unix:///run/fd.sock\nmounts:\n  - name: a\n    path: /srv/a\ndefaultFormat: raw\noverSubscription: 2\n');
    expect(buildConfig(readConfigFile(f), { defaultFormat: 'qcow2' })).toMatchObject({
      defaultFormat: 'qcow2',
      overSubscription: 2,
      mounts: [{ name: 'a', path: '/srv/a' }],
    });
    const j = file('{"endpoint": "unix:///run/fd.sock", "mounts": {"b": "/srv/b"}}');
    expect(buildConfig(readConfigFile(j)).mounts).toEqual([{ name: 'b', path: '/srv/b' }]);
  });

  it.each([
    ['a file that is not there', (f: string) => (rmSync(f), f), /^(.*): cannot read the config file: no such file$/],
    [
      'a file that does not parse',
      (f: string) => (writeFileSync(f, 'mounts: [a=/x\n  b: : :\n'), f),
      /^(.*): not YAML or JSON: .* at line \d+, column \d+$/,
    ],
    ['a file that is not a mapping', (f: string) => (writeFileSync(f, '- a\n- b\n'), f), /^(.*): expected a mapping of settings$/],
  ])('refuses %s, naming it', (_what, make, line) => {
    const f = make(file(''));
    const problems = problemsOf(() => readConfigFile(f));
    expect(problems.length).toBeGreaterThan(0);
    for (const p of problems) expect(line.exec(p)?.[1]).toBe(f);
  });

  it('lists every problem, one line each, naming the file and its key for what came from it', () => {
    const f = file(
      [
        'endpoint: unix:///run/fd.sock',
        'mounts:',
        '  - name: a',
        '    path: relative',
        '  - {name: 3}',
        'defaultFormat: qcow3',
        'mode: [a]',
        'bogus: 1',
        '',
      ].join('\n'),
    );
    const problems = problemsOf(() => buildConfig(readConfigFile(f), { logLevel: 'loud' }));
    expect(problems).toEqual([
      `${f}: mounts entry {"name":3} must be NAME=PATH or {name, path}`,
      `${f}: mode must be a single value, not ["a"]`,
      expect.stringMatching(new RegExp(`^${f}: unknown setting bogus; valid: endpoint, `)),
      `${f}: defaultFormat qcow3 must be qcow2 or raw`,
      expect.stringMatching(/^--log-level loud must be one of /),
      `${f}: mounts a=relative: path must be absolute`,
    ]);
  });

  it('names the flag, not the file, for a value a flag or the environment overrides', () => {
    const f = file('endpoint: unix:///run/fd.sock\nmounts: {a: /srv/a}\ndefaultFormat: qcow3\n');
    expect(problemsOf(() => buildConfig(readConfigFile(f), envSettings({ FILEDRIVER_DEFAULT_FORMAT: 'vmdk' })))).toEqual([
      '--default-format vmdk must be qcow2 or raw',
    ]);
  });
});
