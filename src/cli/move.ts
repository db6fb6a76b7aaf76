/**
 * `filedriver move`: a volume to another mount, keeping its id, through the
 * same Relocator as ControllerModifyVolume (copy flattened, verify, switch,
 * remove the old copy; refused while published).
 */
import { invalid, notFound } from '../domain/errors.js';
import { checkId } from '../domain/ids.js';
import { topologyKey } from '../domain/topology.js';
import { buildContext, COMMON_HELP, COMMON_OPTIONS, note, parseCommand, progress, required, say } from './context.js';

const HELP = `Usage: filedriver move VOLUME --to MOUNT [mount options]

Moves volume VOLUME (its id) to mount MOUNT and keeps its id: a copy with qemu-img convert
(progress shown on a terminal; a linked clone is flattened), verified with qemu-img compare,
then switched in and the old copy removed. Refused while the volume is published to a node
(detach it first: scale its workload down).

A PersistentVolume's node affinity names the mount it was created on: move volumes only
between mounts that the same nodes see.

  --to MOUNT        the mount to move the volume to

${COMMON_HELP}`;

export async function moveCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand('move', {
    args: argv,
    options: { ...COMMON_OPTIONS, to: { type: 'string' } },
    strict: true,
    allowPositionals: true,
  });
  if (values.help === true) {
    say(HELP);
    return 0;
  }
  const [volume, ...extra] = positionals;
  const id = checkId(required('move', volume, 'VOLUME'), 'VOLUME');
  if (extra.length > 0) throw invalid(`move takes one volume, got also ${extra.join(' ')}`);
  const to = required('move', values.to, '--to MOUNT');

  const ctx = buildContext(values);
  if (!ctx.mounts.has(to)) throw invalid(`mount ${to} is not configured (known: ${ctx.mounts.names().join(', ')})`);
  const found = await ctx.store.find(id);
  if (found === undefined) throw notFound(`volume ${id} does not exist on any mount`);
  if (found.mount === to) {
    note(`volume ${id} is already on mount ${to}; nothing to do`);
    return 0;
  }
  const backing = found.record.backing;
  await ctx.relocator.relocate(found, { mount: to }, ctx.log, { progress: progress() });
  note(`moved volume ${id} from mount ${found.mount} to ${to}${backing === null ? '' : ` (flattened: it no longer depends on snapshot ${backing})`}`);
  note(
    `note: its PersistentVolume's node affinity still requires ${topologyKey(ctx.config.driverName, found.mount)}: ` +
      `the nodes it selects must also see mount ${to}`,
  );
  return 0;
}
