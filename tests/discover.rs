//! Discoverability: `flr completions SHELL` loads in the shell and completes
//! commands and values; `flr man` pages render with `man -l`; `-h` fits a
//! screen while `--help` carries the details.

use std::process::Command;

use crate::util::*;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// bash itself loads the script and its completion function answers, as
/// bash would call it (`_flr CMD CUR PREV` with COMP_WORDS/COMP_CWORD).
#[test]
fn bash_completion_loads_and_completes() {
    if !have("bash") {
        eprintln!("SKIPPED: bash_completion_loads_and_completes because bash is not installed");
        return;
    }
    let flr = env!("CARGO_BIN_EXE_flr");
    let script = format!(
        "set -e; source <('{flr}' completions bash); complete -p flr; \
         COMP_WORDS=(flr ge); COMP_CWORD=1; _flr flr ge flr; echo \"words: ${{COMPREPLY[*]}}\"; \
         COMP_WORDS=(flr get --overwrite ''); COMP_CWORD=3; _flr flr '' --overwrite; \
         echo \"values: ${{COMPREPLY[*]}}\""
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{}{}", text, stderr(&out));
    assert!(text.contains("-F _flr flr"), "{text}");
    assert!(text.lines().any(|l| l == "words: get"), "{text}");
    assert!(
        text.contains("values: error skip always rename if-different"),
        "{text}"
    );
}

#[test]
fn completions_for_every_shell() {
    for (shell, marker) in [
        ("bash", "_flr()"),
        ("zsh", "#compdef flr"),
        ("fish", "complete -c flr"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = run_ok(&["completions", shell]);
        assert!(stdout(&out).contains(marker), "{shell}: no {marker:?}");
    }
    if have("zsh") {
        let out = run_ok(&["completions", "zsh"]);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &out.stdout).unwrap();
        let z = Command::new("zsh")
            .args(["-n", p(f.path())])
            .output()
            .unwrap();
        assert!(z.status.success(), "zsh -n: {}", stderr(&z));
    } else {
        eprintln!("SKIPPED: zsh -n of the zsh completions because zsh is not installed");
    }
    if have("fish") {
        let out = run_ok(&["completions", "fish"]);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &out.stdout).unwrap();
        let z = Command::new("fish")
            .args(["-n", p(f.path())])
            .output()
            .unwrap();
        assert!(z.status.success(), "fish -n: {}", stderr(&z));
    } else {
        eprintln!("SKIPPED: fish -n of the fish completions because fish is not installed");
    }
}

/// One page per command, and `man -l` (man-db + groff) renders them.
#[test]
fn man_pages_render() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(&["man", "--dir", p(dir.path())]);
    for page in [
        "flr.1",
        "flr-get.1",
        "flr-verify.1",
        "flr-fleet-run.1",
        "flr-completions.1",
    ] {
        assert!(dir.path().join(page).exists(), "{page} missing");
    }
    // Without --dir: flr(1) on stdout.
    let out = run_ok(&["man"]);
    assert!(
        stdout(&out).starts_with(".ie") || stdout(&out).contains(".TH flr"),
        "not roff"
    );
    if !have("man") || !have("groff") {
        eprintln!("SKIPPED: man_pages_render's man -l because man-db or groff is not installed");
        return;
    }
    let r = Command::new("man")
        .args(["-l", p(&dir.path().join("flr-get.1"))])
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .unwrap();
    let text = stdout(&r);
    assert!(r.status.success(), "man -l: {}", stderr(&r));
    assert!(text.contains("NAME") && text.contains("flr-get"), "{text}");
    for opt in [
        "--skip-existing",
        "--include",
        "--overwrite",
        "if-different",
    ] {
        assert!(
            text.contains(opt),
            "flr-get(1) does not mention {opt}:\n{text}"
        );
    }
    let r = Command::new("man")
        .args(["-l", p(&dir.path().join("flr.1"))])
        .env("MANPAGER", "cat")
        .output()
        .unwrap();
    assert!(
        stdout(&r).contains("Exit codes"),
        "flr(1) has no exit codes"
    );
}

/// `-h` is a screen; `--help` has the long explanations.
#[test]
fn short_help_fits_a_screen() {
    for args in [
        &["-h"][..],
        &["get", "-h"],
        &["verify", "-h"],
        &["probe", "-h"],
    ] {
        let short = stdout(&run_ok(args));
        let mut long_args = args.to_vec();
        *long_args.last_mut().unwrap() = "--help";
        let long = stdout(&run_ok(&long_args));
        let lines = short.lines().count();
        assert!(lines <= 60, "{args:?}: {lines} lines");
        assert!(
            long.len() > short.len() * 3 / 2,
            "{args:?}: --help adds little"
        );
        let widest = short.lines().map(|l| l.chars().count()).max().unwrap_or(0);
        assert!(widest <= 200, "{args:?}: a line of {widest} characters");
    }
    let get = stdout(&run_ok(&["get", "-h"]));
    // Global options are grouped under headings.
    for h in ["Keys and encryption:", "Output:", "Selection and safety:"] {
        assert!(get.contains(h), "get -h has no {h}");
    }
    // Details only in --help.
    assert!(!get.contains("NAME~N.EXT"));
    assert!(stdout(&run_ok(&["get", "--help"])).contains("NAME~N.EXT"));
}
