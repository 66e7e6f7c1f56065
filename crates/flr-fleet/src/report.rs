//! The gather step: every result in the results location, against the
//! spec (for the items that never reported), into one summary JSON, one
//! JUnit file (a test suite per snapshot), Prometheus text (per snapshot
//! and totals) and a self-contained HTML page.
//!
//! Results are read one at a time and reduced to a [`Row`] (a few hundred
//! bytes: outcome, sizes, times, reasons, one line per volume), so memory
//! grows with the number of items by that much and never with the size of
//! a result; the writers work from the rows.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};

use serde::Serialize;

use crate::result::{ItemResult, Outcome};
use crate::spec::{self, Item};
use crate::store::Store;
use crate::FleetError;

/// The report version of the summary JSON.
pub const REPORT_VERSION: u32 = 1;

/// Reasons and messages are cut to this many characters in a row.
const TEXT_MAX: usize = 400;

/// One volume of a row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VolumeRow {
    /// Volume id.
    pub id: String,
    /// `opened`, `blocked`, …
    pub state: String,
    /// Whether its check passed.
    pub good: bool,
    /// Reason codes.
    pub reasons: Vec<String>,
    /// Why, when not good.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One item of the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// Index in the spec (none for a result whose item the spec lacks).
    pub index: Option<u64>,
    /// Item id.
    pub id: String,
    /// VM.
    pub vm: Option<String>,
    /// Disk.
    pub disk: Option<String>,
    /// The image as printed.
    pub image: String,
    /// When the snapshot was taken.
    pub snapshot_time: Option<String>,
    /// The outcome.
    pub outcome: Outcome,
    /// verify's status.
    pub status: String,
    /// Exit code (none when never reported).
    pub exit_code: Option<i32>,
    /// Attempt that wrote the result.
    pub attempt: u32,
    /// Seconds, task start to end.
    pub seconds: f64,
    /// Seconds of verification.
    pub verify_seconds: f64,
    /// Seconds of coordination (spec, lease, result write).
    pub overhead_seconds: f64,
    /// Seconds waited for an export slot.
    pub slot_wait_seconds: f64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Files read.
    pub files_read: u64,
    /// Why it is not passed: blocked reasons with the KEK or secret
    /// version, problem counts, the error.
    pub reasons: Vec<String>,
    /// The volumes.
    pub volumes: Vec<VolumeRow>,
    /// When it finished.
    pub finished: Option<String>,
}

fn cut(s: &str) -> String {
    if s.chars().count() <= TEXT_MAX {
        s.to_string()
    } else {
        let mut o: String = s.chars().take(TEXT_MAX).collect();
        o.push('…');
        o
    }
}

