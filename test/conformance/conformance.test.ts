/**
 * CSI spec conformance of filedriver, over its unix socket with a plain gRPC
 * client, the way kubelet and the sidecars talk to it. By default a driver is
 * started on scratch mounts (needs root); `CSI_ENDPOINT=unix:///… npm run
 * conformance` checks a running one instead (see harness.ts for its settings).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { attachRules } from './attach.js';
import { fieldRules } from './fields.js';
import { driverTrees, Env, external } from './harness.js';
import { identityRules } from './identity.js';
import { listingRules } from './listing.js';
import { nodeRules } from './node.js';
import { nodePathRules } from './node-paths.js';
import { nodeStatsRules } from './node-stats.js';
import { secretRules } from './secrets.js';
import { snapshotRules } from './snapshots.js';
import { volumeRules } from './volumes.js';

const env = new Env();

describe.skipIf(!isRoot && external === undefined)(`CSI conformance of ${external ?? 'a self-started filedriver'}`, () => {
  beforeAll(async () => {
    if (external === undefined) rootOnlyReason();
    await env.open();
  });
  afterEach(async () => {
    await env.sweep();
  });
  afterAll(async () => {
    await env.close();
  });

  identityRules(env);
  fieldRules(env);
  volumeRules(env);
  listingRules(env);
  attachRules(env);
  snapshotRules(env);
  nodeRules(env);
  nodePathRules(env);
  nodeStatsRules(env);
  secretRules(env);

  describe('afterwards', () => {
    it('holds nothing of the suite once everything it made is deleted', async () => {
      await env.sweep();
      expect(driverTrees(env)).toEqual([]);
      if (env.controllerCaps.has('LIST_VOLUMES')) {
        const ids = (await env.controller('ListVolumes', {})).entries.map((e: any) => e.volume.volume_id as string);
        expect(ids.filter((id: string) => id.startsWith(env.run))).toEqual([]);
      }
      if (env.controllerCaps.has('LIST_SNAPSHOTS')) {
        const ids = (await env.controller('ListSnapshots', {})).entries.map((e: any) => e.snapshot.snapshot_id as string);
        expect(ids.filter((id: string) => id.startsWith(env.run))).toEqual([]);
      }
    });
  });
});
