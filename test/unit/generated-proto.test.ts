/**
 * src/csi/generated describes what @grpc/proto-loader makes of csi.proto with
 * LOADER_OPTIONS: the generator's flags (npm run gen:proto) must be those
 * options, or the types would lie (e.g. int64 as Long where the server gets
 * strings). `npm run check:proto` (in .ci/run) checks the files match the proto.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { LOADER_OPTIONS, loadCsi, packageRoot } from '../../src/csi/proto.js';

describe('generated proto types', () => {
  it('are generated with the options the server loads csi.proto with', () => {
    const scripts = (JSON.parse(readFileSync(`${packageRoot()}/package.json`, 'utf8')) as { scripts: Record<string, string> }).scripts;
    const flags = new Set((scripts['gen:proto:into'] ?? '').split(/\s+/).filter((a) => a.startsWith('--')));
    const when = (on: boolean, flag: string): string[] => (on ? [flag] : []);
    const expected = [
      ...when(LOADER_OPTIONS.keepCase, '--keepCase'),
      `--longs=${LOADER_OPTIONS.longs.name}`,
      `--enums=${LOADER_OPTIONS.enums.name}`,
      ...when(LOADER_OPTIONS.defaults, '--defaults'),
      ...when(LOADER_OPTIONS.oneofs, '--oneofs'),
    ];
    for (const flag of expected) expect(flags, flag).toContain(flag);
  });

  it('name the services the loaded package has', () => {
    const csi = loadCsi();
    expect(Object.keys(csi.Identity.service).sort()).toEqual(['GetPluginCapabilities', 'GetPluginInfo', 'Probe']);
    expect(Object.keys(csi.Node.service)).toContain('NodeGetVolumeStats');
    expect(Object.keys(csi.Controller.service)).toContain('CreateVolume');
  });
});
