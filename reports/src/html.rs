//! The self-contained HTML page: inline CSS, inline SVG charts, no network and no external
//! assets (a Content-Security-Policy forbids any load, so a stray one shows as a console error).
//!
//! Opened as `index.html?selfcheck`, the page checks itself after layout and writes the verdict
//! into `<pre id="selfcheck">` and the document title: `.ci/check-report.sh` reads it through
//! headless Chromium. It fails on a script or console error, a blocked load, a (nearly) blank
//! page, a missing or empty chart, text outside its SVG's box, and overlapping labels.

use crate::charts::Chart;
use crate::compare::{ChangeVerdict, Comparison, NOISE};
use crate::tables::{self, Table};
use crate::view::View;
use std::fmt::Write;
use vbench_results::{Document, RunStatus};

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = r#"
body { font-family: sans-serif; color: #222; max-width: 1000px; margin: 0 auto; padding: 16px 24px 48px; line-height: 1.45; }
h1 { margin-bottom: 4px; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 36px; }
.status { padding: 8px 12px; border-radius: 4px; background: #e8f4e8; border: 1px solid #9c9; }
.status.bad { background: #fde8e8; border-color: #d88; font-weight: bold; }
nav a { margin-right: 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.bad td { background: #fde8e8; }
figure.chart { margin: 12px 0 20px; }
figure.chart svg { display: block; max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 14px; color: #444; margin-top: 4px; }
.note { color: #555; font-style: italic; }
pre { background: #f6f6f6; padding: 8px 12px; overflow-x: auto; }
.wrap { overflow-x: auto; }
tr.details td { font-size: 12px; color: #444; border-top: none; word-break: break-word; }
table.pg td { white-space: nowrap; }
table.pg tr.details td { white-space: normal; }
.howto { font-size: 14px; color: #333; margin-top: 4px; }
pre.reproduce { border: 1px solid #9ab; background: #eef4f8; white-space: pre-wrap; word-break: break-word; }
@page { size: A4; margin: 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; color: #000; }
  nav, #selfcheck { display: none; }
  section { break-before: page; }
  section:first-of-type { break-before: auto; }
  h2 { break-after: avoid; }
  figure.chart, tr, pre { break-inside: avoid; }
  figure.chart svg { border: none; width: auto; height: auto; max-width: 100%; max-height: 240mm; margin: 0 auto; }
  .wrap { overflow: visible; }
  table { font-size: 8pt; }
  th, td { padding: 1px 4px; }
  td { word-break: break-word; }
  table.pg td { white-space: normal; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"#;

/// Runs when the page is opened with `?selfcheck`; see the module documentation.
const SELFCHECK: &str = r#"
(function () {
  var errors = [];
  window.addEventListener('error', function (e) { errors.push('script error: ' + e.message); });
  document.addEventListener('securitypolicyviolation', function (e) {
    errors.push('blocked load of ' + e.blockedURI + ' (' + e.violatedDirective + ')');
  });
  var origError = console.error;
  console.error = function () {
    errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    origError.apply(console, arguments);
  };
  // After load, and a moment more so that late errors and blocked loads are reported too.
  window.addEventListener('load', function () { setTimeout(selfcheck, 200); });
  function selfcheck() {
    if (location.search.indexOf('selfcheck') < 0) return;
    var problems = errors.slice();
    var text = (document.body.innerText || '').trim();
    if (text.length < 200) problems.push('blank page: ' + text.length + ' characters of text');
    var want = parseInt(document.body.getAttribute('data-charts'), 10);
    var figs = document.querySelectorAll('figure.chart');
    if (figs.length !== want) problems.push('expected ' + want + ' charts, found ' + figs.length);
    var texts = 0;
    figs.forEach(function (f) {
      var svg = f.querySelector('svg');
      if (!svg) { problems.push(f.id + ': no svg'); return; }
      var box = svg.getBoundingClientRect();
      if (box.width < 100 || box.height < 50) problems.push(f.id + ': drawn only ' + box.width + 'x' + box.height);
      if (svg.querySelectorAll('rect').length < 3) problems.push(f.id + ': no marks drawn');
      var labels = [];
      svg.querySelectorAll('text').forEach(function (t) {
        var s = t.textContent.trim();
        if (!s) return;
        texts++;
        var r = t.getBoundingClientRect();
        if (r.width === 0) problems.push(f.id + ': text "' + s + '" has no width');
        if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5)
          problems.push(f.id + ': text "' + s + '" overflows the SVG viewBox');
        labels.push([r, s]);
      });
      if (labels.length === 0) problems.push(f.id + ': no text');
      for (var i = 0; i < labels.length; i++) for (var j = i + 1; j < labels.length; j++) {
        var a = labels[i][0], b = labels[j][0];
        var w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        var h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (w > 1 && h > 3) problems.push(f.id + ': labels "' + labels[i][1] + '" and "' + labels[j][1] + '" overlap');
      }
    });
    var out = document.createElement('pre');
    out.id = 'selfcheck';
    out.textContent = problems.length
      ? 'SELFCHECK FAIL\n' + problems.join('\n')
      : 'SELFCHECK OK: ' + figs.length + ' charts, ' + texts + ' chart labels, ' + text.length + ' characters of text';
    document.body.appendChild(out);
    document.title = problems.length ? 'SELFCHECK FAIL' : 'SELFCHECK OK';
  }
})();
"#;

fn is_num(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_digit())
}

fn table(o: &mut String, t: &Table) {
    o.push_str("<div class=\"wrap\"><table>\n<tr>");
    for h in &t.head {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    o.push_str("</tr>\n");
    for r in &t.rows {
        let bad = r.iter().any(|c| c.contains("WRONG RESULT"));
        o.push_str(if bad { "<tr class=\"bad\">" } else { "<tr>" });
        for c in r {
            if is_num(c) {
                let _ = write!(o, "<td class=\"num\">{}</td>", esc(c));
            } else {
                let _ = write!(o, "<td>{}</td>", esc(c));
            }
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</table></div>\n");
}

fn figure(o: &mut String, c: &Chart) {
    let svg = c.svg.replacen(
        "<svg ",
        &format!("<svg role=\"img\" aria-label=\"{}\" ", esc(&c.title)),
        1,
    );
    let _ = write!(
        o,
        "<figure class=\"chart\" id=\"chart-{name}\">\n{svg}\n<figcaption class=\"howto\"><b>How to read this:</b> {cap} <a href=\"{name}.svg\">({name}.svg)</a></figcaption>\n</figure>\n",
        name = esc(&c.name),
        cap = esc(&c.caption),
    );
}

fn head(o: &mut String, title: &str, charts: usize) {
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n<script>{SELFCHECK}</script>\n</head>\n<body data-charts=\"{charts}\">\n",
        esc(title)
    );
}

fn tail(o: &mut String) {
    o.push_str("</body>\n</html>\n");
}

fn section(o: &mut String, id: &str, title: &str) {
    let _ = write!(o, "<section id=\"{id}\">\n<h2>{}</h2>\n", esc(title));
}

fn para(o: &mut String, class: &str, text: &str) {
    if class.is_empty() {
        let _ = writeln!(o, "<p>{}</p>", esc(text));
    } else {
        let _ = writeln!(o, "<p class=\"{class}\">{}</p>", esc(text));
    }
}

/// The page of one run, with `charts` from [`crate::charts::for_document`].
pub fn render(doc: &Document, charts: &[Chart]) -> String {
    render_with_banner(doc, charts, None)
}

/// [`render`] with a one-line `banner` above the status line (what the caller knows of the
/// run beyond its file, e.g. that its vbench was killed).
///
/// A document with benchmarks shows their sections; one with an isolation matrix shows the
/// isolation grid and the Popek-Goldberg classification; one with both opens with the
/// trade-off between them. A section without data is left out, never shown empty.
pub fn render_with_banner(doc: &Document, charts: &[Chart], banner: Option<&str>) -> String {
    let view = View::new(doc);
    let bench = doc.has_benchmarks();
    let iso = doc.isolation.as_ref();
    let pg = iso.and_then(crate::popek::classify);
    let points = crate::tradeoff::points(&view);
    let chart = |name: &str| charts.iter().find(|c| c.name == name);
    let mut o = String::new();
    let what = match (bench, iso.is_some()) {
        (true, true) => "benchmarks and isolation",
        (false, true) => "isolation",
        _ => "benchmarks",
    };
    head(
        &mut o,
        &format!(
            "vbench report ({what}): {} ({})",
            doc.environment.hostname,
            tables::utc(doc.started_unix_ms)
        ),
        charts.len(),
    );
    let _ = writeln!(o, "<h1>vbench report: {what}</h1>");
    if let Some(b) = banner {
        para(&mut o, "status bad banner", b);
    }
    if bench || iso.is_none() {
        let bad = doc.status != RunStatus::Complete || !doc.failures.is_empty();
        para(
            &mut o,
            if bad { "status bad" } else { "status" },
            &view.status_line(),
        );
    }
    if let Some(m) = iso {
        let bad = (m.failed_cells() > 0) || (!bench && doc.status != RunStatus::Complete);
        let mut line = tables::isolation_status(m);
        if !bench && doc.status != RunStatus::Complete {
            line = format!("INTERRUPTED: the matrix holds the probes completed. {line}");
        }
        para(&mut o, if bad { "status bad" } else { "status" }, &line);
    }

    let tradeoff = bench.then(|| crate::tradeoff::table(&points)).flatten();
    let mut toc = Vec::new();
    if tradeoff.is_some() {
        toc.push(("tradeoff", "Isolation and performance"));
    }
    if bench {
        toc.push(("backends", "Backends"));
        if tables::overhead(&view).is_some() {
            toc.push(("overhead", "Overhead"));
        }
        if tables::levels(&view).is_some() {
            toc.push(("levels", "Levels"));
        }
        toc.push(("costs", "Cost per operation"));
        if tables::startup(&view).is_some() {
            toc.push(("startup", "Start-up"));
        }
        toc.push(("noise", "Noise"));
        if tables::peers(&view).is_some() {
            toc.push(("peers", "Peers"));
        }
        if tables::counters(&view).is_some() {
            toc.push(("counters", "Counters"));
        }
    }
    if tables::isolation(doc).is_some() {
        toc.push(("isolation", "Isolation"));
    }
    if pg.is_some() {
        toc.push(("popek-goldberg", "Popek-Goldberg"));
    }
    if tables::edge_probes(doc).is_some() {
        toc.push(("edges", "Translation and machine edges"));
    }
    if bench {
        toc.push(("failures", "Failures"));
    }
    toc.extend([("environment", "Environment"), ("reproduce", "Reproduce")]);
    o.push_str("<nav>");
    for (id, t) in &toc {
        let _ = write!(o, "<a href=\"#{id}\">{t}</a>");
    }
    o.push_str("</nav>\n");

    if let Some(t) = &tradeoff {
        section(&mut o, "tradeoff", "Isolation and performance");
        para(&mut o, "", "The lecture's two objectives side by side: what each level of virtualization costs and what it contains, both measured in this document.");
        if let Some(c) = chart("tradeoff") {
            figure(&mut o, c);
        }
        table(&mut o, t);
        o.push_str("</section>\n");
    }

    if bench {
        benchmark_sections(&mut o, &view, &chart);
    }

    if let Some(m) = iso {
        if tables::isolation(doc).is_some() {
            section(&mut o, "isolation", "Isolation");
            para(&mut o, "", "vbench isolate: each probe tries one escape or limit breach. Native is the control: a probe that does not escape there is BROKEN, so every \u{201c}contained\u{201d} means something; ESCAPED! is an escape the backend must contain.");
            if let Some(c) = chart("isolation") {
                figure(&mut o, c);
            }
            if let Some(n) = tables::isolation_notes(doc) {
                para(&mut o, "", "Why: every cell with a reason (an n/a, a permission, a limit's accuracy, a broken probe).");
                table(&mut o, &n);
            }
            o.push_str("</section>\n");
        }
        if let Some(rows) = &pg {
            section(
                &mut o,
                "popek-goldberg",
                "Popek-Goldberg: what each level made of the instructions",
            );
            para(&mut o, "", "x86 has instructions that are sensitive (they read or change privileged state) but not privileged (they do not trap at CPL3): run in a guest, they act on the real machine and no trap-and-emulate VMM sees them. Binary translation, paravirtualization and hardware assistance are the answers. Each probe ran the instruction at CPL3 on every level; what it observed decides the class.");
            if let Some(c) = chart("popek-goldberg") {
                figure(&mut o, c);
            }
            for p in crate::popek::paragraph(m, rows) {
                para(&mut o, "", &p);
            }
            pg_table(&mut o, m, rows);
            o.push_str("</section>\n");
        }
        if let Some(t) = tables::edge_probes(doc) {
            section(&mut o, "edges", "Translation and machine-edge probes");
            para(&mut o, "", "Code a translator or a VM must handle specially (self-modifying code, a system call hidden in data, 32-bit code), and the machine's edges (addresses outside RAM, bad system-call pointers, MSRs no CPU has): what each level observed, where it differs from native.");
            table(&mut o, &t);
            o.push_str("</section>\n");
        }
    }

    if bench {
        section(&mut o, "failures", "Failures");
        if doc.failures.is_empty() {
            para(
                &mut o,
                "",
                "None: every run exited cleanly and every checksum agreed with native's.",
            );
        } else {
            para(&mut o, "", "A wrong result (checksum differing from native's) means the backend computed something else: its timings are meaningless.");
            table(&mut o, &tables::failures(doc));
        }
        o.push_str("</section>\n");
    }

    section(&mut o, "environment", "Environment");
    table(&mut o, &tables::environment(doc));
    o.push_str("</section>\n");

    section(&mut o, "reproduce", "Reproduce");
    para(
        &mut o,
        "",
        "The same plan on another machine (numbers will differ; checksums and verdicts should not):",
    );
    let _ = writeln!(
        o,
        "<pre class=\"reproduce\"><code>{}</code></pre>",
        esc(&reproduce(doc, &view))
    );
    o.push_str("</section>\n");
    tail(&mut o);
    o
}

/// The command that makes the same document: `vbench run ... [--isolate]`, or `vbench
/// isolate ...` for a document with no benchmarks.
pub(crate) fn reproduce(doc: &Document, view: &View) -> String {
    match (doc.has_benchmarks(), &doc.isolation) {
        (false, Some(m)) => tables::isolate_command(m),
        (true, Some(_)) => format!("{} --isolate", view.reproduce()),
        _ => view.reproduce(),
    }
}

/// The classification with a details row of raw observations under each instruction.
fn pg_table(o: &mut String, m: &vbench_results::IsolationMatrix, rows: &[crate::popek::PgRow]) {
    let t = tables::pg_classes(m, rows);
    let key: Vec<String> = crate::popek::PgClass::ALL
        .iter()
        .map(|k| format!("{} = {}", k.short(), k.label()))
        .collect();
    para(
        o,
        "",
        &format!(
            "Every class and the raw observations behind it ({}).",
            key.join("; ")
        ),
    );
    o.push_str("<div class=\"wrap\"><table class=\"pg\">\n<tr>");
    for h in &t.head {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    o.push_str("</tr>\n");
    for (r, cells) in rows.iter().zip(&t.rows) {
        o.push_str("<tr>");
        let _ = write!(
            o,
            "<td><b>{}</b></td><td>{}</td>",
            esc(&cells[0]),
            esc(&cells[1])
        );
        for c in &r.cells {
            match c {
                crate::popek::PgCell::Class(k) => {
                    let _ = write!(
                        o,
                        "<td style=\"background:{}\" title=\"{}\">{}</td>",
                        k.colour(),
                        esc(k.label()),
                        esc(k.short())
                    );
                }
                crate::popek::PgCell::None(s) => {
                    let _ = write!(o, "<td>{}</td>", esc(s));
                }
            }
        }
        o.push_str("</tr>\n");
        let obs: Vec<String> = r
            .observations
            .iter()
            .map(|(cols, d)| format!("{}: {}", cols.join(", "), d))
            .collect();
        let _ = writeln!(
            o,
            "<tr class=\"details\"><td></td><td colspan=\"{}\">observed: {}</td></tr>",
            t.head.len() - 1,
            esc(&obs.join(" | "))
        );
    }
    o.push_str("</table></div>\n");
}

/// The sections of the benchmarks: backends, overhead, levels, costs, start-up, noise, peers
/// and counters.
fn benchmark_sections<'c>(o: &mut String, view: &View, chart: &dyn Fn(&str) -> Option<&'c Chart>) {
    section(o, "backends", "Backends");
    para(o, "", "Every backend asked for; one that could not run on this machine is listed with the reason and appears in no chart.");
    table(o, &tables::backends(view));
    o.push_str("</section>\n");

    section(o, "overhead", "Overhead against native");
    if let Some(t) = tables::overhead(view) {
        if let Some(c) = chart("overhead") {
            figure(o, c);
        }
        table(o, &t);
    } else {
        para(
            o,
            "note",
            "No backend other than the native control ran, so there is no overhead to show.",
        );
    }
    o.push_str("</section>\n");

    if let Some(t) = tables::levels(view) {
        section(o, "levels", "Levels of virtualization");
        if let Some(c) = chart("levels") {
            figure(o, c);
        }
        for p in tables::levels_text(view) {
            para(o, "", &p);
        }
        table(o, &t);
        o.push_str("</section>\n");
    }

    section(o, "costs", "Cost per operation");
    if let Some(c) = chart("cost") {
        figure(o, c);
    }
    para(o, "", "An lmbench-style table: median time of one operation of each workload's measured loop on every backend (null system call, read, write, open/close, page touch, memory bandwidth, pointer-chase latency, CPU kernels); memory passes also show bytes per pass over time.");
    table(o, &tables::costs(view));
    o.push_str("</section>\n");

    if let Some(t) = tables::startup(view) {
        section(o, "startup", "Start-up latency");
        if let Some(c) = chart("startup") {
            figure(o, c);
        }
        para(o, "", "Backends that measure their own start-up (clone to exec, VM creation to first instruction) report it directly; for every backend the wall time of a run minus its measured loop, on the workload with the least of it, bounds launch plus exit from above.");
        table(o, &t);
        o.push_str("</section>\n");
    }

    section(o, "noise", "Noise");
    if let Some(c) = chart("distribution") {
        figure(o, c);
    }
    let warnings = view.noise_warnings();
    if warnings.is_empty() {
        para(
            o,
            "",
            "No cell had outliers or a median absolute deviation above 5% of its median.",
        );
    } else {
        para(o, "", "Warnings: these numbers are noisy; more rounds, pinning (--pin) or a quieter machine will tighten them.");
        o.push_str("<ul>\n");
        for w in &warnings {
            let _ = writeln!(o, "<li>{}</li>", esc(w));
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</section>\n");

    if let Some(t) = tables::peers(view) {
        section(o, "peers", "Peers");
        para(o, "", tables::PEERS_CAPTION);
        table(o, &t);
        o.push_str("</section>\n");
    }

    if let Some(t) = tables::counters(view) {
        section(o, "counters", "Backend counters");
        if let Some(c) = chart("counters") {
            figure(o, c);
        }
        para(o, "", "Median per run, per cell.");
        table(o, &t);
        o.push_str("</section>\n");
    }
}

/// The page of a comparison, with `charts` from [`crate::charts::for_comparison`].
pub fn render_compare(cmp: &Comparison, charts: &[Chart]) -> String {
    let mut o = String::new();
    head(&mut o, "vbench comparison", charts.len());
    o.push_str("<h1>vbench comparison</h1>\n");
    let slower = cmp
        .rows
        .iter()
        .filter(|c| c.verdict == ChangeVerdict::Slower)
        .count();
    let faster = cmp
        .rows
        .iter()
        .filter(|c| c.verdict == ChangeVerdict::Faster)
        .count();
    let bad = slower > 0
        || cmp.base.status != RunStatus::Complete
        || cmp.new.status != RunStatus::Complete;
    para(
        &mut o,
        if bad { "status bad" } else { "status" },
        &format!(
            "{} cells compared: {slower} slower, {faster} faster, the rest within noise (a change counts only when its whole 95% interval lies more than {:.0}% from no change).",
            cmp.rows.len(),
            NOISE * 100.0
        ),
    );
    for (label, d) in [("Base", cmp.base), ("New", cmp.new)] {
        para(
            &mut o,
            "",
            &format!(
                "{label}: started {}. {}",
                tables::utc(d.started_unix_ms),
                View::new(d).status_line()
            ),
        );
    }
    section(&mut o, "change", "Change per cell");
    for c in charts {
        figure(&mut o, c);
    }
    table(&mut o, &tables::changes(cmp));
    if !cmp.unmatched.is_empty() {
        para(&mut o, "", "Not compared:");
        o.push_str("<ul>\n");
        for u in &cmp.unmatched {
            let _ = writeln!(o, "<li>{}</li>", esc(u));
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</section>\n");
    section(&mut o, "environment", "Environments");
    if cmp.base.environment != cmp.new.environment {
        para(&mut o, "status bad", "The two runs were made on different machines or conditions: compare the environments before trusting a change.");
    }
    o.push_str("<h3>Base</h3>\n");
    table(&mut o, &tables::environment(cmp.base));
    o.push_str("<h3>New</h3>\n");
    table(&mut o, &tables::environment(cmp.new));
    o.push_str("</section>\n");
    tail(&mut o);
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn the_page_holds_every_section_and_nothing_external() {
        let doc = fixture::document();
        let charts = crate::charts::for_document(&doc).unwrap();
        let page = render(&doc, &charts);
        for needle in [
            "INTERRUPTED",
            "CORRECTNESS FAILURE",
            "unavailable: not built yet (issue #5)",
            "id=\"chart-overhead\"",
            "id=\"chart-counters\"",
            "vm_exits.hypercall",
            "WRONG RESULT",
            "killed by signal 11",
            "vbench run --backend container --backend bt --backend kvm",
        ] {
            assert!(page.contains(needle), "missing {needle}");
        }
        assert!(page.contains(&format!("data-charts=\"{}\"", charts.len())));
        assert_eq!(
            page.matches("<figure class=\"chart\"").count(),
            charts.len()
        );
        // no network: nothing is loaded from elsewhere
        for bad in ["src=\"http", "href=\"http", "url(", "@import", "<link"] {
            assert!(!page.contains(bad), "page loads something: {bad}");
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
