#!/usr/bin/env bash
# What `python bench/run.py` needs beyond the test setup: wrk (load generator), postfix's
# smtp-sink (the discarding SMTP server of the delivery ceiling) and py-spy (profiles).
#
# The streamer package itself is installed (editable, from this tree, with the test extras) only
# when no `streamer` is importable: an existing install, e.g. another checkout's editable one on
# a shared machine, is left as it is. The bench scripts put this tree first on sys.path (and on
# the daemon's PYTHONPATH), so they measure this tree's code either way.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -x /usr/sbin/smtp-sink ] || missing+=(postfix)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# From / : run here, `python3 -c` would find this tree's streamer/ through the current directory.
if ! (cd / && python3 -c "import streamer") >/dev/null 2>&1; then
  python3 -m pip install -q -e '.[test]'
else
  echo "streamer is already installed ($(cd / && python3 -c 'import streamer; print(streamer.__file__)')): left as it is"
fi
command -v py-spy >/dev/null 2>&1 || python3 -m pip install -q py-spy
