/**
 * Secrets (CSI spec, "Secrets Requirements"): every RPC with a `secrets` field
 * accepts it, and no secret ever shows in the driver's log or in an error it
 * returns; mount_flags "MAY contain sensitive information" and are treated
 * the same. Distinctive values are sent, then looked for.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { blockCap, failure, mountCap, SIZE, type Env, type Failure } from './harness.js';

export function secretRules(env: Env): void {
  describe('secrets', () => {
    const value = `s3cr3t-${randomBytes(6).toString('hex')}`;
    const flagValue = `fl4g-${randomBytes(6).toString('hex')}`;
    const secrets = { password: value, 'api-token': `${value}-token` };
    const answers: [string, Failure][] = [];
    const call = async (rpc: string, p: Promise<unknown>) => {
      const f = await failure(p);
      answers.push([rpc, f]);
      return f;
    };

    it('accepts secrets in every RPC that carries them, and a credential in mount_flags', async ({ skip }) => {
      if (!env.servesController || !env.servesNode || !env.controllerCaps.has('CREATE_DELETE_VOLUME')) skip('needs both services');
      const has = (c: string) => env.controllerCaps.has(c);
      const name = env.name('secret');
      const id = (await env.createVolume(name, { parameters: { format: 'raw' }, secrets })).volume_id;
      expect(
        (await call('CreateVolume again', env.controller('CreateVolume', env.createRequest(name, { parameters: { format: 'raw' }, secrets })))).name,
      ).toBe('OK');
      // A refused request with secrets: its error must not carry them either.
      await call(
        'CreateVolume refused',
        env.controller('CreateVolume', env.createRequest(env.name('secret-bad'), { parameters: { nonsense: 'x' }, secrets })),
      );
      expect(
        (
          await call(
            'ValidateVolumeCapabilities',
            env.controller('ValidateVolumeCapabilities', { volume_id: id, volume_capabilities: [mountCap()], secrets }),
          )
        ).name,
      ).toBe('OK');
      let publish_context: Record<string, string> = {};
      if (has('PUBLISH_UNPUBLISH_VOLUME')) {
        env.trackControllerPublish(id, env.nodeId);
        const req = { volume_id: id, node_id: env.nodeId, volume_capability: mountCap(), secrets };
        publish_context = (await env.controller('ControllerPublishVolume', req)).publish_context;
        expect((await call('ControllerPublishVolume', env.controller('ControllerPublishVolume', req))).name).toBe('OK');
      }
      if (has('EXPAND_VOLUME')) {
        const req = { volume_id: id, capacity_range: { required_bytes: String(2n * SIZE) }, secrets };
        expect((await call('ControllerExpandVolume', env.controller('ControllerExpandVolume', req))).name).toBe('OK');
      }
      if (has('CREATE_DELETE_SNAPSHOT')) {
        const snap = env.name('secret-snap');
        env.trackSnapshot(snap);
        expect((await call('CreateSnapshot', env.controller('CreateSnapshot', { name: snap, source_volume_id: id, secrets }))).name).toBe('OK');
        if (has('LIST_SNAPSHOTS'))
          expect((await call('ListSnapshots', env.controller('ListSnapshots', { snapshot_id: snap, secrets }))).name).toBe('OK');
        expect((await call('DeleteSnapshot', env.controller('DeleteSnapshot', { snapshot_id: snap, secrets }))).name).toBe('OK');
      }
      await call('GetSnapshot', env.controller('GetSnapshot', { snapshot_id: env.name('nope'), secrets }));

      const cap = mountCap();
      const { staging, target } = env.paths(id);
      expect((await call('NodeStageVolume', env.stage(id, cap, { publish_context, secrets }))).name).toBe('OK');
      expect((await call('NodePublishVolume', env.publish(id, cap, target, { publish_context, secrets }))).name).toBe('OK');
      if (env.nodeCaps.has('EXPAND_VOLUME')) {
        const req = {
          volume_id: id,
          volume_path: target,
          staging_target_path: staging,
          capacity_range: { required_bytes: String(2n * SIZE) },
          secrets,
        };
        expect((await call('NodeExpandVolume', env.node('NodeExpandVolume', req))).name).toBe('OK');
      }
      // A credential-like mount flag, refused by the kernel: the failure must not show it.
      const others = [env.paths(id, 'pod-2').target, env.paths(id, 'pod-3').target];
      await call('NodePublishVolume with a bad flag', env.publish(id, mountCap('SINGLE_NODE_WRITER', 'ext4', [`password=${flagValue}`]), others[0]!));
      await call(
        'NodePublishVolume with a malformed flag',
        env.publish(id, mountCap('SINGLE_NODE_WRITER', 'ext4', [`ro,password=${flagValue}`]), others[1]!),
      );
      for (const other of others) await env.unpublish(id, other);
      await env.unpublish(id, target);
      await env.unstage(id);
      if (has('PUBLISH_UNPUBLISH_VOLUME')) {
        expect(
          (await call('ControllerUnpublishVolume', env.controller('ControllerUnpublishVolume', { volume_id: id, node_id: env.nodeId, secrets })))
            .name,
        ).toBe('OK');
      }
      if (has('MODIFY_VOLUME')) {
        expect(
          (
            await call(
              'ControllerModifyVolume',
              env.controller('ControllerModifyVolume', { volume_id: id, mutable_parameters: { format: 'qcow2' }, secrets }),
            )
          ).name,
        ).toBe('OK');
      }
      expect((await call('DeleteVolume', env.controller('DeleteVolume', { volume_id: id, secrets }))).name).toBe('OK');
      // And a secret on a failing node call.
      await call('NodeStageVolume refused', env.stage(env.name('secret-nope'), blockCap(), { secrets }));
    });

    it('never returns a secret or a mount flag credential in an error', ({ skip }) => {
      if (answers.length === 0) skip('no calls were made');
      for (const [rpc, f] of answers) {
        expect(f.details, rpc).not.toContain(value);
        expect(f.details, rpc).not.toContain(flagValue);
      }
    });

    it('never writes a secret or a mount flag credential to its log', async ({ skip }) => {
      if (answers.length === 0) skip('no calls were made');
      const log = await env.logText();
      if (log === undefined) skip('no log file (set CSI_LOG_FILE)');
      // The calls were logged, so their absence below means something.
      for (const rpc of ['CreateVolume', 'NodeStageVolume', 'NodePublishVolume', 'DeleteVolume']) expect(log).toContain(`"rpc":"${rpc}"`);
      expect(log).not.toContain(value);
      expect(log).not.toContain(flagValue);
    });
  });
}
