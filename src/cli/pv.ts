/** A ready-to-apply PersistentVolume for a volume the admin imported (static provisioning). */
import { Document, isScalar } from 'yaml';
import { topologyKey } from '../domain/topology.js';

export interface PvInput {
  driverName: string;
  volumeId: string;
  mount: string;
  format: string;
  sizeBytes: bigint;
  /** Where the image came from, for the header comment. */
  origin: string;
}

/** A Kubernetes object name (DNS-1123 subdomain) for the volume id, which may hold capitals or `_`. */
export function pvName(volumeId: string): string {
  const name = volumeId
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '')
    .slice(0, 253);
  return name === '' ? 'imported-volume' : name;
}

/** An exact Kubernetes quantity: binary suffixes when they divide the size. */
export function quantity(bytes: bigint): string {
  for (const [suffix, unit] of [
    ['Ti', 1n << 40n],
    ['Gi', 1n << 30n],
    ['Mi', 1n << 20n],
    ['Ki', 1n << 10n],
  ] as const) {
    if (bytes >= unit && bytes % unit === 0n) return `${bytes / unit}${suffix}`;
  }
  return bytes.toString();
}

export function persistentVolumeYaml(input: PvInput): string {
  const name = pvName(input.volumeId);
  const doc = new Document({
    apiVersion: 'v1',
    kind: 'PersistentVolume',
    metadata: { name },
    spec: {
      capacity: { storage: quantity(input.sizeBytes) },
      volumeMode: 'Filesystem',
      accessModes: ['ReadWriteOnce'],
      persistentVolumeReclaimPolicy: 'Retain',
      storageClassName: '',
      csi: {
        driver: input.driverName,
        volumeHandle: input.volumeId,
        fsType: 'ext4',
        volumeAttributes: { format: input.format, mount: input.mount },
      },
      // The volume is reachable only on nodes that see its mount (the key NodeGetInfo reports).
      nodeAffinity: {
        required: {
          nodeSelectorTerms: [{ matchExpressions: [{ key: topologyKey(input.driverName, input.mount), operator: 'In', values: ['true'] }] }],
        },
      },
    },
  });
  doc.commentBefore = [
    ` ${input.origin}, imported as filedriver volume ${input.volumeId} on mount ${input.mount}.`,
    ` Claim it with a PVC that has volumeName: ${name} and storageClassName: "".`,
    ` Retain: deleting the PV keeps the volume (filedriver/volumes/${input.volumeId} on the mount).`,
  ].join('\n');
  comment(doc, ['spec', 'volumeMode'], ' or Block: the pod gets the whole disk (e.g. a VM disk with partitions); then drop csi.fsType');
  comment(
    doc,
    ['spec', 'csi', 'fsType'],
    ' the filesystem in the image (ext4 or xfs); a blank image is formatted at first use, anything else is never formatted over',
  );
  return doc.toString({ lineWidth: 0 });
}

function comment(doc: Document, path: string[], text: string): void {
  const node = doc.getIn(path, true);
  if (isScalar(node)) node.comment = text;
}
