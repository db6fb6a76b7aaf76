/**
 * Node path rules (filedriver's, beyond the CSI spec's letter; issue 16): a
 * node path reaches its place below the kubelet directory through no symlink,
 * unpublish and unstage touch only what the driver published or staged there,
 * a read-only publish stays read-only, and mount flags that change the kind of
 * mount are refused before the volume is touched. Decoys lie outside the
 * kubelet directory, as /etc does, and must stay exactly as they were.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blockCap, codeName, mountCap, type Env } from './harness.js';
import { isMountPoint, mountOptions, nodeSteps } from './node-steps.js';

export function nodePathRules(env: Env): void {
  const { needNode, provision, stageWith } = nodeSteps(env);

  describe('Node: paths', () => {
    let decoy = '';
    let link = '';
    const look = () => JSON.stringify([readdirSync(decoy).sort(), readFileSync(join(decoy, 'passwd'), 'utf8')]);
    beforeAll(() => {
      decoy = mkdtempSync(join(tmpdir(), 'fdtest-decoy-'));
      writeFileSync(join(decoy, 'passwd'), 'root:x:0:0\n');
      mkdirSync(join(decoy, 'ssl'));
    });
    afterAll(() => {
      if (decoy !== '') rmSync(decoy, { recursive: true, force: true });
    });
    // A pod directory that is a link out of the kubelet directory, made once the driver's kubelet dir is known.
    const planted = () => {
      if (link === '') {
        link = join(env.kubeletDir, 'pods', `${env.run}-link`);
        mkdirSync(join(env.kubeletDir, 'pods'), { recursive: true });
        symlinkSync(decoy, link);
      }
      return link;
    };

    it('refuses with INVALID_ARGUMENT every node call whose path leads out through a symlink, and touches nothing there', async ({ skip }) => {
      needNode(skip);
      const before = look();
      const out = planted();
      const fs = await provision('path-fs', 'raw', mountCap());
      const blk = await provision('path-blk', 'raw', blockCap());
      // Straight calls, not env.stage/publish: the sweep would retry these paths, which are refused for good.
      const stage = {
        volume_id: fs.id,
        staging_target_path: join(out, 'globalmount'),
        volume_capability: mountCap(),
        publish_context: fs.publish_context,
      };
      expect(await codeName(env.node('NodeStageVolume', stage))).toBe('INVALID_ARGUMENT');
      await stageWith(fs, mountCap());
      await stageWith(blk, blockCap());
      const publish = (v: { id: string }, cap: object, target: string) =>
        env.node('NodePublishVolume', {
          volume_id: v.id,
          staging_target_path: env.paths(v.id).staging,
          target_path: target,
          volume_capability: cap,
          readonly: false,
        });
      expect(await codeName(publish(fs, mountCap(), join(out, 'volumes', 'mount')))).toBe('INVALID_ARGUMENT');
      expect(await codeName(publish(fs, mountCap(), join(out, 'ssl')))).toBe('INVALID_ARGUMENT');
      expect(await codeName(publish(blk, blockCap(), join(out, 'dev')))).toBe('INVALID_ARGUMENT');
      expect(await codeName(publish(blk, blockCap(), join(out, 'passwd')))).toBe('INVALID_ARGUMENT');
      for (const what of ['passwd', 'ssl']) {
        expect(await codeName(env.unpublish(fs.id, join(out, what)))).toBe('INVALID_ARGUMENT');
        expect(await codeName(env.unstage(fs.id, join(out, what)))).toBe('INVALID_ARGUMENT');
        expect(await codeName(env.node('NodeGetVolumeStats', { volume_id: fs.id, volume_path: join(out, what) }))).toBe('INVALID_ARGUMENT');
      }
      // The link is refused before the path is looked for: a missing path beyond it is not NOT_FOUND.
      const beyond = { volume_id: fs.id, volume_path: join(out, 'no-such-dir'), capacity_range: { required_bytes: '1' } };
      expect(await codeName(env.node('NodeGetVolumeStats', beyond))).toBe('INVALID_ARGUMENT');
      if (env.nodeCaps.has('EXPAND_VOLUME')) expect(await codeName(env.node('NodeExpandVolume', beyond))).toBe('INVALID_ARGUMENT');
      expect(look()).toBe(before);
      await env.unstage(fs.id);
      await env.unstage(blk.id);
    });

    it('answers OK to an unpublish or unstage of a path it never used, and leaves what is there', async ({ skip }) => {
      needNode(skip);
      const pod = join(env.kubeletDir, 'pods', `${env.run}-p9`);
      mkdirSync(join(pod, 'data'), { recursive: true });
      writeFileSync(join(pod, 'important.txt'), 'keep');
      expect(await codeName(env.unpublish(env.name('whatever'), join(pod, 'important.txt')))).toBe('OK');
      expect(await codeName(env.unpublish(env.name('whatever'), join(pod, 'data')))).toBe('OK');
      expect(await codeName(env.unstage(env.name('whatever'), join(pod, 'data')))).toBe('OK');
      expect(readFileSync(join(pod, 'important.txt'), 'utf8')).toBe('keep');
      expect(existsSync(join(pod, 'data'))).toBe(true);
    });

    it('refuses a target_path that is the staging_target_path with INVALID_ARGUMENT', async ({ skip }) => {
      needNode(skip);
      const v = await provision('path-same', 'raw', mountCap());
      await stageWith(v, mountCap());
      const { staging } = env.paths(v.id);
      const req = { volume_id: v.id, staging_target_path: staging, target_path: staging, volume_capability: mountCap(), readonly: false };
      expect(await codeName(env.node('NodePublishVolume', req))).toBe('INVALID_ARGUMENT');
      expect(await codeName(env.unstage(v.id))).toBe('OK');
      expect(isMountPoint(staging)).toBe(false);
    });

    it('refuses rw on a read-only publish with INVALID_ARGUMENT, and a read-only publish cannot be written', async ({ skip }) => {
      needNode(skip);
      const v = await provision('path-ro', 'raw', mountCap());
      await stageWith(v, mountCap());
      const { target } = env.paths(v.id);
      expect(await codeName(env.publish(v.id, mountCap('SINGLE_NODE_WRITER', 'ext4', ['rw']), target, { readonly: true }))).toBe('INVALID_ARGUMENT');
      await env.publish(v.id, mountCap(), target, { readonly: true });
      expect(mountOptions(target)).toContain('ro');
      expect(spawnSync('touch', [join(target, 'x')]).status).not.toBe(0);
      await env.unpublish(v.id, target);
      await env.unstage(v.id);
    });

    it.for([['bind'], ['remount']] as const)('refuses mount flag %s at stage with INVALID_ARGUMENT, mounting nothing', async ([flag], { skip }) => {
      needNode(skip);
      const v = await provision(`path-flag-${flag}`, 'raw', mountCap());
      expect(await codeName(stageWith(v, mountCap('SINGLE_NODE_WRITER', 'ext4', [flag])))).toBe('INVALID_ARGUMENT');
      expect(isMountPoint(env.paths(v.id).staging)).toBe(false);
    });
  });
}