impl Row {
    fn of(r: &ItemResult, index: Option<u64>) -> Row {
        let mut reasons = r.blocked_reasons();
        for v in &r.volumes {
            let mut parts = Vec::new();
            for (n, what) in [
                (v.changed, "changed"),
                (v.missing, "missing"),
                (v.extra, "extra"),
                (v.unreadable, "unreadable"),
                (v.structural_errors, "structural error(s)"),
            ] {
                if n > 0 {
                    parts.push(format!("{n} {what}"));
                }
            }
            if !parts.is_empty() {
                let first: Vec<&str> = v.examples.iter().take(3).map(String::as_str).collect();
                reasons.push(format!(
                    "{}: {}{}",
                    v.id,
                    parts.join(", "),
                    if first.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", first.join("; "))
                    }
                ));
            }
            if v.state == "error" && parts.is_empty() {
                reasons.push(format!("{}: error: {}", v.id, cut(&v.sentence)));
            }
        }
        if let Some(e) = &r.error {
            reasons.push(cut(e));
        }
        Row {
            index,
            id: r.id.clone(),
            vm: r.vm.clone(),
            disk: r.disk.clone(),
            image: r.image.clone(),
            snapshot_time: r.snapshot_time.clone(),
            outcome: r.outcome,
            status: r.status.clone(),
            exit_code: Some(r.exit_code),
            attempt: r.attempt,
            seconds: r.seconds,
            verify_seconds: r.verify_seconds,
            overhead_seconds: r.coordination.overhead_seconds,
            slot_wait_seconds: r.coordination.slot_wait_seconds,
            bytes_read: r.bytes_read,
            files_read: r.files_read,
            reasons,
            volumes: r
                .volumes
                .iter()
                .map(|v| VolumeRow {
                    id: v.id.clone(),
                    state: v.state.clone(),
                    good: v.good,
                    reasons: v.reasons.clone(),
                    detail: if v.good {
                        String::new()
                    } else {
                        cut(&v.sentence)
                    },
                })
                .collect(),
            finished: Some(r.finished.clone()),
        }
    }

    fn never(index: u64, item: &Item) -> Row {
        Row {
            index: Some(index),
            id: item.id.clone(),
            vm: item.vm.clone(),
            disk: item.disk.clone(),
            image: shown(&item.image),
            snapshot_time: item.snapshot_time.clone(),
            outcome: Outcome::NeverReported,
            status: "never-reported".into(),
            exit_code: None,
            attempt: 0,
            seconds: 0.0,
            verify_seconds: 0.0,
            overhead_seconds: 0.0,
            slot_wait_seconds: 0.0,
            bytes_read: 0,
            files_read: 0,
            reasons: vec!["no result was written".into()],
            volumes: Vec::new(),
            finished: None,
        }
    }

    /// `vm / disk`, or the id.
    pub fn label(&self) -> String {
        match (&self.vm, &self.disk) {
            (Some(v), Some(d)) => format!("{v} / {d}"),
            (Some(v), None) => format!("{v} / {}", self.id),
            _ => self.id.clone(),
        }
    }
}

/// A URL without its query (a SAS), anything else as it is.
pub fn shown(image: &str) -> String {
    let l = image.to_ascii_lowercase();
    if l.starts_with("https://") || l.starts_with("http://") {
        image.split(['?', '#']).next().unwrap_or("").to_string()
    } else if l.contains("accountkey=") || l.contains("sharedaccesssignature=") {
        image
            .split(';')
            .filter(|p| {
                let k = p.to_ascii_lowercase();
                !(k.starts_with("accountkey=") || k.starts_with("sharedaccesssignature="))
            })
            .collect::<Vec<_>>()
            .join(";")
    } else {
        image.to_string()
    }
}

/// Titles and times of the report.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The page's title.
    pub title: String,
    /// When it was made (RFC 3339).
    pub generated: String,
}

/// Everything gathered.
#[derive(Debug, Clone)]
pub struct Gathered {
    /// Rows in spec order (results the spec lacks at the end, by id).
    pub rows: Vec<Row>,
    /// Items in the spec (none without a spec).
    pub expected: Option<u64>,
    /// Results that could not be read, with why.
    pub invalid: Vec<String>,
    /// The results location, as printed.
    pub location: String,
}

