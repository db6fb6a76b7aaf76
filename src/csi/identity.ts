/** CSI Identity service: who we are, what we serve, whether we are ready. */
import type { Logger } from 'pino';
import type { Handle } from './handle.js';

export interface IdentityDeps {
  driverName: string;
  version: string;
  controller: boolean;
  /** Ready only while a mount is usable and the tools run. */
  ready: (log: Logger) => Promise<boolean>;
}

export function identityService(handle: Handle, deps: IdentityDeps) {
  return {
    GetPluginInfo: handle('GetPluginInfo', {}, async () => ({
      name: deps.driverName,
      vendor_version: deps.version,
      manifest: {},
    })),
    GetPluginCapabilities: handle('GetPluginCapabilities', {}, async () => ({
      capabilities: [
        ...(deps.controller ? [{ service: { type: 'CONTROLLER_SERVICE' } }] : []),
        { service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } },
        { volume_expansion: { type: 'ONLINE' } },
      ],
    })),
    Probe: handle('Probe', { level: 'trace' }, async (_req, log) => ({ ready: { value: await deps.ready(log) } })),
  };
}
