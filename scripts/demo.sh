#!/usr/bin/env bash
# The two-command start, part one: installs what xvm needs, builds it, starts
# the daemon and boots a demo guest, then shows its console.
#
#   scripts/demo.sh              # state under /var/lib/xvm (root) or ~/.xvm
#   XVM_HOME=/tmp/x scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent

xvm() { node bin/xvm.js "$@"; }

xvm daemon start
xvm image fetch >/dev/null
if xvm info demo >/dev/null 2>&1; then
  state=$(xvm info demo --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).state))')
  if [[ "$state" != "running" ]]; then
    [[ "$state" == "paused" ]] && xvm unpause demo || xvm start demo --wait-ready
  fi
else
  xvm create --name demo --memory 256 --wait-ready
fi

echo
echo "== the demo guest's console (commands sent through 'xvm console demo') =="
printf 'uname -a\necho "6*7 = $((6*7))"\ncat /proc/meminfo | head -2\n' | xvm console demo --linger 1500
echo
echo "== xvm list =="
xvm list
cat <<'TXT'

Next:  node bin/xvm.js console demo      (interactive; Ctrl-] detaches)
       node bin/xvm.js shutdown demo --wait
       node bin/xvm.js --help
TXT