/// Reads every result under `results/` of `store` and, with the spec,
/// finds the items that never reported.
pub fn gather(store: &dyn Store, spec: Option<&mut dyn BufRead>) -> Result<Gathered, FleetError> {
    // Result name → (index, item) from the spec, if any.
    let mut wanted: HashMap<String, (u64, Item)> = HashMap::new();
    let mut expected = None;
    if let Some(s) = spec {
        let mut n = 0u64;
        spec::for_each(s, |i, mut item| {
            n += 1;
            // Only what a never-reported row needs is kept.
            item.with_disks = Vec::new();
            item.key_chain = Default::default();
            wanted.insert(item.result_name(), (i, item));
            Ok(())
        })?;
        expected = Some(n);
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut invalid = Vec::new();
    store.list("results/", &mut |name| {
        if !name.ends_with(".json") {
            return Ok(());
        }
        let Some(doc) = store.read(name)? else {
            return Ok(());
        };
        match ItemResult::parse(&doc.data) {
            Ok(r) => {
                let index = wanted.remove(name).map(|(i, _)| i).or_else(|| {
                    // A spec given: the result must be of one of its items.
                    expected.is_none().then_some(r.index)
                });
                if index.is_none() {
                    invalid.push(format!("{name}: item {:?} is not in the spec", r.id));
                } else {
                    rows.push(Row::of(&r, index));
                }
            }
            Err(e) => invalid.push(format!("{name}: {e}")),
        }
        Ok(())
    })?;
    for (_, (i, item)) in wanted {
        rows.push(Row::never(i, &item));
    }
    rows.sort_by(|a, b| a.index.cmp(&b.index).then_with(|| a.id.cmp(&b.id)));
    invalid.sort();
    Ok(Gathered {
        rows,
        expected,
        invalid,
        location: store.describe(),
    })
}

/// One VM's disks.
#[derive(Debug, Clone, Serialize)]
pub struct VmSummary {
    /// The VM (or the item id when the spec names none).
    pub vm: String,
    /// The worst outcome of its disks.
    pub outcome: Outcome,
    /// Its items: `(disk or id, outcome)`.
    pub disks: Vec<(String, Outcome)>,
}

impl Gathered {
    /// Items per outcome.
    pub fn counts(&self) -> BTreeMap<Outcome, u64> {
        let mut c: BTreeMap<Outcome, u64> = Outcome::ALL.iter().map(|o| (*o, 0)).collect();
        for r in &self.rows {
            *c.entry(r.outcome).or_default() += 1;
        }
        c
    }

    /// Per VM, worst first.
    pub fn vms(&self) -> Vec<VmSummary> {
        let mut by: BTreeMap<String, VmSummary> = BTreeMap::new();
        for r in &self.rows {
            let vm = r.vm.clone().unwrap_or_else(|| r.id.clone());
            let e = by.entry(vm.clone()).or_insert(VmSummary {
                vm,
                outcome: Outcome::Passed,
                disks: Vec::new(),
            });
            e.disks
                .push((r.disk.clone().unwrap_or_else(|| r.id.clone()), r.outcome));
            if rank(r.outcome) < rank(e.outcome) {
                e.outcome = r.outcome;
            }
        }
        let mut v: Vec<VmSummary> = by.into_values().collect();
        v.sort_by_key(|s| rank(s.outcome));
        v
    }

    /// Whether every expected item passed (and none is missing or invalid).
    pub fn all_passed(&self) -> bool {
        self.invalid.is_empty() && self.rows.iter().all(|r| r.outcome == Outcome::Passed)
    }

    /// The summary JSON. The items are written one at a time, not built
    /// into one document first.
    pub fn write_json(&self, opts: &ReportOptions, out: &mut dyn Write) -> std::io::Result<()> {
        let counts: BTreeMap<&str, u64> = self
            .counts()
            .into_iter()
            .map(|(o, n)| (o.as_str(), n))
            .collect();
        let head = serde_json::json!({
            "flr_fleet_report": REPORT_VERSION,
            "generated": opts.generated,
            "results": self.location,
            "items_expected": self.expected,
            "items_reported": self.rows.iter().filter(|r| r.outcome != Outcome::NeverReported).count(),
            "outcomes": counts,
            "bytes_read": self.rows.iter().map(|r| r.bytes_read).sum::<u64>(),
            "files_read": self.rows.iter().map(|r| r.files_read).sum::<u64>(),
            "verify_seconds": self.rows.iter().map(|r| r.verify_seconds).sum::<f64>(),
            "overhead_seconds": self.rows.iter().map(|r| r.overhead_seconds).sum::<f64>(),
            "vms": self.vms(),
            "never_reported": self.rows.iter().filter(|r| r.outcome == Outcome::NeverReported).map(|r| &r.id).collect::<Vec<_>>(),
            "invalid_results": self.invalid,
        });
        let text = serde_json::to_string_pretty(&head)?;
        // The same object, with "items" streamed in before its closing brace.
        let body = text.trim_end().trim_end_matches('}').trim_end();
        write!(out, "{body},\n  \"items\": [")?;
        for (i, r) in self.rows.iter().enumerate() {
            write!(out, "{}\n    ", if i == 0 { "" } else { "," })?;
            serde_json::to_writer(&mut *out, r)?;
        }
        writeln!(out, "\n  ]\n}}")
    }

    /// JUnit XML: a test suite per snapshot, with a test case per volume
    /// and one for the item's outcome (`reported` for an item that never
    /// reported, which fails).
    pub fn write_junit(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let counts = |r: &Row| {
            let bad = r.volumes.iter().filter(|v| !v.good).count();
            (
                r.volumes.len() + 1,
                bad + usize::from(r.outcome != Outcome::Passed),
            )
        };
        let (tests, failures) = self
            .rows
            .iter()
            .map(counts)
            .fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
        let total_time: f64 = self.rows.iter().map(|r| r.seconds).sum();
        writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
        writeln!(
            out,
            "<testsuites name=\"flr fleet\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{total_time:.3}\">"
        )?;
        for r in &self.rows {
            let (tests, fails) = counts(r);
            writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{fails}\" errors=\"0\" time=\"{:.3}\"{}>",
                xml(&r.id),
                r.seconds,
                r.finished
                    .as_deref()
                    .map(|f| format!(" timestamp=\"{}\"", xml(f.trim_end_matches('Z'))))
                    .unwrap_or_default()
            )?;
            writeln!(out, "    <properties>")?;
            for (k, v) in [
                ("vm", r.vm.clone().unwrap_or_default()),
                ("disk", r.disk.clone().unwrap_or_default()),
                ("image", r.image.clone()),
                ("outcome", r.outcome.as_str().to_string()),
                (
                    "exit_code",
                    r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                ),
                ("attempt", r.attempt.to_string()),
            ] {
                writeln!(out, "      <property name=\"{k}\" value=\"{}\"/>", xml(&v))?;
            }
            writeln!(out, "    </properties>")?;
            let class = format!("flr.fleet.{}", r.id);
            let mut case = |name: &str, failure: Option<(&str, String)>| -> std::io::Result<()> {
                write!(
                    out,
                    "    <testcase classname=\"{}\" name=\"{}\"",
                    xml(&class),
                    xml(name)
                )?;
                match failure {
                    None => writeln!(out, "/>"),
                    Some((kind, msg)) => writeln!(
                        out,
                        ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>",
                        xml(kind),
                        xml(&msg),
                        xml(&msg)
                    ),
                }
            };
            for v in &r.volumes {
                let failure = (!v.good).then(|| {
                    let mut msg = v.state.clone();
                    if !v.reasons.is_empty() {
                        msg.push_str(&format!(" ({})", v.reasons.join(", ")));
                    }
                    if !v.detail.is_empty() {
                        msg.push_str(&format!(": {}", v.detail));
                    }
                    (v.state.as_str(), msg)
                });
                case(&format!("volume {}", v.id), failure)?;
            }
            let name = if r.outcome == Outcome::NeverReported {
                "reported"
            } else {
                "outcome"
            };
            let failure = (r.outcome != Outcome::Passed).then(|| {
                (
                    r.outcome.as_str(),
                    format!("{}: {}", r.outcome, r.reasons.join("; ")),
                )
            });
            case(name, failure)?;
            writeln!(out, "  </testsuite>")?;
        }
        writeln!(out, "</testsuites>")
    }

    /// Prometheus text: totals (`flr_fleet_items{outcome}`, …) and per
    /// snapshot (`flr_fleet_item_*{id,vm,disk}`).
    pub fn write_prometheus(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let head = |out: &mut dyn Write, name: &str, help: &str| -> std::io::Result<()> {
            writeln!(out, "# HELP flr_fleet_{name} {help}")?;
            writeln!(out, "# TYPE flr_fleet_{name} gauge")
        };
        head(out, "items", "Items of the fleet run by outcome.")?;
        for (o, n) in self.counts() {
            writeln!(out, "flr_fleet_items{{outcome=\"{o}\"}} {n}")?;
        }
        head(out, "items_expected", "Items in the spec.")?;
        writeln!(
            out,
            "flr_fleet_items_expected {}",
            self.expected.unwrap_or(self.rows.len() as u64)
        )?;
        head(out, "bytes_read", "Bytes of file data read, all items.")?;
        writeln!(
            out,
            "flr_fleet_bytes_read {}",
            self.rows.iter().map(|r| r.bytes_read).sum::<u64>()
        )?;
        head(out, "verify_seconds", "Seconds of verification, all items.")?;
        writeln!(
            out,
            "flr_fleet_verify_seconds {:.3}",
            self.rows.iter().map(|r| r.verify_seconds).sum::<f64>()
        )?;
        head(out, "invalid_results", "Results that could not be read.")?;
        writeln!(out, "flr_fleet_invalid_results {}", self.invalid.len())?;
        let labels = |r: &Row| {
            format!(
                "id=\"{}\",vm=\"{}\",disk=\"{}\"",
                label(&r.id),
                label(r.vm.as_deref().unwrap_or("")),
                label(r.disk.as_deref().unwrap_or(""))
            )
        };
        head(out, "item_success", "Per snapshot: 1 when it passed.")?;
        for r in &self.rows {
            writeln!(
                out,
                "flr_fleet_item_success{{{}}} {}",
                labels(r),
                u8::from(r.outcome == Outcome::Passed)
            )?;
        }
        head(out, "item_outcome", "Per snapshot: its outcome (always 1).")?;
        for r in &self.rows {
            writeln!(
                out,
                "flr_fleet_item_outcome{{{},outcome=\"{}\"}} 1",
                labels(r),
                r.outcome
            )?;
        }
        head(
            out,
            "item_exit_code",
            "Per snapshot: the task's exit code (-1: never reported).",
        )?;
        for r in &self.rows {
            writeln!(
                out,
                "flr_fleet_item_exit_code{{{}}} {}",
                labels(r),
                r.exit_code.unwrap_or(-1)
            )?;
        }
        head(
            out,
            "item_bytes_read",
            "Per snapshot: bytes of file data read.",
        )?;
        for r in &self.rows {
            writeln!(
                out,
                "flr_fleet_item_bytes_read{{{}}} {}",
                labels(r),
                r.bytes_read
            )?;
        }
        head(
            out,
            "item_duration_seconds",
            "Per snapshot: seconds the task took.",
        )?;
        for r in &self.rows {
            writeln!(
                out,
                "flr_fleet_item_duration_seconds{{{}}} {:.3}",
                labels(r),
                r.seconds
            )?;
        }
        Ok(())
    }

    /// The HTML page (see `html.rs`).
    pub fn write_html(&self, opts: &ReportOptions, out: &mut dyn Write) -> std::io::Result<()> {
        crate::html::write(self, opts, out)
    }
}

