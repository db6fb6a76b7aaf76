#!/usr/bin/env bash
# Installs qemu-img and qemu-storage-daemon from Debian trixie-backports into a private prefix
# (default /opt/filedriver/qemu), as root, on Debian 12:
#   bash scripts/install-qemu.sh [PREFIX]
# Debian 12 ships qemu 7.2, whose FUSE export serves one request at a time; 11.1's serves many
# (docs/NODE-FACTS.md, "qemu 11"). The trixie packages need Debian 13's libraries, so the prefix
# carries them and its own glibc loader, and the tools run through that loader:
#   $PREFIX/bin/qemu-img --library-path $PREFIX/usr/lib/x86_64-linux-gnu --argv0 qemu-img \
#     $PREFIX/usr/bin/qemu-img ...      (with QEMU_MODULE_DIR=$PREFIX/usr/lib/x86_64-linux-gnu/qemu)
# bin/<tool> is a symlink to the loader, so the process is named after the tool.
# The system's apt and dpkg state and its qemu are left alone: apt runs with a configuration,
# sources, lists, cache and (empty) dpkg status of its own in a temporary directory, and
# signatures are verified with the Debian archive keyring.
# The driver reads $PREFIX/filedriver-qemu.json, written last; a prefix without it is not used.
set -euo pipefail
umask 022

# The pin: trixie-backports keeps only its newest version; when this one is gone, update it.
QEMU_DEBIAN_VERSION="${QEMU_DEBIAN_VERSION:-1:11.1.3+ds-2~bpo13+1}"
QEMU_VERSION="${QEMU_DEBIAN_VERSION#*:}"
QEMU_VERSION="${QEMU_VERSION%%[+~-]*}"
MIRROR="${QEMU_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# In trixie qemu-utils ships both tools (qemu-storage-daemon moved there from qemu-system-common).
PACKAGES=(qemu-utils)
TOOLS=(qemu-img qemu-storage-daemon)
SYSTEM_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
LIBDIR=usr/lib/x86_64-linux-gnu
LOADER="$LIBDIR/ld-linux-x86-64.so.2"
MODDIR="$LIBDIR/qemu"
PREFIX="${1:-/opt/filedriver/qemu}"
MANIFEST="$PREFIX/filedriver-qemu.json"

