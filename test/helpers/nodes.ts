/**
 * Registers node ids in the node registry on shares (storage/nodes.ts), as a
 * node plugin with that id would at start-up, so controller tests can publish
 * to nodes that run no plugin here. The driver tree must exist (a driver
 * serving the share has made it).
 */
import { Layout } from '../../src/storage/layout.js';
import { NODE_SCHEMA, writeNode } from '../../src/storage/nodes.js';

export async function registerNodes(shares: string[], nodes: string[], heartbeatAt = new Date()): Promise<void> {
  for (const path of shares) {
    for (const node of nodes) {
      const at = heartbeatAt.toISOString();
      await writeNode(new Layout(path), { schema: NODE_SCHEMA, node, mounts: [], staged: [], version: 'test', startedAt: at, heartbeatAt: at });
    }
  }
}
