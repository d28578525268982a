#!/usr/bin/env bash
# The per-query cost guard: runs the criterion bench `lookup` on a base commit and on the
# work tree, one after the other on the same machine, and fails when any case got slower
# by more than the threshold.
#
#   scripts/bench-guard.sh                 # base = HEAD (are my uncommitted changes slower?)
#   scripts/bench-guard.sh origin/main     # base = another commit
#   THRESHOLD=5 scripts/bench-guard.sh     # percent [10]
#
# Timing on a shared machine is noisy: criterion's own noise band applies, and a case only
# fails when criterion also calls the change significant (p < 0.05) and its mean grew by
# more than THRESHOLD percent.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-HEAD}
THRESHOLD=${THRESHOLD:-10}
REPO=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
TREE=$(mktemp -d)
trap 'git -C "$REPO" worktree remove --force "$TREE" >/dev/null 2>&1 || rm -rf "$TREE"' EXIT

git worktree add --detach "$TREE" "$BASE" >/dev/null
# The base tree has no geoip/ database of its own in older commits: use ours.
[ -e "$TREE/geoip/GeoIP2-City-Test.mmdb" ] || { mkdir -p "$TREE/geoip"; cp geoip/GeoIP2-City-Test.mmdb "$TREE/geoip/"; }

echo "bench-guard: base $(git rev-parse --short "$BASE")" >&2
(cd "$TREE" && CARGO_TARGET_DIR=$TARGET cargo bench --quiet --bench lookup -- --save-baseline guard-base --noplot) >"$TARGET/bench-guard-base.log" 2>&1
echo "bench-guard: work tree $(git describe --always --dirty)" >&2
CARGO_TARGET_DIR=$TARGET cargo bench --quiet --bench lookup -- --baseline guard-base --noplot >"$TARGET/bench-guard.log" 2>&1

python3 - "$TARGET/criterion" "$THRESHOLD" <<'EOF'
import json, os, sys
root, limit = sys.argv[1], float(sys.argv[2])
bad, rows = [], []
for group in sorted(os.listdir(root)):
    gdir = os.path.join(root, group)
    for case in sorted(os.listdir(gdir)) if os.path.isdir(gdir) else []:
        change = os.path.join(gdir, case, "change", "estimates.json")
        new = os.path.join(gdir, case, "new", "estimates.json")
        if not (os.path.exists(change) and os.path.exists(new)):
            continue
        c = json.load(open(change))["mean"]
        pct = 100 * c["point_estimate"]
        lo = 100 * c["confidence_interval"]["lower_bound"]
        ns = json.load(open(new))["mean"]["point_estimate"]
        verdict = "ok"
        if pct > limit and lo > 0:
            verdict = "SLOWER"
            bad.append("%s/%s" % (group, case))
        rows.append("  %-34s %8.1f ns  %+6.1f%%  (95%% CI from %+.1f%%)  %s" % (group + "/" + case, ns, pct, lo, verdict))
print("\n".join(rows))
if not rows:
    sys.exit("bench-guard: no comparison found under " + root)
if bad:
    sys.exit("bench-guard: slower by more than %g%%: %s" % (limit, ", ".join(bad)))
print("bench-guard: no case slower by more than %g%%" % limit)
EOF