die() {
  echo "install-qemu: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root"
# The manifest holds the prefix's paths as JSON strings: keep them free of quoting.
[[ "$PREFIX" =~ ^(/[A-Za-z0-9._-]+)+$ ]] || die "PREFIX must be an absolute path of [A-Za-z0-9._-] names, not '$PREFIX'"
[ "$(dpkg --print-architecture)" = amd64 ] || die "only amd64 is supported"

# Runs a tool exactly as the driver does.
run_tool() {
  local tool="$1"
  shift
  QEMU_MODULE_DIR="$PREFIX/$MODDIR" "$PREFIX/bin/$tool" --library-path "$PREFIX/$LIBDIR" \
    --argv0 "$tool" "$PREFIX/usr/bin/$tool" "$@"
}

installed() {
  [ -f "$MANIFEST" ] || return 1
  grep -qF "\"debianVersion\":\"$QEMU_DEBIAN_VERSION\"" "$MANIFEST" || return 1
  grep -qF "\"loader\":\"$PREFIX/$LOADER\"" "$MANIFEST" || return 1
  local tool out
  for tool in "${TOOLS[@]}"; do
    out="$(run_tool "$tool" --version 2>/dev/null)" || return 1
    [[ "$out" == *"version $QEMU_VERSION "* ]] || return 1
  done
}

if installed; then
  echo "install-qemu: qemu $QEMU_VERSION already in $PREFIX"
  exit 0
fi

parent="$(dirname "$PREFIX")"
mkdir -p "$parent"
# One install at a time per prefix (the node plugin's init and an admin could race).
exec 9>"$parent/.$(basename "$PREFIX").lock"
flock 9
if installed; then
  echo "install-qemu: qemu $QEMU_VERSION already in $PREFIX"
  exit 0
fi

work="$(mktemp -d /tmp/install-qemu.XXXXXX)"
stage=""
old=""
cleanup() {
  rm -rf "$work"
  [ -z "$stage" ] || rm -rf "$stage"
  [ -z "$old" ] || rm -rf "$old"
}
trap cleanup EXIT
# apt downloads as the unprivileged _apt user: it must reach the partial directories.
chmod 0755 "$work"

# The system's proxy settings, if any (its apt.conf.d is not read by the private apt).
http_proxy_conf=""
eval "$(apt-config shell http_proxy_conf Acquire::http::Proxy)"

# Writes a private apt configuration in $work/$1 for the suites $3... of $MIRROR, signed by keyring $2.
apt_conf() {
  local dir="$work/$1" keyring="$2" suite
  shift 2
  mkdir -p "$dir"/etc/apt.conf.d "$dir"/etc/preferences.d "$dir"/etc/trusted.gpg.d \
    "$dir"/state/lists/partial "$dir"/cache/archives/partial "$dir"/log "$dir"/download
  : >"$dir/state/status"
  : >"$dir/etc/sources.list"
  for suite in "$@"; do
    echo "deb [signed-by=$keyring] $MIRROR $suite main" >>"$dir/etc/sources.list"
  done
  cat >"$dir/apt.conf" <<EOF
Dir::Etc "$dir/etc";
Dir::State "$dir/state";
Dir::State::status "$dir/state/status";
Dir::Cache "$dir/cache";
Dir::Log "$dir/log";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Acquire::AllowInsecureRepositories "false";
EOF
  [ -z "$http_proxy_conf" ] || echo "Acquire::http::Proxy \"$http_proxy_conf\";" >>"$dir/apt.conf"
  if id _apt >/dev/null 2>&1; then
    chown _apt "$dir"/state/lists/partial "$dir"/cache/archives/partial "$dir"/download
  fi
}

# apt-get with the private configuration $1.
apt_in() {
  local dir="$work/$1"
  shift
  APT_CONFIG="$dir/apt.conf" apt-get -q -o Dpkg::Use-Pty=0 "$@"
}

# Fetches trixie's package lists, verified with keyring $1; fails when the keyring lacks its key.
update_trixie() {
  rm -rf "$work/trixie"
  apt_conf trixie "$1" trixie trixie-backports
  apt_in trixie update >"$work/update.log" 2>&1 && ! grep -q 'GPG error' "$work/update.log"
}

# Debian 12's keyring verifies trixie while ftp-master also signs trixie with the bookworm key (it
# does in 2026), and with its own trixie keys from debian-archive-keyring 2023.3+deb12u1 (Debian
# 12.7) on. Failing both, take the newest keyring package from bookworm itself, verified with the
# system keyring, and verify trixie with the keys it carries.
keyring="$SYSTEM_KEYRING"
[ -r "$keyring" ] || die "$keyring missing: apt-get install debian-archive-keyring"
if ! update_trixie "$keyring"; then
  grep -qE 'NO_PUBKEY|not signed|EXPKEYSIG|signatures were invalid' "$work/update.log" ||
    die "apt-get update for trixie failed: $(tail -n 5 "$work/update.log")"
  echo "install-qemu: $keyring cannot verify trixie; taking debian-archive-keyring from bookworm"
  apt_conf bookworm "$SYSTEM_KEYRING" bookworm
  apt_in bookworm update >"$work/update-bookworm.log" 2>&1 ||
    die "apt-get update for bookworm failed: $(tail -n 5 "$work/update-bookworm.log")"
  (cd "$work/bookworm/download" && apt_in bookworm download debian-archive-keyring >/dev/null)
  dpkg-deb -x "$work"/bookworm/download/debian-archive-keyring_*.deb "$work/keyring"
  keyring="$work/keyring/usr/share/keyrings/debian-archive-keyring.gpg"
  update_trixie "$keyring" ||
    die "cannot verify trixie's Release files, even with bookworm's newest keyring: $(tail -n 5 "$work/update.log")"
fi

available="$(APT_CONFIG="$work/trixie/apt.conf" apt-cache madison "${PACKAGES[0]}" | awk -F' *[|] *' '{print $2}' | paste -sd ' ')"
case " $available " in
*" $QEMU_DEBIAN_VERSION "*) ;;
*) die "${PACKAGES[0]} $QEMU_DEBIAN_VERSION is no longer in trixie/trixie-backports (available: ${available:-none}); update QEMU_DEBIAN_VERSION in $0" ;;
esac

# The dependency closure, with nothing installed (empty status): the pinned qemu packages and
# trixie's libraries, glibc included.
apt_in trixie install -y --download-only "${PACKAGES[@]/%/=$QEMU_DEBIAN_VERSION}" >"$work/download.log" 2>&1 ||
  die "downloading ${PACKAGES[*]} $QEMU_DEBIAN_VERSION failed: $(tail -n 5 "$work/download.log")"
