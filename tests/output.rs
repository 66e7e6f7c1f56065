//! One machine-readable switch (`--format json`), verbosity, `--log-format
//! json`, colour only on a terminal, and the old spellings with their
//! deprecation notes (docs/json.md). Expected files and sizes come from the
//! demo fixture's generator manifest, not from flr.

use crate::util::*;

fn lines_json(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn format_json_puts_versioned_data_on_stdout_for_every_command() {
    let demo = demo();
    let img = p(&demo);
    let want = manifest("disks/demo.p2.tsv");
    // probe: one document.
    let o = run_ok(&["--format", "json", "probe", img]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("probe JSON");
    assert_eq!(v["report_version"], 2);
    // ls: JSON Lines, each versioned; the names are the generator's.
    let o = run_ok(&["--format", "json", "ls", img, "p2:/etc"]);
    let recs = lines_json(&stdout(&o));
    let files: Vec<_> = want.iter().filter(|e| e.path.starts_with("etc/")).collect();
    assert_eq!(recs.len(), files.len());
    for r in &recs {
        assert_eq!(r["report_version"], 1);
        let e = files
            .iter()
            .find(|e| format!("/{}", e.path) == r["path"].as_str().unwrap())
            .expect("listed path is in the manifest");
        if e.kind == 'f' {
            assert_eq!(r["size"], e.size);
        }
    }
    // get: file records (with --checksum) and the summary on stdout, stderr free of JSON.
    let dest = tempfile::tempdir().unwrap();
    let o = run_ok(&[
        "--format",
        "json",
        "get",
        img,
        "p2:/etc",
        "-o",
        p(dest.path()),
        "--checksum",
    ]);
    let recs = lines_json(&stdout(&o));
    let summary = recs.last().expect("a summary");
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["report_version"], 1);
    let n_files = files.iter().filter(|e| e.kind == 'f').count();
    assert_eq!(summary["files"], n_files as u64);
    for r in &recs[..recs.len() - 1] {
        assert_eq!(r["type"], "file");
        let e = want
            .iter()
            .find(|e| e.path == r["path"].as_str().unwrap())
            .unwrap();
        assert_eq!(r["sha256"], e.sha256.as_str());
        assert_eq!(r["size"], e.size);
    }
    assert_eq!(recs.len(), n_files + 1);
    assert!(!stderr(&o).contains('{'), "stderr: {}", stderr(&o));
    // verify: the report on stdout.
    let o = run_ok(&["--format", "json", "verify", img]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("verify JSON");
    assert_eq!(v["report_version"], 1);
    assert!(v["volumes"].as_array().is_some_and(|a| !a.is_empty()));
    // --stats with --format json: one JSON object on stderr.
    let o = run_ok(&["--format", "json", "--stats", "ls", img, "p2:/"]);
    let last = stderr(&o).lines().last().unwrap_or_default().to_string();
    let s: serde_json::Value = serde_json::from_str(&last).expect("stats JSON");
    assert_eq!(s["source"], "local");
}

#[test]
fn old_spellings_work_with_a_deprecation_note() {
    let demo = demo();
    let img = p(&demo);
    let dest = tempfile::tempdir().unwrap();
    let o = run_ok(&["get", "--json", img, "p2:/etc/hosts", "-o", p(dest.path())]);
    let err = stderr(&o);
    assert!(err.contains("deprecated"), "{err}");
    let summary = err
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("summary on stderr");
    let v: serde_json::Value = serde_json::from_str(summary).unwrap();
    assert_eq!(v["files"], 1);
    assert!(o.stdout.is_empty());
    let report = dest.path().join("report.json");
    let o = run_ok(&["verify", img, "--json", p(&report)]);
    assert!(stderr(&o).contains("deprecated"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["report_version"], 1);
    let o = run_ok(&["--stats=json", "ls", img, "p2:/"]);
    assert!(stderr(&o).contains("deprecated"));
}

#[test]
fn quiet_verbose_and_json_logs() {
    let demo = demo();
    let img = p(&demo);
    let dest = tempfile::tempdir().unwrap();
    // -q: a successful restore says nothing; the file is there.
    let o = run_ok(&["-q", "get", img, "p2:/etc/hosts", "-o", p(dest.path())]);
    assert_eq!(stderr(&o), "");
    assert!(dest.path().join("hosts").is_file());
    // -q keeps errors.
    let o = run(&["-q", "cat", img, "p2:/no/such"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no such"), "{}", stderr(&o));
    // Without -q the summary is shown; -v adds the run's time.
    let d2 = tempfile::tempdir().unwrap();
    let o = run_ok(&["-v", "get", img, "p2:/etc/hosts", "-o", p(d2.path())]);
    let err = stderr(&o);
    assert!(
        err.contains("restored 1 files") && err.contains("finished in"),
        "{err}"
    );
    // -vv also names the image's volumes (sizes from the generator's sfdisk layout: p2 is 8 MiB).
    let o = run_ok(&["-vv", "ls", img, "p2:/"]);
    assert!(
        stderr(&o).contains("flr: p2: volume of 8388608 bytes"),
        "{}",
        stderr(&o)
    );
    let o = run_ok(&["-v", "ls", img, "p2:/"]);
    assert!(!stderr(&o).contains("volume of"));
    // --log-format json: every message is an object with level, volume, path.
    let o = run(&["--log-format", "json", "cat", img, "p2:/no/such"]);
    assert_eq!(o.status.code(), Some(2));
    let msgs = lines_json(&stderr(&o));
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["level"], "error");
    assert_eq!(msgs[0]["volume"], "p2");
    assert_eq!(msgs[0]["path"], "/no/such");
    for k in ["layer", "message"] {
        assert!(msgs[0].get(k).is_some(), "{k} missing");
    }
}

/// Runs `flr ARGS` under a pseudo-terminal (`script`), returning what it
/// printed there.
pub(crate) fn under_pty(args: &[&str], env: &[(&str, &str)]) -> Option<String> {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: `script` (util-linux) is not installed: no pseudo-terminal test");
        return None;
    }
    let cmd = std::iter::once(env!("CARGO_BIN_EXE_flr").to_string())
        .chain(args.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"]).env_remove("NO_COLOR");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("run script");
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let demo = demo();
    let img = p(&demo);
    // Off a terminal: no escape codes, even for an error.
    let o = run(&["cat", img, "p2:/no/such"]);
    assert!(!stderr(&o).contains('\x1b'));
    let Some(tty) = under_pty(&["cat", img, "p2:/no/such"], &[]) else {
        return;
    };
    assert!(tty.contains("\x1b[1;31mflr:"), "{tty:?}");
    let tty = under_pty(&["cat", img, "p2:/no/such"], &[("NO_COLOR", "1")]).unwrap();
    assert!(tty.contains("flr:") && !tty.contains('\x1b'), "{tty:?}");
}
