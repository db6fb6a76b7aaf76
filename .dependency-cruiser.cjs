/**
 * The layering of docs/ARCHITECTURE.md and STYLE.md, checked by `npm run lint` (issue 15).
 * Dependencies point inward:
 *
 *   csi/ (the gRPC face) → controller/, node/ (use cases) → storage/ (records on the shares)
 *     → system/ (one adapter per tool) → domain/ (pure)
 *
 * app.ts, main.ts and cli/ wire the whole and may import any of it; config.ts (settings) and
 * metrics.ts (prom-client) sit beside them. Type-only imports count: a layer that names another's
 * types depends on it.
 */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'An import cycle in src. (The generated proto types of google/protobuf refer to themselves.)',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/csi/generated/' },
      to: { circular: true },
    },
    {
      name: 'domain-is-pure',
      comment: 'domain/ is pure logic: it imports only domain/ and node builtins (no system, storage, grpc, packages).',
      severity: 'error',
      from: { path: '^src/domain/' },
      to: { pathNot: '^src/domain/', dependencyTypesNot: ['core'] },
    },
    {
      name: 'csi-not-storage',
      comment: 'csi/ translates messages and calls use cases; the stores are reached through controller/ and node/.',
      severity: 'error',
      from: { path: '^src/csi/' },
      to: { path: '^src/storage/' },
    },
    {
      name: 'csi-inward',
      comment:
        'csi/ depends on use cases and domain only. Exception: status.ts maps system/command.ts CommandFailed ' +
        '(the one error type adapters throw) to INTERNAL.',
      severity: 'error',
      from: { path: '^src/csi/' },
      to: { path: '^src/(system|cli)/|^src/(app|main)[.]ts$', pathNot: '^src/system/command[.]ts$' },
    },
    {
      name: 'use-cases-inward',
      comment: 'controller/ and node/ are called by csi/ and cli/, never the other way round.',
      severity: 'error',
      from: { path: '^src/(controller|node)/' },
      to: { path: '^src/(csi|cli)/|^src/(app|main)[.]ts$' },
    },
    {
      name: 'controller-and-node-apart',
      comment: 'The controller and the node plugin meet on the shares (files), not in code: neither imports the other.',
      severity: 'error',
      from: { path: '^src/(controller|node)/' },
      to: { path: '^src/(controller|node)/', pathNot: '^src/$1/' },
    },
    {
      name: 'storage-below-use-cases',
      comment: 'storage/ reads and writes the records on the shares for the use cases; it knows nothing above it.',
      severity: 'error',
      from: { path: '^src/storage/' },
      to: { path: '^src/(controller|node|csi|cli)/|^src/(app|main|metrics)[.]ts$' },
    },
    {
      name: 'system-is-adapters',
      comment: 'system/ adapters know only domain/ and each other; settings come in through their constructors.',
      severity: 'error',
      from: { path: '^src/system/' },
      to: { path: '^src/(controller|node|csi|storage|cli)/|^src/(app|main|metrics|config)[.]ts$' },
    },
    {
      name: 'src-not-dev-dependencies',
      comment: 'What ships (src/) may not import a devDependency: it is not installed with the package.',
      severity: 'error',
      from: { path: '^src/' },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // Count `import type` too (without this, dependency-cruiser sees only what tsc emits).
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'] },
  },
};
