#!/usr/bin/env bash
# Install Claude Code (npm @anthropic-ai/claude-code, pinned) into a cache directory for the
# end-to-end test tests/e2e/test_claude_code.py, and print the path of its `claude` binary.
# The native binary comes from the registry package's platform dependency; nothing else is fetched.
#   scripts/install_claude_code.sh            (or: make claude-code)
set -euo pipefail
VERSION="${CLAUDE_CODE_VERSION:-2.1.332}"
DIR="${VTE_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vte-proxy-tests}/claude-code-$VERSION"
BIN="$DIR/node_modules/.bin/claude"
if [ ! -x "$BIN" ] || ! "$BIN" --version >/dev/null 2>&1; then
  command -v npm >/dev/null 2>&1 || { echo "npm is not installed" >&2; exit 2; }
  mkdir -p "$DIR"
  npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@$VERSION" >&2
fi
"$BIN" --version >/dev/null
echo "$BIN"
