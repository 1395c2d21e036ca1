#!/usr/bin/env bash
# Headless Chromium and its WebDriver from Debian's packages, for the browser tests of `mirror serve`.
# The test fixture runs this; it exits 0 when both are there (installing them as root when missing),
# and 1 with one line on stderr saying why not. It never downloads a browser build of its own.
set -euo pipefail
have() { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }
have && exit 0
# Test workers run in parallel: one installs, the others wait on this script's own lock, then find it done.
exec 9<"$0"
flock 9
have && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "chromium and chromedriver are missing and installing them needs root (apt-get install chromium chromium-driver)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "chromium and chromedriver are missing and there is no apt-get to install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium chromium-driver; } >/dev/null 2>&1; then
  echo "apt-get could not install chromium chromium-driver" >&2
  exit 1
fi
have || { echo "chromium or chromedriver still missing after apt-get" >&2; exit 1; }
