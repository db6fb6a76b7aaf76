/**
 * What the npm package and the container image carry: the driver and nothing
 * else. The image copies dist/src, built from src/ alone (Dockerfile), and the
 * package lists dist/src and proto (package.json `files`); so the demo and its
 * CSI client live outside src/, and a runtime dependency is one src/ imports.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

describe('the shipped package', () => {
  it('depends only on packages the driver imports', () => {
    const imported = new Set<string>();
    for (const file of sources(join(ROOT, 'src'))) {
      for (const m of readFileSync(file, 'utf8').matchAll(/\bfrom '((?:@[^/']+\/)?[^/'.][^/']*)/g)) imported.add(m[1] ?? '');
    }
    expect(Object.keys(pkg.dependencies).filter((d) => !imported.has(d))).toEqual([]);
  });

  it('holds the driver, its proto and README, and neither the demo nor the test client', () => {
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const files = (JSON.parse(out) as { files: { path: string }[] }[])[0]?.files.map((f) => f.path) ?? [];
    expect(files.filter((f) => !/^(dist\/src\/|proto\/)/.test(f)).sort()).toEqual(['README.md', 'package.json']);
    expect(files.filter((f) => /demo|client/.test(f))).toEqual([]);
    // After a build (npm test builds first), the binary is in it.
    if (existsSync(join(ROOT, 'dist/src/main.js'))) expect(files).toContain('dist/src/main.js');
  });

  it('keeps the demo and the CSI client out of src/, which the image is built from', () => {
    expect(existsSync(join(ROOT, 'src/demo'))).toBe(false);
    expect(sources(join(ROOT, 'src')).filter((f) => /client/.test(f))).toEqual([]);
  });
});
