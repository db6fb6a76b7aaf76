/** `filedriver doctor`: is everything the driver needs present, and is every mount consistent? */
import { invalid } from '../domain/errors.js';
import {
  checkQemu,
  checkChains,
  checkDuplicates,
  checkHidden,
  checkLeftovers,
  checkMounts,
  checkPending,
  checkTools,
  type Finding,
} from './checks.js';
import { buildContext, COMMON_HELP, COMMON_OPTIONS, parseCommand, say } from './context.js';
import { takeInventory } from './inventory.js';
import { checkNodes } from './nodes.js';

const HELP = `Usage: filedriver doctor [--fix] [--json] [mount options]

Checks that the tools run (qemu-img, qemu-storage-daemon, mkfs.ext4, mkfs.xfs, losetup,
blkid), names the qemu in use and this host's data plane (its version, and how qcow2 volumes
reach their pods), that each mount is usable, and each mount's contents: leftovers of interrupted work
in filedriver/tmp/, volume or snapshot ids present on several mounts, broken backing chains
(a backing snapshot missing, a dependent missing from its base's refs/, qemu-img check or
qemu-img info --backing-chain failing), hidden snapshots nothing depends on any more, and
work handed to a node (snapshot layer switches, online merges, live moves) still waiting after
an hour or failed, and node registry records whose heartbeat stopped.

  --fix             also repair what is safe while the driver runs: remove the leftovers of
                    dead work (this host's dead processes', or older than a day), hidden
                    snapshots without dependents (untouched for an hour), and records of
                    nodes silent for a day. Everything else is reported only.
  --json            machine-readable findings

Exit code 0 when no problem remains, 1 otherwise.

${COMMON_HELP}`;

export async function doctorCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand('doctor', {
    args: argv,
    options: { ...COMMON_OPTIONS, fix: { type: 'boolean' }, json: { type: 'boolean' } },
    strict: true,
    allowPositionals: true,
  });
  if (values.help === true) {
    say(HELP);
    return 0;
  }
  if (positionals.length > 0) throw invalid(`doctor takes no arguments, got ${positionals.join(' ')}`);
  const fix = values.fix === true;
  const ctx = buildContext(values);
  const inventory = await takeInventory(ctx);

  const findings: Finding[] = [...(await checkTools(ctx)), ...(await checkQemu(ctx)), ...checkMounts(inventory), ...checkDuplicates(inventory)];
  for (const m of inventory) {
    if (!m.health.mounted) continue;
    findings.push(
      ...(await checkLeftovers(m, fix)),
      ...(await checkChains(ctx, m)),
      ...(await checkHidden(ctx, m, fix)),
      ...checkPending(m),
      ...(await checkNodes(m, fix)),
    );
  }
  const problems = findings.filter((f) => f.status === 'problem').length;
  const fixed = findings.filter((f) => f.status === 'fixed').length;
  if (values.json === true) {
    say(JSON.stringify({ healthy: problems === 0, problems, fixed, findings }, null, 2));
  } else {
    const label = { ok: 'ok', note: 'note', fixed: 'fixed', problem: 'PROBLEM' } as const;
    for (const f of findings) say(`${label[f.status].padEnd(8)} ${f.check.padEnd(9)} ${f.subject}: ${f.message}`);
    const summary = problems === 0 ? 'healthy' : `${problems} problem(s)`;
    say(`${summary}${fixed > 0 ? `; fixed ${fixed}` : ''}${problems > 0 && !fix ? '; doctor --fix repairs what is safe' : ''}`);
  }
  return problems === 0 ? 0 : 1;
}
