/** Loads proto/csi.proto the same way for the server, the tests and the demo. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPackageDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import type { ProtoGrpcType } from './generated/csi.js';

/**
 * longs as strings: int64 sizes above 2^53 stay exact (converted to bigint at the edge).
 * src/csi/generated is generated with the same options (npm run gen:proto).
 */
export const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true } as const;

/** The package root, found from this file whether it runs from src/ or dist/src/. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'proto', 'csi.proto'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('proto/csi.proto not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

export type CsiPackage = ProtoGrpcType['csi']['v1'];

export function loadCsi(): CsiPackage {
  const definition = loadSync(join(packageRoot(), 'proto', 'csi.proto'), LOADER_OPTIONS);
  // grpc-js types what it loads as a GrpcObject; the generated ProtoGrpcType says what this proto gives.
  return (loadPackageDefinition(definition) as unknown as ProtoGrpcType).csi.v1;
}
