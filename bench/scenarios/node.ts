/**
 * Item 4: NodeStage+NodePublish and NodeUnpublish+NodeUnstage of a fresh
 * 10 GiB ext4 volume, against the same exposure done by hand with the fewest
 * tools: (qcow2: qemu-storage-daemon FUSE export,) losetup, mkfs.ext4 with the
 * driver's options, mount, bind mount — and back.
 */
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Ctx } from '../lib/context.js';
import { createRequest, GiB, type Driver } from '../lib/driver.js';
import { controllerPublish, stageAndPublish, unpublishAndUnstage } from '../lib/kubelet.js';
import { median } from '../lib/stats.js';
import { alternate, settled, sh, sleep } from '../lib/sh.js';

const VOLUME_BYTES = 10 * GiB;
const FORMATS = ['raw', 'qcow2'] as const;
type Format = (typeof FORMATS)[number];

/** The same mkfs the driver runs (src/system/filesystems.ts). */
const MKFS = ['mkfs.ext4', '-F', '-q', '-m', '0', '-b', '4096', '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard'];

interface Manual {
  stage(): Promise<void>;
  unstage(): Promise<void>;
}

/** The floor: the exposure by hand, with the tools and options the driver uses, and nothing else. */
function manual(dir: string, image: string, format: Format): Manual {
  const staging = join(dir, 'staging');
  const target = join(dir, 'target');
  const exportFile = join(dir, 'export.raw');
  const pidFile = join(dir, 'qsd.pid');
  let device = '';
  let pid = 0;
  return {
    async stage() {
      let loopFile = image;
      const losetup = ['losetup', '--find', '--show'];
      if (format === 'qcow2') {
        await (await open(exportFile, 'a', 0o600)).close();
        await sh([
          'qemu-storage-daemon',
          '--blockdev',
          `driver=file,node-name=file0,filename=${image},aio=io_uring,cache.direct=on,locking=on,discard=unmap`,
          '--blockdev',
          'driver=qcow2,node-name=fmt0,file=file0,discard=unmap',
          '--export',
          `type=fuse,id=export0,node-name=fmt0,mountpoint=${exportFile},writable=on`,
          '--pidfile',
          pidFile,
          '--daemonize',
        ]);
        pid = Number((await readFile(pidFile, 'utf8')).trim());
        loopFile = exportFile; // buffered loop I/O on FUSE, as the driver does
      } else {
        losetup.push('--direct-io=on');
      }
      device = (await sh([...losetup, loopFile])).stdout.trim();
      await sh([...MKFS, device]);
      await mkdir(staging, { recursive: true });
      await sh(['mount', '-t', 'ext4', device, staging]);
      await mkdir(target, { recursive: true });
      await sh(['mount', '--bind', staging, target]);
    },
    async unstage() {
      await sh(['umount', target]);
      await sh(['umount', staging]);
      await sh(['losetup', '--detach', device]);
      if (format === 'qcow2') {
        process.kill(pid, 'SIGTERM');
        while (
          await readFile(`/proc/${pid}/stat`, 'utf8').then(
            (s) => !/\) Z /.test(s),
            () => false,
          )
        )
          await sleep(5);
        // qemu-storage-daemon 7.2 may leave its FUSE mount behind on SIGTERM (NODE-FACTS).
        const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
        if (mountinfo.split('\n').some((l) => l.split(' ')[4] === exportFile)) {
          await sh(['umount', exportFile]).catch(() => sh(['umount', '-l', exportFile]));
        }
      }
    },
  };
}

export async function stageUnstage(ctx: Ctx, d: Driver): Promise<void> {
  const runs = ctx.quick ? 2 : 5;
  const xfs = ctx.shares['xfs'] ?? '';
  const floorRoot = join(ctx.base, 'manual');
  const t = {
    raw: { stage: [] as number[], unstage: [] as number[], fStage: [] as number[], fUnstage: [] as number[] },
    qcow2: { stage: [] as number[], unstage: [] as number[], fStage: [] as number[], fUnstage: [] as number[] },
  };
  for (let r = 0; r < runs; r++) {
    for (const format of FORMATS) {
      const driverSide = async () => {
        const id = `bench-stage-${format}-${r}`;
        await d.client.controller('CreateVolume', createRequest(id, VOLUME_BYTES, { format, mounts: 'xfs' }));
        const context = await controllerPublish(d, id);
        t[format].stage.push(await settled(() => stageAndPublish(d, ctx.kubelet, id, context)));
        t[format].unstage.push(await settled(() => unpublishAndUnstage(d, ctx.kubelet, id)));
        await d.client.controller('ControllerUnpublishVolume', { volume_id: id, node_id: 'bench-node' });
        await d.client.controller('DeleteVolume', { volume_id: id });
      };
      const floorSide = async () => {
        const dir = join(floorRoot, `${format}-${r}`);
        await mkdir(dir, { recursive: true });
        const image = join(xfs, `bench-manual-${format}-${r}.${format}`);
        await sh(['qemu-img', 'create', '-q', '-f', format, image, String(VOLUME_BYTES)]);
        const m = manual(dir, image, format);
        t[format].fStage.push(await settled(() => m.stage()));
        t[format].fUnstage.push(await settled(() => m.unstage()));
        await rm(image);
        await rm(dir, { recursive: true, force: true });
      };
      await alternate(r, floorSide, driverSide);
    }
    ctx.log(
      `  stage/unstage run ${r + 1}/${runs}: raw ${t.raw.stage.at(-1)?.toFixed(0)} ms (by hand ${t.raw.fStage.at(-1)?.toFixed(0)}), qcow2 ${t.qcow2.stage.at(-1)?.toFixed(0)} ms (by hand ${t.qcow2.fStage.at(-1)?.toFixed(0)})`,
    );
  }
  for (const format of FORMATS) {
    const x = t[format];
    ctx.results.add({
      item: 4,
      key: `stage.${format}`,
      label: `NodeStage+NodePublish, fresh 10 GiB ${format}, ext4`,
      unit: 'ms',
      value: median(x.stage),
      floor: median(x.fStage),
      floorLabel: format === 'qcow2' ? 'qsd export + losetup + mkfs + mount + bind, by hand' : 'losetup + mkfs + mount + bind, by hand',
      runs,
      samples: runs,
      detail: { driver: x.stage, floor: x.fStage },
    });
    ctx.results.add({
      item: 4,
      key: `unstage.${format}`,
      label: `NodeUnpublish+NodeUnstage, ${format}`,
      unit: 'ms',
      value: median(x.unstage),
      floor: median(x.fUnstage),
      floorLabel: format === 'qcow2' ? 'umount ×2 + losetup -d + SIGTERM qsd + umount export, by hand' : 'umount ×2 + losetup -d, by hand',
      runs,
      samples: runs,
      detail: { driver: x.unstage, floor: x.fUnstage },
    });
  }
}
