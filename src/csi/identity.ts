/** CSI Identity service: who we are, what we serve, that we answer. */
import type { IdentityHandlers } from './generated/csi/v1/Identity.js';
import type { Handle } from './handle.js';

export interface IdentityDeps {
  driverName: string;
  version: string;
  controller: boolean;
}

export function identityService(handle: Handle, deps: IdentityDeps): IdentityHandlers {
  return {
    GetPluginInfo: handle('GetPluginInfo', {}, () => ({
      name: deps.driverName,
      vendor_version: deps.version,
      manifest: {},
    })),
    GetPluginCapabilities: handle('GetPluginCapabilities', {}, () => ({
      capabilities: [
        ...(deps.controller ? [{ service: { type: 'CONTROLLER_SERVICE' as const } }] : []),
        { service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } },
        { volume_expansion: { type: 'ONLINE' } },
      ],
    })),
    // Probe feeds the livenessprobe sidecar, so it means "the process answers": the server
    // starts only once start-up is done. Share health and working tools are readiness
    // (/healthz) and the RPCs' own answers; a restart fixes neither, and a liveness
    // failure during a filer outage would only add back-off to the outage.
    Probe: handle('Probe', { level: 'trace' }, () => ({ ready: { value: true } })),
  };
}
