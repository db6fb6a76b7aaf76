/**
 * The Dockerfile, without a Docker engine (none runs here or in CI): checked
 * by dockerfile-utils' validator (the one behind VS Code's Dockerfile support),
 * read for its stages, and held against the code: every tool the driver runs
 * must come from a package the runtime stage installs, or, for qemu, from the
 * private prefix scripts/install-qemu.sh builds in the qemu stage.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { validate } from 'dockerfile-utils';
import { describe, expect, it } from 'vitest';
import { ROOT } from './render.js';

const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  from: string;
  name: string;
  body: Instruction[];
}

/** Instructions with continuations joined and comments dropped, grouped by stage. */
function stages(): { args: Record<string, string>; stages: Stage[] } {
  const lines = text.split('\n').filter((l) => !/^\s*#/.test(l));
  const joined = lines.join('\n').replace(/\\\n/g, ' ');
  const args: Record<string, string> = {};
  const out: Stage[] = [];
  for (const line of joined.split('\n')) {
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
    if (m === null) continue;
    const [, op = '', rest = ''] = m;
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?/i.exec(rest);
      out.push({ from: f?.[1] ?? '', name: f?.[2] ?? '', body: [] });
    } else if (out.length === 0 && op === 'ARG') {
      const [k = '', v = ''] = rest.split('=');
      args[k] = v;
    } else out.at(-1)?.body.push({ op, args: rest.trim() });
  }
  return { args, stages: out };
}

/**
 * Executables the driver runs: first elements of argv-like arrays in src/
 * (the demo lives outside it: it is not run in a cluster) that name a program
 * on this machine, where scripts/install-deps.sh installed everything the tests run.
 */
function toolsInSource(): string[] {
  const files = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
    );
  const names = new Set<string>();
  for (const f of files(join(ROOT, 'src'))) {
    for (const m of readFileSync(f, 'utf8').matchAll(/\[\s*'([a-z][a-z0-9._-]*)'\s*,/g)) names.add(m[1] ?? '');
  }
  const isProgram = (name: string) => {
    try {
      execFileSync('sh', ['-c', 'command -v "$1"', 'sh', name], { stdio: 'ignore' });
      return true;
    } catch {
      return false; // a word such as 'all' or 'remount' in an array of options
    }
  };
  return [...names].filter(isProgram).sort();
}

/** The Debian package that ships a command on this machine (install-deps.sh installed it). */
function packageOf(tool: string): string {
  const out = execFileSync('dpkg', ['-S', `bin/${tool}`], { encoding: 'utf8' });
  const owners = out
    .split('\n')
    .filter((l) => new RegExp(`/s?bin/${tool.replace(/\./g, '\\.')}$`).test(l))
    .map((l) => l.split(':')[0] ?? '');
  if (owners[0] === undefined) throw new Error(`no package ships ${tool}`);
  return owners[0];
}

/** The tools scripts/install-qemu.sh puts in its prefix (its TOOLS array). */
function prefixTools(): string[] {
  const script = readFileSync(join(ROOT, 'scripts/install-qemu.sh'), 'utf8');
  return (/^TOOLS=\(([^)]*)\)$/m.exec(script)?.[1] ?? '').split(/\s+/).filter((w) => w !== '');
}
const QEMU_PREFIX = '/opt/filedriver/qemu';

const essential = (pkg: string) => execFileSync('dpkg-query', ['-W', '-f=${Essential}', pkg], { encoding: 'utf8' }) === 'yes';

