#!/usr/bin/env bash
# Opens a vbench HTML report in headless Chromium and fails on a blank page, a console or script
# error, a blocked (external) load, a missing or empty chart, text overflowing an SVG viewBox, or
# overlapping chart labels. The page checks itself when opened as index.html?selfcheck (see
# reports/src/html.rs) and writes its verdict into <pre id="selfcheck">, read here from
# --dump-dom; Also takes a full-page screenshot and prints its path. Then prints the page to PDF
# (A4, the page's print styles) and fails on a page count below the number of sections (each
# starts a page) or above 200, a chart whose caption or title is missing from the PDF, a chart
# cut across two pages, and a blank page. Installs nothing: needs Debian's `chromium` (or
# $CHROMIUM) and poppler-utils (pdfinfo, pdftotext, pdftoppm).
#
# usage: .ci/check-report.sh REPORT_DIR
set -euo pipefail

dir=${1:?usage: check-report.sh REPORT_DIR}
dir=$(cd "$dir" && pwd)
index=$dir/index.html
[ -s "$index" ] || { echo "check-report: $index is missing or empty" >&2; exit 1; }
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$browser" ] || { echo "check-report: chromium not found (apt-get install chromium)" >&2; exit 1; }
for tool in pdfinfo pdftotext pdftoppm; do
    command -v $tool >/dev/null || { echo "check-report: $tool not found (apt-get install poppler-utils)" >&2; exit 1; }
done

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --disable-default-apps --disable-extensions --no-default-browser-check
       --user-data-dir="$profile" --enable-logging=stderr --v=0)

dom=$dir/selfcheck-dom.html
log=$dir/chromium.log
shot=$dir/screenshot.png
pdf=$dir/print.pdf
rm -f "$dom" "$log" "$shot" "$pdf"

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

timeout 120 "$browser" "${flags[@]}" --no-pdf-header-footer --print-to-pdf="$pdf" \
    "file://$index" >/dev/null 2>>"$log" || {
    echo "check-report: chromium failed to print the page to PDF; its log:" >&2
    tail -20 "$log" >&2
    exit 1
}
pages=$(pdfinfo "$pdf" | awk '/^Pages:/ {print $2}')
sections=$(grep -c '^<section id=' "$index" || true)
if [ -z "$pages" ] || [ "$pages" -lt "$sections" ] || [ "$pages" -gt 200 ]; then
    echo "check-report: $pdf has ${pages:-no} pages for $sections sections (each starts a page; at most 200)" >&2
    fail=1
fi
# the text of every page, and on which page each chart's caption and title are
pagetext=$(mktemp -d)
trap 'rm -rf "$profile" "$pagetext"' EXIT
for ((p = 1; p <= ${pages:-0}; p++)); do
    pdftotext -f $p -l $p -layout "$pdf" "$pagetext/$p.txt"
done
page_of() { grep -lF -- "$1" "$pagetext"/*.txt 2>/dev/null | head -1 | xargs -r basename | sed 's/\.txt$//'; }
charts_in_pdf=0
while IFS=$'\t' read -r name title; do
    [ -n "$name" ] || continue
    cap=$(page_of "($name.svg)")
    top=$(page_of "$title")
    if [ -z "$cap" ]; then
        echo "check-report: the printed PDF lacks the chart $name (its caption)" >&2
        fail=1
    elif [ -z "$top" ]; then
        echo "check-report: the printed PDF lacks the title of the chart $name (\"$title\")" >&2
        fail=1
    elif [ "$cap" != "$top" ]; then
        echo "check-report: the chart $name is cut across pages $top and $cap of the PDF" >&2
        fail=1
    else
        charts_in_pdf=$((charts_in_pdf + 1))
    fi
done < <(sed -n 's/.*<figure class="chart" id="chart-\([^"]*\)">.*/\1/p' "$index" | while read -r n; do
    # the title: the aria-label the page gives the chart's svg (the figure's next line)
    t=$(grep -A1 -F "<figure class=\"chart\" id=\"chart-$n\">" "$index" | sed -n 's/.*aria-label="\([^"]*\)".*/\1/p' | head -1 |
        sed 's/&amp;/\&/g; s/&lt;/</g; s/&gt;/>/g; s/&quot;/"/g; s/&#39;/'"'"'/g')
    printf '%s\t%s\n' "$n" "${t:-(no title)}"
done)
# a blank page (under 0.2% of its pixels darker than light grey) means a broken break
pdftoppm -r 20 -gray "$pdf" "$pagetext/page"
for pgm in "$pagetext"/page*.pgm; do
    [ -e "$pgm" ] || continue
    header=$(head -3 "$pgm" | wc -c) # P5, width height, maxval
    dark=$(tail -c +$((header + 1)) "$pgm" | od -An -tu1 -v | tr -s ' ' '\n' | awk '$1 != "" && $1 < 200 {n++} END {print n + 0}')
    total=$(($(stat -c %s "$pgm") - header))
    if [ $((dark * 500)) -lt "$total" ]; then
        echo "check-report: page $(basename "$pgm" .pgm | sed 's/page-*//') of $pdf is blank" >&2
        fail=1
    fi
done
echo "check-report: printed: $pdf ($pages pages, $sections sections, $charts_in_pdf charts whole on one page)"
exit $fail
