#!/usr/bin/env bash
# Opens a vbench HTML report in headless Chromium and fails on a blank page, a console or script
# error, a blocked (external) load, a missing or empty chart, text overflowing an SVG viewBox, or
# overlapping chart labels. The page checks itself when opened as index.html?selfcheck (see
# reports/src/html.rs) and writes its verdict into <pre id="selfcheck">, read here from
# --dump-dom; Also takes a full-page screenshot and
# prints its path. Installs nothing: needs Debian's `chromium` (or $CHROMIUM).
#
# usage: .ci/check-report.sh REPORT_DIR
set -euo pipefail

dir=${1:?usage: check-report.sh REPORT_DIR}
dir=$(cd "$dir" && pwd)
index=$dir/index.html
[ -s "$index" ] || { echo "check-report: $index is missing or empty" >&2; exit 1; }
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$browser" ] || { echo "check-report: chromium not found (apt-get install chromium)" >&2; exit 1; }

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --disable-default-apps --disable-extensions --no-default-browser-check
       --user-data-dir="$profile" --enable-logging=stderr --v=0)

dom=$dir/selfcheck-dom.html
log=$dir/chromium.log
shot=$dir/screenshot.png
rm -f "$dom" "$log" "$shot"

timeout 120 "$browser" "${flags[@]}" --virtual-time-budget=10000 --dump-dom "file://$index?selfcheck" >"$dom" 2>"$log" || {
    echo "check-report: chromium failed to load the page; its log:" >&2
    tail -20 "$log" >&2
    exit 1
}
timeout 120 "$browser" "${flags[@]}" --window-size=1280,4000 --screenshot="$shot" \
    "file://$index" >/dev/null 2>>"$log" || {
    echo "check-report: chromium failed to take the screenshot; its log:" >&2
    tail -20 "$log" >&2
    exit 1
}

fail=0
verdict=$(tr '\n' '\a' <"$dom" | sed -n 's/.*<pre id="selfcheck">\([^<]*\)<\/pre>.*/\1/p' | tr '\a' '\n')
if [ -z "$verdict" ]; then
    echo "check-report: the page wrote no self-check verdict (script blocked or broken?)" >&2
    fail=1
elif [[ $verdict != "SELFCHECK OK"* ]]; then
    echo "check-report: $verdict" >&2
    fail=1
else
    echo "check-report: $verdict"
fi
# Console messages are caught by the page itself (headless Chromium does not log them);
# Chromium's own log is kept beside the report for diagnosis.
size=$(stat -c %s "$shot" 2>/dev/null || echo 0)
if [ "$size" -lt 20000 ]; then
    echo "check-report: screenshot $shot is $size bytes: blank page?" >&2
    fail=1
fi
echo "check-report: screenshot: $shot ($size bytes)"
exit $fail
