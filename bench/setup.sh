#!/usr/bin/env bash
# What `python bench/run.py` needs beyond the test setup: wrk (load generator), postfix's
# smtp-sink (the discarding SMTP server of the delivery ceiling) and py-spy (profiles).
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
python3 -m pip install -q -e '.[test]' py-spy
