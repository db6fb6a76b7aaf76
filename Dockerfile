# syntax=docker/dockerfile:1
# filedriver: one image for the controller and the node plugin.
#   docker build -t filedriver:0.1.0 --build-arg VERSION=0.1.0 .
# The node plugin runs it privileged as root (see charts/filedriver); the
# image's default user is an unprivileged one, which the controller keeps.

ARG NODE_MAJOR=22

# Build: compile TypeScript with the dev dependencies.
FROM node:${NODE_MAJOR}-bookworm AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would compile before the sources are copied.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json ./
COPY proto ./proto
COPY src ./src
RUN npx tsc -p tsconfig.json

# Production dependencies only, without compilers or caches.
FROM node:${NODE_MAJOR}-bookworm AS deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm cache clean --force

# qemu 11 (Debian trixie-backports) with its libraries and glibc loader in a private prefix:
# Debian 12's qemu 7.2 FUSE export is several times slower (docs/NODE-FACTS.md, "qemu 11").
FROM node:${NODE_MAJOR}-bookworm AS qemu
COPY scripts/install-qemu.sh /tmp/install-qemu.sh
RUN bash /tmp/install-qemu.sh /opt/filedriver/qemu

# Runtime: Node.js LTS on Debian 12 slim with the tools the driver runs.
FROM node:${NODE_MAJOR}-bookworm-slim AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="filedriver" \
      org.opencontainers.image.description="Kubernetes CSI driver: qcow2/raw disk image volumes on pre-mounted NFS shares" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="node:${NODE_MAJOR}-bookworm-slim"
# qemu-img and qemu-storage-daemon come from the qemu stage's prefix (below);
# e2fsprogs, xfsprogs: mkfs and online grow; fuse3: FUSE; mount:
# mount, umount, losetup; util-linux: blkid, wipefs, blockdev, mountpoint (the
# nfs share pods); tini: PID 1 that reaps the daemonised
# qemu-storage-daemon processes once they exit (Node does not reap
# grandchildren re-parented to it).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      e2fsprogs xfsprogs fuse3 mount util-linux tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 filedriver \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin filedriver
WORKDIR /opt/filedriver
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
# The driver finds qemu through $FILEDRIVER_QEMU/filedriver-qemu.json.
COPY --from=qemu /opt/filedriver/qemu /opt/filedriver/qemu
COPY package.json ./
COPY proto ./proto
RUN ln -s /opt/filedriver/dist/src/main.js /usr/local/bin/filedriver && chmod 0755 dist/src/main.js \
 && filedriver --version \
 && for tool in qemu-img qemu-storage-daemon; do \
      /opt/filedriver/qemu/bin/$tool --library-path /opt/filedriver/qemu/usr/lib/x86_64-linux-gnu \
        --argv0 $tool /opt/filedriver/qemu/usr/bin/$tool --version; \
    done
# A share whose NFS server is gone blocks each filesystem call on it, and each blocked call
# holds a libuv pool thread (4 by default): more threads keep the other shares served. It must
# be set before node starts (the ESM loader already uses the pool).
ENV NODE_ENV=production UV_THREADPOOL_SIZE=16 FILEDRIVER_QEMU=/opt/filedriver/qemu
USER 65532:65532
ENTRYPOINT ["/usr/bin/tini", "--", "filedriver"]
CMD ["--help"]
