/**
 * Node rules for staging and publishing (CSI spec, "Node Service RPC"): the
 * stage → publish → unpublish → unstage order, staging and target path rules,
 * the spec's table for a second NodePublishVolume, repeated calls. The driver
 * must run on this host: its kubelet directory is ours.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { blockCap, codeName, mountCap, type Env } from './harness.js';
import { isMountPoint, mountOptions, nodeSteps } from './node-steps.js';

export function nodeRules(env: Env): void {
  const { needNode, provision, stageWith } = nodeSteps(env);

  describe('Node: stage and publish', () => {
    it('stages, publishes, unpublishes and unstages a filesystem volume, each step answering a repeat with OK', async ({ skip }) => {
      needNode(skip);
      const cap = mountCap();
      const v = await provision('node-fs', 'raw', cap);
      const { staging, target } = env.paths(v.id);
      await stageWith(v, cap);
      await stageWith(v, cap);
      expect(isMountPoint(staging)).toBe(true);
      await env.publish(v.id, cap, target);
      await env.publish(v.id, cap, target);
      expect(isMountPoint(target)).toBe(true);
      writeFileSync(join(target, 'hello'), 'written through the target');
      expect(readFileSync(join(staging, 'hello'), 'utf8')).toBe('written through the target');
      await env.unpublish(v.id, target);
      await env.unpublish(v.id, target);
      // The SP MUST delete the file or directory it created at target_path.
      expect(existsSync(target)).toBe(false);
      await env.unstage(v.id);
      await env.unstage(v.id);
      expect(isMountPoint(staging)).toBe(false);
    });

    it('publishes a block volume as a device file of the volume size, and removes the file on unpublish', async ({ skip }) => {
      needNode(skip);
      const cap = blockCap();
      const v = await provision('node-blk', 'raw', cap);
      const { device } = env.paths(v.id);
      await stageWith(v, cap);
      await env.publish(v.id, cap, device);
      expect(statSync(device).isBlockDevice()).toBe(true);
      expect(BigInt(execFileSync('blockdev', ['--getsize64', device], { encoding: 'utf8' }).trim())).toBe(v.capacity);
      await env.unpublish(v.id, device);
      expect(existsSync(device)).toBe(false);
      await env.unstage(v.id);
    });

    it('refuses to publish before NodeStageVolume with FAILED_PRECONDITION, and a volume that does not exist with NOT_FOUND', async ({ skip }) => {
      needNode(skip);
      const cap = mountCap();
      const v = await provision('node-unstaged', 'raw', cap);
      expect(await codeName(env.publish(v.id, cap, env.paths(v.id).target))).toBe('FAILED_PRECONDITION');
      const nope = env.name('node-nope');
      expect(await codeName(env.publish(nope, cap, env.paths(nope).target))).toBe('NOT_FOUND');
      expect(await codeName(env.stage(nope, cap))).toBe('NOT_FOUND');
    });

    it('answers a publish without staging_target_path with FAILED_PRECONDITION, as STAGE_UNSTAGE_VOLUME is advertised', async ({ skip }) => {
      needNode(skip);
      const id = env.name('node-no-staging');
      const req = { volume_id: id, target_path: env.paths(id).target, volume_capability: mountCap() };
      expect(await codeName(env.node('NodePublishVolume', req))).toBe('FAILED_PRECONDITION');
    });

    it('refuses to unstage while the volume is published (FAILED_PRECONDITION), and to publish after unstage', async ({ skip }) => {
      needNode(skip);
      const cap = mountCap();
      const v = await provision('node-order', 'raw', cap);
      const { staging, target } = env.paths(v.id);
      await stageWith(v, cap);
      await env.publish(v.id, cap, target);
      expect(await codeName(env.unstage(v.id))).toBe('FAILED_PRECONDITION');
      expect(isMountPoint(staging)).toBe(true);
      expect(isMountPoint(target)).toBe(true);
      await env.unpublish(v.id, target);
      await env.unstage(v.id);
      expect(await codeName(env.publish(v.id, cap, target))).toBe('FAILED_PRECONDITION');
      expect(existsSync(target)).toBe(false);
    });

    it('unpublishes and unstages what was never published or staged with OK', async ({ skip }) => {
      needNode(skip);
      const cap = mountCap();
      const v = await provision('node-never', 'raw', cap);
      const { target } = env.paths(v.id);
      expect(await codeName(env.unpublish(v.id, target))).toBe('OK');
      expect(await codeName(env.unstage(v.id))).toBe('OK');
      expect(await codeName(env.unpublish(env.name('node-nope'), target))).toBe('OK');
    });

    it("leaves a volume's stage and targets alone when asked to unstage or unpublish at paths that are not its own", async ({ skip }) => {
      needNode(skip);
      const cap = mountCap();
      const a = await provision('node-mine', 'raw', cap);
      const b = await provision('node-theirs', 'raw', cap);
      for (const v of [a, b]) {
        await stageWith(v, cap);
        await env.publish(v.id, cap, env.paths(v.id).target);
      }
      // CSI NodeUnstageVolume: not staged at staging_target_path → OK.
      expect(await codeName(env.unstage(a.id, env.paths(a.id).otherStaging))).toBe('OK');
      expect(isMountPoint(env.paths(a.id).staging)).toBe(true);
      expect(await codeName(env.unpublish(a.id, env.paths(b.id).target))).toBe('OK');
      expect(isMountPoint(env.paths(b.id).target)).toBe(true);
      expect(await codeName(env.unstage(env.name('node-nope'), env.paths(b.id).staging))).toBe('OK');
      expect(isMountPoint(env.paths(b.id).staging)).toBe(true);
      for (const v of [a, b]) {
        await env.unpublish(v.id, env.paths(v.id).target);
        await env.unstage(v.id);
      }
    });

    it.for([
      ['another filesystem type', mountCap('SINGLE_NODE_WRITER', 'xfs'), undefined],
      ['other mount flags', mountCap('SINGLE_NODE_WRITER', 'ext4', ['noatime']), undefined],
      ['another access mode', mountCap('SINGLE_NODE_MULTI_WRITER'), undefined],
      ['the same capability at another staging path', mountCap(), 'other'],
    ] as const)('answers ALREADY_EXISTS to a second stage with %s', async ([, cap, where], { skip }) => {
      needNode(skip);
      const v = await provision('node-restage', 'raw', mountCap());
      await stageWith(v, mountCap());
      const extra = where === 'other' ? { staging_target_path: env.paths(v.id).otherStaging } : {};
      expect(await codeName(stageWith(v, cap, extra))).toBe('ALREADY_EXISTS');
      await env.unstage(v.id);
    });

    it.for([
      ['a multi-node writer filesystem', 'raw', mountCap('MULTI_NODE_MULTI_WRITER')],
      ['a multi-node writer qcow2 block device', 'qcow2', blockCap('MULTI_NODE_MULTI_WRITER')],
      ['a filesystem type it does not make', 'raw', mountCap('SINGLE_NODE_WRITER', 'btrfs')],
    ] as const)('refuses to stage %s, which the volume cannot serve, with INVALID_ARGUMENT', async ([, format, cap], { skip }) => {
      needNode(skip);
      const made = await env.createVolume(env.name(`node-unservable-${format}`), { parameters: { format } });
      expect(await codeName(env.stage(made.volume_id, cap))).toBe('INVALID_ARGUMENT');
      expect(isMountPoint(env.paths(made.volume_id).staging)).toBe(false);
    });

    it.for([
      ['the readonly flag', mountCap(), true],
      ['mount flags', mountCap('SINGLE_NODE_WRITER', 'ext4', ['noatime']), false],
      ['the access mode', mountCap('SINGLE_NODE_READER_ONLY'), false],
    ] as const)('answers ALREADY_EXISTS to a second publish at the same target that differs in %s', async ([, cap, readonly], { skip }) => {
      needNode(skip);
      const v = await provision('node-republish', 'raw', mountCap());
      const { target } = env.paths(v.id);
      await stageWith(v, mountCap());
      await env.publish(v.id, mountCap(), target);
      expect(await codeName(env.publish(v.id, cap, target, { readonly }))).toBe('ALREADY_EXISTS');
      expect(mountOptions(target)).toContain('rw');
      await env.unpublish(v.id, target);
      await env.unstage(v.id);
    });

    // The spec's table for a second NodePublishVolume at another target on the same node:
    // OK for MULTI_NODE (and SINGLE_NODE_MULTI_WRITER), FAILED_PRECONDITION for modes that
    // may be published once. SINGLE_NODE_WRITER is Kubernetes' ReadWriteOnce, shared by the
    // pods of one node: filedriver deliberately lets it be published more than once.
    it.for([
      ['SINGLE_NODE_MULTI_WRITER', 'OK'],
      ['MULTI_NODE_READER_ONLY', 'OK'],
      ['SINGLE_NODE_WRITER', 'OK'],
      ['SINGLE_NODE_SINGLE_WRITER', 'FAILED_PRECONDITION'],
      ['SINGLE_NODE_READER_ONLY', 'FAILED_PRECONDITION'],
    ] as const)('a %s volume published at one target is %s at a second', async ([mode, expected], { skip }) => {
      needNode(skip);
      const cap = blockCap(mode);
      const v = await provision(`node-twice-${mode.toLowerCase()}`, 'raw', cap);
      await stageWith(v, cap);
      await env.publish(v.id, cap, env.paths(v.id, 'pod-1').device);
      const second = env.paths(v.id, 'pod-2').device;
      expect(await codeName(env.publish(v.id, cap, second))).toBe(expected);
      if (expected !== 'OK') expect(existsSync(second)).toBe(false);
      await env.unpublish(v.id, second);
      await env.unpublish(v.id, env.paths(v.id, 'pod-1').device);
      await env.unstage(v.id);
    });

    it('refuses to publish a volume staged as a filesystem as a block device', async ({ skip }) => {
      needNode(skip);
      const v = await provision('node-access', 'raw', mountCap());
      await stageWith(v, mountCap());
      expect(await codeName(env.publish(v.id, blockCap(), env.paths(v.id).device))).toBe('FAILED_PRECONDITION');
      await env.unstage(v.id);
    });

    it('stages read-only what the controller published read-only', async ({ skip }) => {
      needNode(skip);
      if (!env.controllerCaps.has('PUBLISH_READONLY')) skip('PUBLISH_READONLY not advertised');
      const cap = mountCap();
      const v = await provision('node-ro', 'raw', cap);
      // A filesystem is made on the first (read-write) stage only.
      await stageWith(v, cap);
      await env.unstage(v.id);
      await env.controller('ControllerUnpublishVolume', { volume_id: v.id, node_id: env.nodeId });
      const ro = await env.controller('ControllerPublishVolume', { volume_id: v.id, node_id: env.nodeId, volume_capability: cap, readonly: true });
      await env.stage(v.id, cap, { publish_context: ro.publish_context });
      expect(mountOptions(env.paths(v.id).staging)).toContain('ro');
      await env.unstage(v.id);
    });
  });
}
