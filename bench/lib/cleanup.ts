/**
 * Everything the bench creates lives under one base directory (/tmp/fdbench-*):
 * scratch filesystems, the driver's socket, kubelet dir and qemu exports, the
 * floors' loop devices and daemons. Cleanup runs the registered undo steps in
 * reverse, then sweeps whatever still refers to the base directory — mounts,
 * loop devices, processes — so a failure at any point leaves nothing behind.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sh, sleep } from './sh.js';

export const BASE_PREFIX = 'fdbench-';

export class Cleanup {
  private readonly steps: { what: string; fn: () => Promise<void> }[] = [];

  /** Registers an undo step; the returned function runs it now (and unregisters it). */
  add(what: string, fn: () => Promise<void>): () => Promise<void> {
    const step = { what, fn };
    this.steps.push(step);
    return async () => {
      const i = this.steps.indexOf(step);
      if (i >= 0) this.steps.splice(i, 1);
      await fn();
    };
  }

  async runAll(log: (line: string) => void): Promise<void> {
    while (this.steps.length > 0) {
      const step = this.steps.pop();
      if (step === undefined) break;
      try {
        await step.fn();
      } catch (e) {
        log(`cleanup: ${step.what} failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }
}

interface MountLine {
  mountPoint: string;
  fsType: string;
}

const unescapeMount = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

function mountsUnder(base: string): MountLine[] {
  const out: MountLine[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const mountPoint = unescapeMount(line.slice(0, sep).split(' ')[4] ?? '');
    const fsType = line.slice(sep + 3).split(' ')[0] ?? '';
    if (mountPoint.startsWith(`${base}/`)) out.push({ mountPoint, fsType });
  }
  // Deepest first: bind mounts and staging mounts before what they sit on.
  return out.sort((a, b) => b.mountPoint.length - a.mountPoint.length);
}

async function loopsUnder(base: string): Promise<{ device: string; file: string }[]> {
  const { stdout } = await sh(['losetup', '--list', '--json', '--output', 'NAME,BACK-FILE']).catch(() => ({ stdout: '' }));
  if (stdout.trim() === '') return [];
  const data = JSON.parse(stdout) as { loopdevices?: { name?: string; 'back-file'?: string | null }[] };
  return (data.loopdevices ?? [])
    .map((l) => ({ device: l.name ?? '', file: (l['back-file'] ?? '').replace(/ \(deleted\)$/, '') }))
    .filter((l) => l.device !== '' && l.file.startsWith(`${base}/`));
}

/** Processes (other than this one) whose command line mentions `base`. */
function processesUnder(base: string): { pid: number; argv0: string }[] {
  const found: { pid: number; argv0: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.includes(base))) found.push({ pid, argv0: argv[0] ?? '' });
    } catch {
      // gone
    }
  }
  return found;
}

async function umount(path: string): Promise<void> {
  await sh(['umount', path]).catch(() => sh(['umount', '-l', path]).catch(() => undefined));
}

async function killAll(base: string, match: (argv0: string) => boolean): Promise<void> {
  const targets = processesUnder(base).filter((p) => match(p.argv0));
  for (const p of targets) {
    try {
      process.kill(p.pid, 'SIGTERM');
    } catch {
      // gone
    }
  }
  for (let i = 0; i < 50 && processesUnder(base).some((p) => match(p.argv0)); i++) await sleep(100);
  for (const p of processesUnder(base).filter((q) => match(q.argv0))) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/**
 * Frees what holds the scratch shares: drivers, pod and staging mounts, loop devices on volume
 * images and export files, qemu exports and their FUSE mounts. Run before the shares are unmounted:
 * a share lazily unmounted under a live loop device stays busy, and its files' paths no longer lie
 * under `base`, so nothing could find that loop device afterwards.
 */
export async function releaseHolders(base: string, log: (line: string) => void): Promise<void> {
  if (!existsSync(base)) return;
  const scratchImages = join(base, 'img');
  // The scratch shares (and the tmpfs holding the RAM share's image) are not holders.
  const isShare = (m: MountLine): boolean =>
    (/^\/mnt\/[^/]+$/.test(m.mountPoint.slice(base.length)) && !m.fsType.startsWith('fuse')) ||
    (m.fsType === 'tmpfs' && m.mountPoint.startsWith(`${scratchImages}/`));
  // Drivers first (they stop exports they know of on unstage, but not on exit), then tools.
  await killAll(base, (a) => !a.endsWith('qemu-storage-daemon'));
  for (let round = 0; round < 3; round++) {
    const mounts = mountsUnder(base).filter((m) => !isShare(m));
    const loops = (await loopsUnder(base)).filter((l) => !l.file.startsWith(`${scratchImages}/`));
    const daemons = processesUnder(base);
    if (mounts.length === 0 && loops.length === 0 && daemons.length === 0) return;
    log(`releasing round ${round}: ${mounts.length} mounts, ${loops.length} loop devices, ${daemons.length} processes`);
    // 1. pod and staging mounts (everything but the shares and FUSE exports)
    for (const m of mounts) if (!m.fsType.startsWith('fuse')) await umount(m.mountPoint);
    // 2. loop devices on images inside the shares and on export files
    for (const l of loops) await sh(['losetup', '--detach', l.device]).catch(() => undefined);
    // 3. qemu exports, then their (possibly stale) FUSE mounts
    await killAll(base, () => true);
    for (const m of mountsUnder(base).filter((x) => x.fsType.startsWith('fuse'))) await umount(m.mountPoint);
  }
}

/** Removes every trace of a bench run under `base`, whatever state it was left in. */
export async function sweep(base: string, log: (line: string) => void): Promise<void> {
  if (!existsSync(base)) return;
  await releaseHolders(base, log);
  // The scratch shares, then what holds their images, and their loop devices should autoclear have failed.
  for (let round = 0; round < 3 && mountsUnder(base).length > 0; round++) {
    const rest = mountsUnder(base);
    for (const m of [...rest.filter((x) => x.fsType !== 'tmpfs'), ...rest.filter((x) => x.fsType === 'tmpfs')]) await umount(m.mountPoint);
  }
  for (const l of await loopsUnder(base)) await sh(['losetup', '--detach', l.device]).catch(() => undefined);
  const left = [...mountsUnder(base).map((m) => `mount ${m.mountPoint}`), ...(await loopsUnder(base)).map((l) => `loop ${l.device} ${l.file}`)];
  if (left.length > 0) {
    log(`sweep: could not remove: ${left.join(', ')}; leaving ${base} in place`);
    return;
  }
  await rm(base, { recursive: true, force: true });
}

/** Bases of earlier bench runs whose process is gone (killed with SIGKILL, machine reset…). */
export async function staleBases(): Promise<string[]> {
  const stale: string[] = [];
  for (const entry of readdirSync(tmpdir())) {
    if (!entry.startsWith(BASE_PREFIX)) continue;
    const base = join(tmpdir(), entry);
    const pid = Number((await readFile(join(base, 'bench.pid'), 'utf8').catch(() => '0')).trim());
    let alive = false;
    if (pid > 0) {
      try {
        process.kill(pid, 0);
        alive = true;
      } catch {
        alive = false;
      }
    }
    if (!alive) stale.push(base);
  }
  return stale;
}