/// Lower is worse.
pub(crate) fn rank(o: Outcome) -> usize {
    Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0)
}

/// XML text with `&<>"'` escaped and what XML 1.0 cannot hold replaced
/// (`flr verify --junit` writes with it too).
pub fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// A Prometheus label value: `\`, `"` and newlines escaped (`flr verify
/// --prometheus` writes with it too).
pub fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{KeyChainStep, VolumeSummary, RESULT_VERSION};
    use crate::store::LocalStore;

    fn result(id: &str, index: u64, code: i32) -> ItemResult {
        ItemResult {
            flr_fleet_result: RESULT_VERSION,
            index,
            id: id.into(),
            vm: Some(format!("vm-{}", index / 2)),
            disk: Some(format!("d{index}")),
            image: format!("/x/{id}.vhd"),
            exit_code: code,
            outcome: Outcome::of_exit_code(code),
            status: "ok".into(),
            attempt: 1,
            started: "2026-11-28T00:00:00Z".into(),
            finished: "2026-11-28T00:00:01Z".into(),
            seconds: 1.0,
            verify_seconds: 0.9,
            bytes_read: 1000 * (index + 1),
            mode: "full".into(),
            volumes: vec![VolumeSummary {
                id: "p1".into(),
                state: if code == 4 { "blocked" } else { "opened" }.into(),
                verdict: "readable".into(),
                good: code == 0,
                reasons: if code == 4 {
                    vec!["kek-disabled".into()]
                } else {
                    vec![]
                },
                changed: u64::from(code == 7),
                ..VolumeSummary::default()
            }],
            key_chain: if code == 4 {
                vec![KeyChainStep {
                    secret: "https://v/secrets/s/1".into(),
                    kek: Some("https://v/keys/k/v9".into()),
                    outcome: "blocked".into(),
                    code: Some("kek-disabled".into()),
                    message: None,
                }]
            } else {
                vec![]
            },
            ..ItemResult::default()
        }
    }

    #[test]
    fn report_names_every_outcome_and_the_missing() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path()).unwrap();
        let mut spec = String::from("{\"flr_fleet_spec\":1}\n");
        for (i, code) in [0, 4, 7, 3, 6].iter().enumerate() {
            let r = result(&format!("i{i}"), i as u64, *code);
            s.replace(&format!("results/i{i}.json"), &r.to_json())
                .unwrap();
            spec.push_str(&format!("{{\"id\":\"i{i}\",\"image\":\"/x/i{i}.vhd\"}}\n"));
        }
        spec.push_str("{\"id\":\"lost\",\"image\":\"https://a/c/b?sig=SECRET\",\"vm\":\"vm-9\"}\n");
        s.replace("results/garbage.json", b"{").unwrap();
        let mut r = std::io::BufReader::new(spec.as_bytes());
        let g = gather(&s, Some(&mut r)).unwrap();
        let outcomes: Vec<_> = g.rows.iter().map(|r| r.outcome.as_str()).collect();
        assert_eq!(
            outcomes,
            [
                "passed",
                "blocked",
                "mismatch",
                "error",
                "retryable",
                "never-reported"
            ]
        );
        assert_eq!(g.rows[5].image, "https://a/c/b");
        assert_eq!(g.invalid.len(), 1, "{:?}", g.invalid);
        assert!(g.rows[1].reasons[0].contains("kek-disabled (KEK https://v/keys/k/v9)"));
        let opts = ReportOptions {
            title: "t".into(),
            generated: "2026-11-28T00:00:00Z".into(),
        };
        let mut j = Vec::new();
        g.write_json(&opts, &mut j).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(v["outcomes"]["blocked"], 1);
        assert_eq!(v["never_reported"][0], "lost");
        assert_eq!(v["vms"][0]["outcome"], "blocked");
        let mut x = Vec::new();
        g.write_junit(&mut x).unwrap();
        let x = String::from_utf8(x).unwrap();
        assert_eq!(x.matches("<testsuite ").count(), 6);
        assert!(x.contains("name=\"reported\""), "{x}");
        let mut p = Vec::new();
        g.write_prometheus(&mut p).unwrap();
        let p = String::from_utf8(p).unwrap();
        assert!(
            p.contains("flr_fleet_items{outcome=\"never-reported\"} 1"),
            "{p}"
        );
        assert!(p.contains("flr_fleet_item_exit_code{id=\"i1\",vm=\"vm-0\",disk=\"d1\"} 4"));
        let mut h = Vec::new();
        g.write_html(&opts, &mut h).unwrap();
        let h = String::from_utf8(h).unwrap();
        assert!(h.contains("kek-disabled"), "no reason in the page");
        assert!(!h.contains("SECRET") && !h.contains("http-equiv") && !h.contains("src=\"http"));
    }
}
