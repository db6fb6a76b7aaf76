import { describe, expect, it } from 'vitest';
import { buildConfig, ConfigError, envSettings } from '../../src/config.js';

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
