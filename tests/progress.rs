//! Progress bars: drawn on stderr under a pseudo-terminal (`script` from
//! util-linux gives the command one), with bytes, files, rate and ETA; absent
//! when stderr is a pipe, with `--format json` and with `-q`.

use std::path::Path;
use std::process::{Command, Output};

use crate::util::*;

/// Runs `flr ARGS` (a shell command line after `flr`) on a pseudo-terminal;
/// `None` (after a loud skip) without `script`.
fn on_terminal(test: &str, args: &str) -> Option<Output> {
    let have = Command::new("sh")
        .args(["-c", "command -v script"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("SKIPPED: {test} because script (util-linux/bsdutils) is not installed");
        return None;
    }
    let line = format!("'{}' {args}", env!("CARGO_BIN_EXE_flr"));
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .output()
        .expect("run script");
    assert!(
        out.status.success(),
        "{line}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    Some(out)
}

fn has_bar(text: &str, label: &str) -> bool {
    text.contains(label) && text.contains("eta") && text.contains("B/s")
}

fn demo_path() -> String {
    p(&demo()).to_string()
}

#[test]
fn get_draws_a_bar_on_a_terminal_only() {
    let dest = tempfile::tempdir().unwrap();
    let d = p(dest.path());
    let Some(out) = on_terminal(
        "get_draws_a_bar_on_a_terminal_only",
        &format!("get '{}' p2:/ -o '{d}/a'", demo_path()),
    ) else {
        return;
    };
    let text = stdout(&out);
    assert!(has_bar(&text, "get ["), "no bar: {text:?}");
    let files = manifest("disks/demo.p2.tsv")
        .iter()
        .filter(|e| e.kind == 'f')
        .count();
    assert!(
        text.contains(&format!("/{files} files")),
        "no file count: {text:?}"
    );
    assert!(text.contains("flr: restored"), "{text:?}");
    let syslog = std::fs::read(Path::new(d).join("a/var/log/syslog")).unwrap();
    let want = manifest("disks/demo.p2.tsv");
    let e = want.iter().find(|e| e.path == "var/log/syslog").unwrap();
    assert_eq!(sha256_hex(&syslog), e.sha256);

    // JSON mode and -q: no bar even on a terminal.
    for (flag, dir) in [("--format json", "b"), ("-q", "c")] {
        let out = on_terminal(
            "get_draws_a_bar_on_a_terminal_only",
            &format!("{flag} get '{}' p2:/ -o '{d}/{dir}'", demo_path()),
        )
        .unwrap();
        let text = stdout(&out);
        assert!(!has_bar(&text, "get ["), "{flag}: a bar: {text:?}");
        assert!(
            !text.contains("\x1b[2K"),
            "{flag}: terminal control: {text:?}"
        );
    }
    // stderr a pipe: no bar.
    let out = run_ok(&["get", &demo_path(), "p2:/", "-o", &format!("{d}/e")]);
    let err = stderr(&out);
    assert!(!has_bar(&err, "get [") && !err.contains('\x1b'), "{err:?}");
}

#[test]
fn verify_manifest_and_cat_draw_bars() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    let t = "verify_manifest_and_cat_draw_bars";
    let Some(out) = on_terminal(t, &format!("verify '{}'", demo_path())) else {
        return;
    };
    assert!(has_bar(&stdout(&out), "verify p2"), "{:?}", stdout(&out));
    let out = on_terminal(t, &format!("manifest '{}' > '{d}/m.json'", demo_path())).unwrap();
    assert!(has_bar(&stdout(&out), "manifest p2"), "{:?}", stdout(&out));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(m["format"], "flr-manifest");
    let out = on_terminal(
        t,
        &format!("cat '{}' p2:/var/log/syslog > '{d}/syslog'", demo_path()),
    )
    .unwrap();
    assert!(
        has_bar(&stdout(&out), "cat p2:/var/log/syslog"),
        "{:?}",
        stdout(&out)
    );
    let want = manifest("disks/demo.p2.tsv");
    let e = want.iter().find(|e| e.path == "var/log/syslog").unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(dir.path().join("syslog")).unwrap()),
        e.sha256
    );
    // verify --format json on a terminal: the report, no bar.
    let out = on_terminal(t, &format!("--format json verify '{}'", demo_path())).unwrap();
    assert!(!has_bar(&stdout(&out), "verify p2"), "{:?}", stdout(&out));
    // verify with stderr a pipe.
    let out = run(&["verify", &demo_path()]);
    assert!(!stderr(&out).contains('\x1b'), "{:?}", stderr(&out));
}
