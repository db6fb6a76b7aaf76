/** CSI snapshot RPCs of the Controller service. */
import type { SnapshotService } from '../controller/snapshots.js';
import { idFromName } from '../domain/ids.js';
import type { Handle } from './handle.js';
import { toCsiSnapshot } from './messages.js';
import { requireString } from './requests.js';
import type { ControllerService } from './server.js';

export function snapshotHandlers(
  handle: Handle,
  snapshots: SnapshotService,
): Pick<ControllerService, 'CreateSnapshot' | 'DeleteSnapshot' | 'ListSnapshots'> {
  return {
    CreateSnapshot: handle(
      'CreateSnapshot',
      {
        ids: (r) => ({ name: r.name, volumeId: r.source_volume_id }),
        locks: (r) => [`snapshot:${idFromName(r.name)}`, `volume:${r.source_volume_id}`],
      },
      async (r, log) => {
        const name = requireString(r.name, 'name');
        const source = requireString(r.source_volume_id, 'source_volume_id');
        return { snapshot: toCsiSnapshot(await snapshots.create(name, source, r.parameters, log)) };
      },
    ),

    DeleteSnapshot: handle(
      'DeleteSnapshot',
      { ids: (r) => ({ snapshotId: r.snapshot_id }), locks: (r) => [`snapshot:${r.snapshot_id}`] },
      async (r, log) => {
        await snapshots.delete(requireString(r.snapshot_id, 'snapshot_id'), log);
        return {};
      },
    ),

    ListSnapshots: handle('ListSnapshots', {}, async (r) => {
      const page = await snapshots.list(r.max_entries, r.starting_token, { snapshotId: r.snapshot_id, sourceVolumeId: r.source_volume_id });
      return { entries: page.entries.map((s) => ({ snapshot: toCsiSnapshot(s) })), next_token: page.nextToken };
    }),
  };
}
