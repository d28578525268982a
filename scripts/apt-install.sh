#!/usr/bin/env bash
# scripts/apt-install.sh PACKAGE... — install Debian packages (each named once, however
# often given; nothing when none), for scripts/test.sh and the bench scripts. A package's
# daemon (unbound, knot) is not started: /usr/sbin/policy-rc.d answers 101 ("do not start")
# to its maintainer scripts meanwhile (made here only when there is none, and removed after
# only then). Runs apt-get through sudo when not root.
set -euo pipefail
[ $# -gt 0 ] || exit 0
mapfile -t pkgs < <(printf '%s\n' "$@" | sort -u)
echo "installing ${pkgs[*]}" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  made_policy=1
fi
status=0
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null || status=$?
[ "$made_policy" = 0 ] || $SUDO rm -f /usr/sbin/policy-rc.d
exit "$status"
