/** Loads proto/csi.proto the same way for the server, the tests and the demo. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type GrpcObject, type ServiceClientConstructor } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

/** longs as strings: int64 sizes above 2^53 stay exact (converted to bigint at the edge). */
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

export interface CsiPackage {
  Identity: ServiceClientConstructor;
  Controller: ServiceClientConstructor;
  Node: ServiceClientConstructor;
}

export function loadCsi(): CsiPackage {
  const definition = loadSync(join(packageRoot(), 'proto', 'csi.proto'), LOADER_OPTIONS);
  const root = loadPackageDefinition(definition) as GrpcObject;
  const v1 = (root['csi'] as GrpcObject)['v1'] as unknown as CsiPackage;
  return v1;
}
