/**
 * `filedriver export`: a flattened copy of a volume's image at a path the admin
 * names, written beside it as PATH.partial and renamed when whole and
 * verified. An existing file is never overwritten.
 */
import { link, lstat, realpath, rename, rm, unlink } from 'node:fs/promises';
import { dirname, isAbsolute, join, sep } from 'node:path';
import { ConfigError } from '../config.js';
import { alreadyExists, internal, invalid, notFound, precondition } from '../domain/errors.js';
import { checkId } from '../domain/ids.js';
import { isFormat, type Format } from '../domain/parameters.js';
import { TREE } from '../storage/layout.js';
import { buildContext, COMMON_HELP, COMMON_OPTIONS, humanBytes, note, parseCommand, progress, required, say, type Context } from './context.js';

const HELP = `Usage: filedriver export VOLUME --to PATH [--format qcow2|raw] [mount options]

Writes a standalone copy of volume VOLUME (its id) to the absolute PATH with qemu-img convert
(progress shown on a terminal; a linked clone's backing chain is flattened), verifies it with
qemu-img compare, and only then gives it its name. The copy is written as PATH.partial first;
an existing PATH (or PATH.partial) is never overwritten. Refused while the volume is published
to a node, as its data could change under the copy.

  --to PATH         absolute path of the new image file (its directory must exist)
  --format F        qcow2 or raw (default: the volume's format)

${COMMON_HELP}`;

export async function exportCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand('export', {
    args: argv,
    options: { ...COMMON_OPTIONS, to: { type: 'string' }, format: { type: 'string' } },
    strict: true,
    allowPositionals: true,
  });
  if (values.help === true) {
    say(HELP);
    return 0;
  }
  const [volume, ...extra] = positionals;
  const id = checkId(required('export', volume, 'VOLUME'), 'VOLUME');
  if (extra.length > 0) throw invalid(`export takes one volume, got also ${extra.join(' ')}`);
  const path = required('export', values.to, '--to PATH');
  if (!isAbsolute(path)) throw new ConfigError([`export: --to ${path} must be an absolute path`]);
  if (values.format !== undefined && !isFormat(values.format)) throw new ConfigError([`export: --format ${values.format} must be qcow2 or raw`]);

  const ctx = buildContext(values);
  const found = await ctx.store.find(id);
  if (found === undefined) throw notFound(`volume ${id} does not exist on any mount`);
  const r = found.record;
  if (r.publications.length > 0) {
    throw precondition(`volume ${id} is published to ${r.publications.map((p) => p.node).join(', ')}; export it while it is detached`);
  }
  const format: Format = values.format ?? r.format;
  await checkTarget(ctx, path);
  const partial = `${path}.partial`;
  if (await exists(partial)) throw alreadyExists(`${partial} exists (an interrupted export?); remove it first`);

  const source = found.layout.imagePath(id, r.format);
  try {
    await ctx.qemuImg.convert(source, r.format, partial, format, { progress: progress() });
    if (!(await ctx.qemuImg.same(source, partial, { a: r.format, b: format })))
      throw internal(`the copy ${partial} differs from volume ${id}'s image; removed it`);
    await nameWithoutClobbering(partial, path);
  } catch (e) {
    await rm(partial, { force: true });
    throw e;
  }
  note(`exported volume ${id} (${r.format}, ${humanBytes(BigInt(r.sizeBytes))}) from mount ${found.mount} to ${path} as ${format}`);
  return 0;
}

/** The target must be new, in an existing directory, and not in any mount's driver tree. */
async function checkTarget(ctx: Context, path: string): Promise<void> {
  if (await exists(path)) throw alreadyExists(`${path} exists; export never overwrites a file`);
  const dir = await realpath(dirname(path)).catch(() => undefined);
  if (dir === undefined) throw notFound(`directory ${dirname(path)} does not exist`);
  for (const m of ctx.config.mounts) {
    const tree = await realpath(join(m.path, TREE)).catch(() => undefined);
    if (tree !== undefined && (dir === tree || dir.startsWith(tree + sep))) {
      throw invalid(`${path} is inside filedriver's own tree on mount ${m.name}; export outside ${tree}`);
    }
  }
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

/** link() fails on an existing name where rename() would replace it; rename only where links are unsupported. */
async function nameWithoutClobbering(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw alreadyExists(`${to} appeared during the export; export never overwrites a file`);
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw e;
    if (await exists(to)) throw alreadyExists(`${to} appeared during the export; export never overwrites a file`);
    await rename(from, to);
    return;
  }
  await unlink(from);
}
