/**
 * StorageClass parameters of CreateVolume, validated into a typed form.
 * Unknown keys are refused so a typo never silently falls back to a default.
 */
import { invalid } from './errors.js';

export const FORMATS = ['qcow2', 'raw'] as const;
export type Format = (typeof FORMATS)[number];
export type Preallocation = 'off' | 'metadata' | 'falloc' | 'full';

export interface VolumeParameters {
  format: Format;
  /** Mount names this class may use; undefined = all. */
  mounts: string[] | undefined;
  preallocation: Preallocation;
  clusterSize: bigint | undefined;
  pvcName: string | undefined;
  pvcNamespace: string | undefined;
  /** linked: a qcow2 overlay on an immutable base (O(1)); full: an independent copy. */
  cloneMode: CloneMode;
  /** `<mount>/<relative path>` of a golden image every volume of the class starts from. */
  sourceImage: { mount: string; path: string } | undefined;
}

export type CloneMode = 'linked' | 'full';

export const PARAMETER_KEYS = ['format', 'mounts', 'preallocation', 'clusterSize', 'cloneMode', 'sourceImage'] as const;
/** Keys the external-provisioner adds (--extra-create-metadata) and secret references. */
const K8S_PREFIX = 'csi.storage.k8s.io/';

const PREALLOCATION: Record<Format, readonly Preallocation[]> = {
  qcow2: ['off', 'metadata', 'falloc', 'full'],
  raw: ['off', 'falloc', 'full'],
};

export function isFormat(s: string): s is Format {
  return (FORMATS as readonly string[]).includes(s);
}

/** qcow2 cluster sizes are powers of two from 512 B to 2 MiB; "64k" and "2M" are accepted. */
export function parseClusterSize(text: string): bigint {
  const m = /^(\d+)([kKmM]?)$/.exec(text.trim());
  if (m === null) throw invalid(`clusterSize ${JSON.stringify(text)} is not a size such as 65536, 64k or 2M`);
  const unit = m[2]?.toLowerCase() === 'k' ? 1024n : m[2]?.toLowerCase() === 'm' ? 1024n * 1024n : 1n;
  const n = BigInt(m[1] ?? '0') * unit;
  const powerOfTwo = n > 0n && (n & (n - 1n)) === 0n;
  if (!powerOfTwo || n < 512n || n > 2n * 1024n * 1024n) {
    throw invalid(`clusterSize ${text} must be a power of two between 512 and 2M`);
  }
  return n;
}

export function parseParameters(params: Record<string, string>, defaultFormat: Format): VolumeParameters {
  const unknown = Object.keys(params).filter((k) => !(PARAMETER_KEYS as readonly string[]).includes(k) && !k.startsWith(K8S_PREFIX));
  if (unknown.length > 0) {
    throw invalid(`unknown StorageClass parameter ${unknown.map((k) => JSON.stringify(k)).join(', ')}; valid: ${PARAMETER_KEYS.join(', ')}`);
  }
  const formatText = params['format'] ?? defaultFormat;
  if (!isFormat(formatText)) throw invalid(`format ${JSON.stringify(formatText)} must be qcow2 or raw`);
  const format = formatText;
  const preallocation = (params['preallocation'] ?? 'off') as Preallocation;
  if (!PREALLOCATION[format].includes(preallocation)) {
    throw invalid(`preallocation ${JSON.stringify(preallocation)} is not valid for ${format}; valid: ${PREALLOCATION[format].join(', ')}`);
  }
  const clusterText = params['clusterSize'];
  if (clusterText !== undefined && format !== 'qcow2') throw invalid('clusterSize applies only to format qcow2');
  const mountsText = params['mounts'];
  const mounts =
    mountsText === undefined
      ? undefined
      : mountsText
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '');
  if (mounts !== undefined && mounts.length === 0) throw invalid('mounts must name at least one mount');
  const cloneText = params['cloneMode'] ?? (format === 'qcow2' ? 'linked' : 'full');
  if (cloneText !== 'linked' && cloneText !== 'full') throw invalid(`cloneMode ${JSON.stringify(cloneText)} must be linked or full`);
  if (cloneText === 'linked' && format !== 'qcow2') throw invalid('cloneMode linked needs format qcow2 (a raw image has no backing file)');
  return {
    format,
    mounts,
    cloneMode: cloneText,
    sourceImage: parseSourceImage(params['sourceImage']),
    preallocation,
    clusterSize: clusterText === undefined ? undefined : parseClusterSize(clusterText),
    pvcName: params[`${K8S_PREFIX}pvc/name`],
    pvcNamespace: params[`${K8S_PREFIX}pvc/namespace`],
  };
}

/** A thin image takes space as it is written; raw and preallocated ones need it all now. */
export function isThin(p: Pick<VolumeParameters, 'format' | 'preallocation'>): boolean {
  return p.format === 'qcow2' && (p.preallocation === 'off' || p.preallocation === 'metadata');
}

function parseSourceImage(text: string | undefined): VolumeParameters['sourceImage'] {
  if (text === undefined) return undefined;
  const slash = text.indexOf('/');
  const mount = slash < 0 ? '' : text.slice(0, slash);
  const path = slash < 0 ? '' : text.slice(slash + 1);
  if (mount === '' || path === '' || path.startsWith('/') || path.split('/').includes('..') || path.includes('\0')) {
    throw invalid(`sourceImage ${JSON.stringify(text)} must be <mount>/<path inside the mount>`);
  }
  return { mount, path };
}
