/**
 * Which qemu the driver runs. A private install (scripts/install-qemu.sh: the
 * Debian 13 packages unpacked into a prefix, run through the prefix's own
 * loader so its glibc is used) is described by `filedriver-qemu.json`; without
 * one, the system's qemu-img and qemu-storage-daemon on PATH are used.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** What scripts/install-qemu.sh writes last, so a half-done install is never used. */
export interface QemuManifest {
  version: string;
  loader: string;
  libraryPath: string[];
  moduleDir: string;
  tools: Record<QemuTool, { link: string; binary: string }>;
}

export type QemuTool = 'qemu-img' | 'qemu-storage-daemon';
export const QEMU_TOOLS: readonly QemuTool[] = ['qemu-img', 'qemu-storage-daemon'];
export const MANIFEST = 'filedriver-qemu.json';
/** Where the container image and scripts/install-deps.sh put it. */
export const DEFAULT_PREFIX = '/opt/filedriver/qemu';

export interface QemuInstall {
  /** 'system' or the prefix directory. */
  source: string;
  manifest: QemuManifest | undefined;
  /** argv for `tool args…`: through the prefix's loader, or the tool on PATH. */
  argv(tool: QemuTool, args: readonly string[]): string[];
  /** Environment the tools need (the prefix's module directory). */
  env: Record<string, string>;
}

export const systemQemu: QemuInstall = { source: 'system', manifest: undefined, argv: (tool, args) => [tool, ...args], env: {} };

/**
 * `setting` is a prefix directory, 'system', or unset: the default prefix when
 * it holds an install, else the system's. A named prefix without a manifest
 * is an error, not a silent fallback to a slower qemu.
 */
export function findQemu(setting: string | undefined): QemuInstall {
  if (setting === 'system') return systemQemu;
  const prefix = setting ?? DEFAULT_PREFIX;
  const file = join(prefix, MANIFEST);
  if (!existsSync(file)) {
    if (setting === undefined) return systemQemu;
    throw new Error(`--qemu ${prefix}: no ${MANIFEST} there (install with scripts/install-qemu.sh ${prefix}, or say --qemu system)`);
  }
  const manifest = JSON.parse(readFileSync(file, 'utf8')) as QemuManifest;
  const libraryPath = manifest.libraryPath.join(':');
  return {
    source: prefix,
    manifest,
    // The link is named after the tool and points at the loader: the process is then known by the tool's name.
    argv: (tool, args) => [manifest.tools[tool].link, '--library-path', libraryPath, '--argv0', tool, manifest.tools[tool].binary, ...args],
    env: { QEMU_MODULE_DIR: manifest.moduleDir },
  };
}

/** The tool a command line runs, through a prefix's loader or not. */
export function toolOf(argv: readonly string[]): string | undefined {
  const i = argv.indexOf('--argv0');
  return i >= 0 ? argv[i + 1] : argv[0]?.split('/').pop();
}
