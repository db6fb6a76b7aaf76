/** Small builders for CSI requests used across tests. */
export const MiB = 1024n * 1024n;
export const GiB = 1024n * MiB;

export function mountCap(mode = 'SINGLE_NODE_WRITER', fsType = 'ext4') {
  return { mount: { fs_type: fsType, mount_flags: [] }, access_mode: { mode } };
}

export function blockCap(mode = 'SINGLE_NODE_WRITER') {
  return { block: {}, access_mode: { mode } };
}

export function createRequest(name: string, extra: Record<string, unknown> = {}) {
  return {
    name,
    capacity_range: { required_bytes: String(64n * MiB) },
    volume_capabilities: [mountCap()],
    parameters: {},
    ...extra,
  };
}
