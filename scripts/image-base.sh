#!/usr/bin/env bash
# Build a local stand-in for the Dockerfile's base image(s) with podman, for machines that
# cannot pull from a registry (no Docker engine, no registry egress): a debootstrapped Debian
# bookworm (minbase) with Debian's python3, venv and pip (Python 3.11, like python:3.11-slim),
# the host's locally added CA certificates (egress through a TLS-intercepting proxy), imported
# with `podman import` and tagged as every image the Dockerfile's FROM lines name. The
# Dockerfile itself stays written for the real base; build it with `--pull=never`.
#
# Cached: nothing is done when every tag already exists (`FORCE=1` rebuilds).
# Needs root, debootstrap and podman (`.ci/run` installs them). Env: DEBIAN_MIRROR (default:
# the first bookworm mirror in /etc/apt/sources.list*), SUITE (bookworm), CONTAINERS_CONF
# (default: deploy/podman/containers.conf).
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}"
SUITE="${SUITE:-bookworm}"
LOCAL_CA_DIR=/usr/local/share/ca-certificates

# The base images: every FROM image that is not an earlier stage's name.
base_images() {
  awk 'toupper($1) == "FROM" {
         for (i = 2; i <= NF; i++) if ($i !~ /^--/) { img = $i; break }
         if (!(img in stage)) print img
         if (toupper($(i + 1)) == "AS") stage[$(i + 2)] = 1
       }' Dockerfile | sort -u
}

# The Debian mirror apt uses here (deb822 .sources or one-line .list), for SUITE.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk -v suite="$SUITE" '
      /^[[:space:]]*#/ { next }
      /^deb[[:space:]]/ { sub(/\[[^]]*\][[:space:]]*/, ""); if ($3 == suite) { print $2; exit } }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri != "") { print uri; exit } }
      /^[[:space:]]*$/ { uri = "" }' "$f"
  done | head -n 1
}

mapfile -t IMAGES < <(base_images)
missing=()
for image in "${IMAGES[@]}"; do
  podman image exists "$image" || missing+=("$image")
done
if [ "${#missing[@]}" -eq 0 ] && [ -z "${FORCE:-}" ]; then
  echo "image-base: ${IMAGES[*]} present (cached); FORCE=1 rebuilds"
  exit 0
fi

MIRROR="${DEBIAN_MIRROR:-$(apt_mirror)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
ROOT="$(mktemp -d /var/tmp/vte-image-base.XXXXXX)"
trap 'rm -rf --one-file-system "$ROOT"' EXIT

echo "image-base: debootstrap --variant=minbase $SUITE from $MIRROR"
start=$SECONDS
debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv,python3-pip,python-is-python3 \
  "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || { tail -n 30 "$ROOT.log"; exit 1; }
rm -f "$ROOT.log"

# Containers reach the internet through the same TLS-intercepting proxy as the host: trust
# the CAs the host added locally, or pip cannot reach the package index.
if compgen -G "$LOCAL_CA_DIR/*.crt" >/dev/null; then
  cp "$LOCAL_CA_DIR"/*.crt "$ROOT$LOCAL_CA_DIR/"
fi
chroot "$ROOT" update-ca-certificates >/dev/null
# Like the slim images: no apt lists or caches in the layer.
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin

tag="localhost/vte-proxy-base:$SUITE"
tar --numeric-owner -C "$ROOT" -c . | podman import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'LABEL org.opencontainers.image.description="vte-proxy stand-in base: debootstrapped Debian with python3"' \
  --change 'CMD ["python3"]' \
  - "$tag" >/dev/null
for image in "${IMAGES[@]}"; do
  podman tag "$tag" "$image"
done
echo "image-base: $tag tagged as ${IMAGES[*]} in $((SECONDS - start))s"