describe('Dockerfile', () => {
  const { args, stages: all } = stages();
  const runtime = all.at(-1) as Stage;
  const installed = runtime.body
    .filter((i) => i.op === 'RUN' && i.args.includes('apt-get install'))
    .flatMap((i) => (/apt-get install ([^&]*)/.exec(i.args)?.[1] ?? '').split(/\s+/))
    .filter((w) => w !== '' && !w.startsWith('-'));

  it('passes the Dockerfile validator', () => {
    expect(validate(text).map((d) => `${d.range.start.line + 1}: ${typeof d.message === 'string' ? d.message : d.message.value}`)).toEqual([]);
  });

  it('builds in one stage and runs from a slim Node.js LTS on Debian 12', () => {
    expect(all.map((s) => s.name)).toEqual(['build', 'deps', 'qemu', 'runtime']);
    expect(Number(args['NODE_MAJOR']) % 2).toBe(0); // even majors are the LTS lines
    expect(Number(args['NODE_MAJOR'])).toBeGreaterThanOrEqual(20);
    expect(all.map((s) => s.from)).toEqual([
      'node:${NODE_MAJOR}-bookworm',
      'node:${NODE_MAJOR}-bookworm',
      'node:${NODE_MAJOR}-bookworm',
      'node:${NODE_MAJOR}-bookworm-slim',
    ]);
    const copies = runtime.body.filter((i) => i.op === 'COPY' && i.args.startsWith('--from'));
    expect(copies.map((c) => c.args)).toEqual([
      '--from=deps /src/node_modules ./node_modules',
      '--from=build /src/dist/src ./dist/src',
      `--from=qemu ${QEMU_PREFIX} ${QEMU_PREFIX}`,
    ]);
    expect(all[1]?.body.some((i) => i.args.includes('npm ci --omit=dev'))).toBe(true);
  });

  it('installs a package for every tool the driver runs, but qemu, which comes from the prefix', () => {
    const tools = toolsInSource();
    expect(tools).toEqual(expect.arrayContaining(['qemu-img', 'qemu-storage-daemon', 'losetup', 'mount', 'umount', 'blkid', 'wipefs', 'mkfs.ext4', 'mkfs.xfs', 'resize2fs', 'xfs_growfs']));
    const fromPrefix = prefixTools();
    expect(fromPrefix).toEqual(['qemu-img', 'qemu-storage-daemon']);
    const missing = tools
      .filter((t) => !fromPrefix.includes(t))
      .map((t) => [t, packageOf(t)] as const)
      .filter(([, pkg]) => !installed.includes(pkg) && !essential(pkg));
    expect(missing).toEqual([]);
    expect(installed).toEqual(expect.arrayContaining(['fuse3', 'tini']));
  });

  it('takes qemu from the prefix install-qemu.sh builds, and tells the driver where it is', () => {
    const qemu = all.find((s) => s.name === 'qemu');
    const runs = (qemu?.body ?? []).filter((i) => i.op === 'RUN').map((i) => i.args);
    expect(runs.some((r) => new RegExp(`install-qemu\\.sh ${QEMU_PREFIX}$`).test(r))).toBe(true);
    expect(qemu?.body.some((i) => i.op === 'COPY' && i.args.startsWith('scripts/install-qemu.sh '))).toBe(true);
    expect(runtime.body.some((i) => i.op === 'ENV' && i.args.split(/\s+/).includes(`FILEDRIVER_QEMU=${QEMU_PREFIX}`))).toBe(true);
    // The system's qemu (Debian 12: 7.2) stays out of the image: one qemu, the prefix's.
    expect(installed.filter((pkg) => pkg.startsWith('qemu'))).toEqual([]);
    // The image build runs both tools through the prefix's loader, as the driver does.
    for (const tool of prefixTools()) {
      expect(runtime.body.some((i) => i.op === 'RUN' && i.args.includes(`${QEMU_PREFIX}/bin/$tool`) && i.args.includes(tool))).toBe(true);
    }
  });

  it('installs nothing that neither the driver nor the chart runs', () => {
    const used = new Set(toolsInSource().filter((t) => !prefixTools().includes(t)).map(packageOf));
    // The chart's nfs share pods run sh, mkdir, mount, umount and mountpoint from the image.
    for (const tool of ['mount', 'umount', 'mountpoint']) used.add(packageOf(tool));
    const reasons: Record<string, string> = {
      fuse3: 'fusermount3, which qemu-storage-daemon FUSE exports need',
      tini: 'PID 1, reaping daemonised qemu-storage-daemon processes',
      'ca-certificates': 'TLS roots (kept with the base image conventions)',
    };
    expect(installed.filter((pkg) => !used.has(pkg) && reasons[pkg] === undefined)).toEqual([]);
    expect(installed).not.toEqual(expect.arrayContaining(['kmod']));
    expect(installed).not.toEqual(expect.arrayContaining(['procps']));
  });

  it('runs filedriver under tini as an unprivileged user by default', () => {
    const last = (op: string) => runtime.body.filter((i) => i.op === op).at(-1)?.args;
    expect(JSON.parse(last('ENTRYPOINT') ?? '[]')).toEqual(['/usr/bin/tini', '--', 'filedriver']);
    expect(last('USER')).toMatch(/^[1-9]\d*:[1-9]\d*$/);
    const bin = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin['filedriver'];
    expect(runtime.body.some((i) => i.op === 'RUN' && i.args.includes(`ln -s /opt/filedriver/${bin ?? '?'} /usr/local/bin/filedriver`))).toBe(true);
    expect(runtime.body.some((i) => i.op === 'LABEL' && i.args.includes('org.opencontainers.image.version'))).toBe(true);
  });

  it('sends only what the build copies, and all of it exists', () => {
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignore[0]).toBe('*');
    const allowed = ignore.slice(1).map((l) => l.replace(/^!/, '').replace(/\/$/, ''));
    const sources = all
      .flatMap((s) => s.body)
      .filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    for (const src of sources) {
      expect(allowed).toContain(src.replace(/^\.\//, ''));
      expect(existsSync(join(ROOT, src))).toBe(true);
    }
  });
});
