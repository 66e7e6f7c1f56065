//! The report as one self-contained HTML page: inline CSS, inline SVG
//! charts drawn here, a few lines of inline script (a filter box), no
//! request of any kind at view time. First what cannot be restored and
//! why, then the counts, the charts (bytes and time per snapshot), every
//! item, and the items that never reported.

use std::io::Write;

use crate::report::{rank, xml as esc, Gathered, ReportOptions, Row};
use crate::result::Outcome;

/// Charts draw at most this many bars; more items are binned.
const BARS: usize = 300;

const STYLE: &str = "
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d1f23;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5b6270}.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.tile{border-radius:6px;padding:10px 14px;min-width:110px;color:#fff}
.tile b{display:block;font-size:26px}
.passed{background:#2e7d32}.blocked{background:#b71c1c}.mismatch{background:#d84315}
.error{background:#6a1b9a}.retryable{background:#f9a825;color:#222}.never-reported{background:#546e7a}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e5e8;vertical-align:top}
th{background:#f4f5f7;position:sticky;top:0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:4px;padding:0 6px;color:#fff;font-size:12px;white-space:nowrap}
.why{font-family:ui-monospace,Menlo,monospace;font-size:12px;color:#333}
.ok-all{background:#e8f5e9;border:1px solid #2e7d32;padding:10px;border-radius:6px}
svg{background:#fafbfc;border:1px solid #e3e5e8;border-radius:4px}
input{font:inherit;padding:4px 8px;width:320px}
";

const SCRIPT: &str = "
window.flrErrors=[];window.addEventListener('error',function(e){window.flrErrors.push(String(e.message));document.body.setAttribute('data-errors',String(window.flrErrors.length));});
document.addEventListener('DOMContentLoaded',function(){
var f=document.getElementById('filter');var rows=document.querySelectorAll('#items tbody tr');
f.addEventListener('input',function(){var q=f.value.toLowerCase();for(var i=0;i<rows.length;i++){rows[i].style.display=rows[i].textContent.toLowerCase().indexOf(q)<0?'none':'';}});
document.body.setAttribute('data-rendered','ok');});
";

fn badge(o: Outcome) -> String {
    format!("<span class=\"badge {o}\">{o}</span>")
}

/// A row's reasons, one per line.
fn reasons(r: &Row) -> String {
    r.reasons
        .iter()
        .map(|s| esc(s))
        .collect::<Vec<_>>()
        .join("<br>")
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / 1048576.0)
}

/// A bar chart of `value(row)` per row (binned above [`BARS`] rows),
/// bars coloured by outcome.
fn chart(
    out: &mut dyn Write,
    rows: &[Row],
    title: &str,
    unit: &str,
    value: impl Fn(&Row) -> f64,
) -> std::io::Result<()> {
    let (w, h, pad) = (960.0f64, 220.0f64, 40.0f64);
    let per = rows.len().div_ceil(BARS).max(1);
    let bins: Vec<(f64, Outcome, String)> = rows
        .chunks(per)
        .map(|c| {
            let v: f64 = c.iter().map(&value).sum();
            let worst = c
                .iter()
                .map(|r| r.outcome)
                .min_by_key(|o| rank(*o))
                .unwrap_or(Outcome::Passed);
            let label = if c.len() == 1 {
                c[0].label()
            } else {
                format!("items {}–{}", c[0].id, c[c.len() - 1].id)
            };
            (v, worst, label)
        })
        .collect();
    let max = bins.iter().map(|b| b.0).fold(0.0f64, f64::max).max(1e-9);
    writeln!(
        out,
        "<h3>{}</h3><svg role=\"img\" aria-label=\"{}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">",
        esc(title),
        esc(title)
    )?;
    let bw = (w - pad - 10.0) / bins.len().max(1) as f64;
    for (i, (v, o, label)) in bins.iter().enumerate() {
        let bh = (v / max) * (h - pad - 10.0);
        let x = pad + i as f64 * bw;
        let y = h - pad - bh;
        writeln!(
            out,
            "<rect class=\"{o}\" x=\"{x:.2}\" y=\"{y:.2}\" width=\"{:.2}\" height=\"{bh:.2}\" style=\"fill:{}\"><title>{}: {v:.2} {unit}</title></rect>",
            (bw * 0.85).max(0.5),
            colour(*o),
            esc(label)
        )?;
    }
    writeln!(
        out,
        "<line x1=\"{pad}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#888\"/><text x=\"4\" y=\"14\" font-size=\"11\">{max:.1} {unit}</text><text x=\"4\" y=\"{2}\" font-size=\"11\">0</text><text x=\"{pad}\" y=\"{3}\" font-size=\"11\">{4} item(s){5}</text></svg>",
        h - pad,
        w - 10.0,
        h - pad,
        h - 14.0,
        rows.len(),
        if per > 1 {
            format!(", {per} per bar")
        } else {
            String::new()
        }
    )
}

fn colour(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "#2e7d32",
        Outcome::Blocked => "#b71c1c",
        Outcome::Mismatch => "#d84315",
        Outcome::Error => "#6a1b9a",
        Outcome::Retryable => "#f9a825",
        Outcome::NeverReported => "#546e7a",
    }
}

pub(crate) fn write(
    g: &Gathered,
    opts: &ReportOptions,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let counts = g.counts();
    writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>",
        esc(&opts.title)
    )?;
    writeln!(
        out,
        "<h1>{}</h1><div class=\"meta\">{} item(s) in the spec, {} reported; results {}; generated {}</div>",
        esc(&opts.title),
        g.expected.map_or_else(|| "?".to_string(), |n| n.to_string()),
        g.rows
            .iter()
            .filter(|r| r.outcome != Outcome::NeverReported)
            .count(),
        esc(&g.location),
        esc(&opts.generated)
    )?;
    writeln!(out, "<div class=\"tiles\">")?;
    for o in Outcome::ALL {
        writeln!(
            out,
            "<div class=\"tile {o}\"><b>{}</b>{o}</div>",
            counts.get(&o).copied().unwrap_or(0)
        )?;
    }
    writeln!(out, "</div>")?;

    // What cannot be restored, and why: first.
    let vms = g.vms();
    let bad: Vec<_> = vms
        .iter()
        .filter(|v| v.outcome != Outcome::Passed)
        .collect();
    writeln!(
        out,
        "<h2>VMs that cannot be restored, or not yet known</h2>"
    )?;
    if bad.is_empty() {
        writeln!(
            out,
            "<div class=\"ok-all\">Every VM passed: each snapshot restores.</div>"
        )?;
    } else {
        writeln!(
            out,
            "<table id=\"vms\"><thead><tr><th>VM</th><th>outcome</th><th>disk</th><th>why</th></tr></thead><tbody>"
        )?;
        for v in bad {
            for r in g.rows.iter().filter(|r| {
                r.vm.as_deref().unwrap_or(&r.id) == v.vm && r.outcome != Outcome::Passed
            }) {
                writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"why\">{}</td></tr>",
                    esc(&v.vm),
                    badge(r.outcome),
                    esc(r.disk.as_deref().unwrap_or(&r.id)),
                    reasons(r)
                )?;
            }
        }
        writeln!(out, "</tbody></table>")?;
    }
    let passed_vms = vms.iter().filter(|v| v.outcome == Outcome::Passed).count();
    writeln!(
        out,
        "<p class=\"meta\">{passed_vms} of {} VM(s) passed on every disk.</p>",
        vms.len()
    )?;

    writeln!(out, "<h2>Bytes and time per snapshot</h2>")?;
    chart(out, &g.rows, "Bytes read per snapshot", "MiB", |r| {
        r.bytes_read as f64 / 1048576.0
    })?;
    chart(out, &g.rows, "Seconds per snapshot", "s", |r| r.seconds)?;

    writeln!(
        out,
        "<h2>Every item</h2><input id=\"filter\" placeholder=\"filter: VM, disk, outcome, reason…\" aria-label=\"filter\">"
    )?;
    writeln!(
        out,
        "<table id=\"items\"><thead><tr><th>#</th><th>id</th><th>VM</th><th>disk</th><th>outcome</th><th>exit</th><th>attempt</th><th>MiB read</th><th>files</th><th>s</th><th>volumes</th><th>why</th></tr></thead><tbody>"
    )?;
    for r in &g.rows {
        writeln!(
            out,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td>{}</td><td class=\"why\">{}</td></tr>",
            r.index.map(|i| i.to_string()).unwrap_or_default(),
            esc(&r.id),
            esc(r.vm.as_deref().unwrap_or("")),
            esc(r.disk.as_deref().unwrap_or("")),
            badge(r.outcome),
            r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            r.attempt,
            mib(r.bytes_read),
            r.files_read,
            r.seconds,
            r.volumes
                .iter()
                .map(|v| format!(
                    "{} {}",
                    esc(&v.id),
                    if v.good { "✓".to_string() } else { esc(&v.state) }
                ))
                .collect::<Vec<_>>()
                .join(", "),
            reasons(r)
        )?;
    }
    writeln!(out, "</tbody></table>")?;

    let never: Vec<&Row> = g
        .rows
        .iter()
        .filter(|r| r.outcome == Outcome::NeverReported)
        .collect();
    writeln!(out, "<h2>Items that never reported ({})</h2>", never.len())?;
    if never.is_empty() {
        writeln!(out, "<p>None: every item of the spec wrote a result.</p>")?;
    } else {
        writeln!(out, "<ul id=\"never\">")?;
        for r in never {
            writeln!(
                out,
                "<li>#{} {} ({})</li>",
                r.index.unwrap_or(0),
                esc(&r.id),
                esc(&r.image)
            )?;
        }
        writeln!(out, "</ul>")?;
    }
    if !g.invalid.is_empty() {
        writeln!(out, "<h2>Results that could not be read</h2><ul>")?;
        for i in &g.invalid {
            writeln!(out, "<li class=\"why\">{}</li>", esc(i))?;
        }
        writeln!(out, "</ul>")?;
    }
    writeln!(out, "</body></html>")
}
