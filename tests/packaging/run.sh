#!/usr/bin/env bash
# The packaging tests, one after the other (root; not part of scripts/test.sh,
# which must run without root): the .deb (and the .rpm's contents), the .rpm
# installed with rpm, the tarball through install.sh, and the CPU container image.
# It prints how long each took.
#
#   sudo tests/packaging/run.sh                 # native build: a few minutes
#   sudo FLAVOR=portable tests/packaging/run.sh # the release flavour (its first
#                                               # build compiles llama.cpp in every variant)
set -euo pipefail
cd "$(dirname "$0")"
timed() { local t0=$SECONDS; "$@"; echo "-- $* took $((SECONDS - t0)) s"; }
# What the scripts run, from Debian, installed when missing (command:package).
missing=()
for need in rpm:rpm podman:podman mmdebstrap:mmdebstrap runc:runc curl:curl python3:python3; do
  command -v "${need%%:*}" >/dev/null || missing+=("${need#*:}")
done
if [ "${#missing[@]}" -gt 0 ] && [ -z "${NO_APT:-}" ]; then
  echo "-- installing ${missing[*]} (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
timed ./deb.sh
NO_BUILD=1 timed ./rpm.sh
NO_BUILD=1 timed ./tarball.sh
if [ -z "${SKIP_IMAGE:-}" ]; then NO_BUILD=1 timed ./image.sh; fi
