#!/usr/bin/env bash
# Puts an older tree for an A/B run in DIR, from a commit (a git worktree) or a tar of the tree (the device's
# copy of .git may lack recent commits: pack it here with `git archive -o .ab_old.tar <commit>` and name the
# tar in the device call's carry). The current setup.py goes with it: its libstdc++ link fix lets older
# trees build and run on the GPU machine's toolchain. Usage: bash scripts/gpu_old_tree.sh <commit or tar> DIR
set -euo pipefail
src=$1 dir=$2
rm -rf "$dir"; git worktree prune 2>/dev/null || true
if [[ -f $src ]]; then mkdir -p "$dir" && tar -xf "$src" -C "$dir"
else git worktree add -q "$dir" "$src"; fi
cp setup.py "$dir/setup.py"