debs=("$work"/trixie/cache/archives/*.deb)
root="$work/root"
mkdir "$root"
for deb in "${debs[@]}"; do
  dpkg-deb -x "$deb" "$root"
done
[ -x "$root/$LOADER" ] || die "no loader at $LOADER in the packages"

# Prune to what the two tools load: the loader's own list of their libraries (and the files the
# soname links point to), the loader, the tools, and the copyright files of the packages they
# come from. qcow2, raw and file are built into qemu; no module is needed (qemu-utils has none).
keep="$work/keep"
: >"$keep"
for tool in "${TOOLS[@]}"; do
  [ -x "$root/usr/bin/$tool" ] || die "no usr/bin/$tool in ${PACKAGES[*]} $QEMU_DEBIAN_VERSION"
  echo "usr/bin/$tool" >>"$keep"
  "$root/$LOADER" --library-path "$root/$LIBDIR" --list "$root/usr/bin/$tool" >"$work/list" ||
    die "the loader cannot list $tool's libraries"
  ! grep -q 'not found' "$work/list" || die "$tool: $(grep 'not found' "$work/list" | paste -sd ' ')"
  for lib in $(awk '$2 == "=>" {print $3}' "$work/list"); do
    case "$lib" in
    "$root"/*) ;;
    *) die "$tool would load $lib from outside the prefix" ;;
    esac
    echo "${lib#"$root"/}" >>"$keep"
    real="$(readlink -f "$lib")"
    echo "${real#"$root"/}" >>"$keep"
  done
done
echo "$LOADER" >>"$keep"
for deb in "${debs[@]}"; do
  pkg="$(dpkg-deb -f "$deb" Package)"
  echo "$pkg $(dpkg-deb -f "$deb" Version)" >>"$work/packages"
  dpkg-deb -c "$deb" | awk '{print substr($6, 3)}' >"$work/contents"
  if grep -qxFf "$keep" "$work/contents"; then
    echo "usr/share/doc/$pkg/copyright" >>"$keep"
  fi
done
sort -u -o "$keep" "$keep"

stage="$(mktemp -d "$parent/.$(basename "$PREFIX").new.XXXXXX")"
chmod 0755 "$stage"
(cd "$root" && xargs -a "$keep" -d '\n' cp -a --parents -t "$stage")
# An empty module directory of the prefix's own: qemu would otherwise look in its built-in one,
# /usr/lib/x86_64-linux-gnu/qemu, where the system's 7.2 keeps its modules.
mkdir -p "$stage/$MODDIR" "$stage/bin"
for tool in "${TOOLS[@]}"; do
  ln -s "../$LOADER" "$stage/bin/$tool"
done
cp "$work/packages" "$stage/packages.txt"

# Swap the staged prefix in. The manifest comes last, so a prefix without it is never used.
if [ -e "$PREFIX" ]; then
  old="$(mktemp -d "$parent/.$(basename "$PREFIX").old.XXXXXX")"
  mv -T "$PREFIX" "$old/prefix"
fi
mv -T "$stage" "$PREFIX"
stage=""

for tool in "${TOOLS[@]}"; do
  run_tool "$tool" --version >"$work/version" 2>&1 || die "$tool does not run: $(head -n 3 "$work/version")"
  grep -qF "version $QEMU_VERSION" "$work/version" || die "$tool is not $QEMU_VERSION: $(head -n 1 "$work/version")"
done
run_tool qemu-img create -q -f qcow2 "$work/check.qcow2" 64M || die "qemu-img cannot create a qcow2 image"
run_tool qemu-img check -q "$work/check.qcow2" || die "qemu-img cannot check a qcow2 image"

libs="\"$PREFIX/$LIBDIR\""
cat >"$MANIFEST.tmp" <<EOF
{"version":"$QEMU_VERSION","debianVersion":"$QEMU_DEBIAN_VERSION",
 "loader":"$PREFIX/$LOADER",
 "libraryPath":[$libs],
 "moduleDir":"$PREFIX/$MODDIR",
 "tools":{"qemu-img":{"link":"$PREFIX/bin/qemu-img","binary":"$PREFIX/usr/bin/qemu-img"},
          "qemu-storage-daemon":{"link":"$PREFIX/bin/qemu-storage-daemon","binary":"$PREFIX/usr/bin/qemu-storage-daemon"}}}
EOF
mv -f "$MANIFEST.tmp" "$MANIFEST"

echo "install-qemu: qemu $QEMU_VERSION in $PREFIX ($(du -sm "$PREFIX" | cut -f1) MB)"
