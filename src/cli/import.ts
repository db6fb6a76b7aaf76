/**
 * `filedriver import`: adopts an image the admin placed on a mount as a volume
 * (built whole in the temp area like any other), then prints a
 * PersistentVolume for it. --copy never touches the original; --move takes the
 * file itself into the driver tree.
 */
import { link, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { ConfigError } from '../config.js';
import { alreadyExists, exhausted, invalid, precondition } from '../domain/errors.js';
import { idFromName } from '../domain/ids.js';
import { isFormat } from '../domain/parameters.js';
import { Layout } from '../storage/layout.js';
import { SCHEMA, type VolumeRecord } from '../storage/records.js';
import { buildContext, COMMON_HELP, COMMON_OPTIONS, humanBytes, note, parseCommand, progress, required, say, type Context } from './context.js';
import { persistentVolumeYaml } from './pv.js';
import { vetImage, type Vetted } from './vet.js';

const HELP = `Usage: filedriver import --mount NAME --path REL [--name N] [--format auto|qcow2|raw] [--copy|--move] [mount options]

Adopts an existing qcow2 or raw image on mount NAME (REL is relative to the mount) as a
filedriver volume, and prints a PersistentVolume for it on stdout (kubectl apply -f -).

  --mount NAME      the mount the image is on; the volume is made there
  --path REL        the image, relative to the mount; must resolve (symlinks too) inside the
                    mount and outside its filedriver/ tree
  --name N          the volume's name; its id is derived from it as for CreateVolume
                    (default: the file name without its extension)
  --format F        auto (default: as qemu-img info detects it), qcow2, or raw (take the bytes
                    as a raw disk whatever they look like)
  --copy            (default) leave the original alone: a reflink copy where the filesystem
                    allows, else qemu-img convert, which also flattens a backing chain
  --move            move the file itself into the driver tree (no copy; the original path is
                    gone afterwards); only for an image without a backing chain

Refused: paths outside the mount or inside filedriver/, images whose backing chain leaves the
mount, images in use (qemu image lock, loop device), and a name whose volume exists.

${COMMON_HELP}`;

export async function importCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand('import', {
    args: argv,
    options: {
      ...COMMON_OPTIONS,
      mount: { type: 'string' },
      path: { type: 'string' },
      name: { type: 'string' },
      format: { type: 'string' },
      copy: { type: 'boolean' },
      move: { type: 'boolean' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help === true) {
    say(HELP);
    return 0;
  }
  const mount = required('import', values.mount, '--mount NAME');
  const relative = required('import', values.path, '--path REL');
  const formatText = values.format ?? 'auto';
  if (formatText !== 'auto' && !isFormat(formatText)) throw new ConfigError([`import: --format ${formatText} must be auto, qcow2 or raw`]);
  if (values.name === '') throw new ConfigError(['import: --name must not be empty']);
  if (values.copy === true && values.move === true) throw new ConfigError(['import: --copy and --move exclude each other']);
  const move = values.move === true;

  const ctx = buildContext(values);
  if (!ctx.mounts.has(mount)) throw invalid(`mount ${mount} is not configured (known: ${ctx.mounts.names().join(', ')})`);
  const layout = await ctx.mounts.requireUsable(mount);
  const name = values.name ?? defaultName(relative);
  const id = idFromName(name);
  const existing = await ctx.store.find(id);
  if (existing !== undefined) throw alreadyExists(`volume ${id} already exists on mount ${existing.mount}; choose another --name`);
  const vetted = await vetImage(ctx, layout, relative, formatText === 'auto' ? undefined : formatText);
  if (vetted.probed !== vetted.format)
    note(`note: qemu-img sees a ${vetted.probed} image; importing its bytes as a ${vetted.format} disk, as --format says`);
  if (move && vetted.backing.length > 0) {
    throw precondition(
      `${vetted.image} is backed by ${vetted.backing.join(' ← ')}; --move would leave the volume depending on files outside filedriver's tree: use --copy, which flattens the chain`,
    );
  }
  if (move && vetted.links > 1)
    throw precondition(`${vetted.image} has ${vetted.links} hard links; --move would leave other names on the volume's data: use --copy`);

  const record: VolumeRecord = {
    schema: SCHEMA,
    id,
    name,
    format: vetted.format,
    sizeBytes: vetted.sizeBytes.toString(),
    createdAt: new Date().toISOString(),
    parameters: { format: vetted.format },
    contentSource: null,
    backing: null,
    pvc: null,
    publications: [],
  };
  let how = '';
  const made = await ctx.store.create(layout, record, async (dir) => {
    const target = join(dir, Layout.imageName(vetted.format));
    how = move ? await linkInto(vetted.image, target) : await copyInto(ctx, mount, vetted, target);
  });
  if (!made) throw alreadyExists(`volume ${id} appeared on mount ${mount} while being imported; nothing was changed`);
  // The volume holds the data now; only then does the admin's name for it go.
  if (move) await unlink(vetted.image);

  note(`imported ${vetted.image} as volume ${id} on mount ${mount}: ${vetted.format}, ${humanBytes(vetted.sizeBytes)}, by ${how}`);
  say(
    persistentVolumeYaml({
      driverName: ctx.config.driverName,
      volumeId: id,
      mount,
      format: vetted.format,
      sizeBytes: vetted.sizeBytes,
      origin: `${mount}/${relative}`,
    }),
  );
  return 0;
}

/** `disk-01.qcow2` → `disk-01`; the id is derived from the name as for CreateVolume. */
function defaultName(relative: string): string {
  const stem = basename(relative).replace(/\.(qcow2|raw|img)$/i, '');
  return stem === '' ? 'imported' : stem;
}

/** A hard link, so a failure anywhere before the switch leaves the original where it was. */
async function linkInto(image: string, target: string): Promise<string> {
  try {
    await link(image, target);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EXDEV' || code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP') {
      throw invalid(`${image} cannot be moved into the driver tree (${code}: another filesystem, or no hard links there); use --copy`);
    }
    throw e;
  }
  return 'move';
}

async function copyInto(ctx: Context, mount: string, vetted: Vetted, target: string): Promise<string> {
  // A reflink keeps the image's bytes as they are, so only a standalone image may be reflinked.
  if (vetted.backing.length === 0 && (await ctx.files.reflink(vetted.image, target))) return 'reflink';
  const needed = await ctx.qemuImg.measure(vetted.image, vetted.format, vetted.format);
  const free = (await ctx.mounts.health(mount)).freeBytes;
  if (needed > free) {
    throw exhausted(`mount ${mount} has ${humanBytes(free)} free; a copy of ${vetted.image} needs ${humanBytes(needed)}`);
  }
  await ctx.qemuImg.convert(vetted.image, vetted.format, target, vetted.format, { progress: progress() });
  return vetted.backing.length > 0 ? 'copy (qemu-img convert, backing chain flattened)' : 'copy (qemu-img convert)';
}
