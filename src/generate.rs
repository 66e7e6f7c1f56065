//! `flr completions SHELL` and `flr man [--dir DIR]`: generated from the
//! argument definitions themselves (`clap_complete`, `clap_mangen`), so
//! they never drift from the parser.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

/// The shells `flr completions` writes for.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Shell {
    /// bash (source it, or put it in bash-completion's completions folder as `flr`).
    Bash,
    /// zsh (put it on $fpath as `_flr`).
    Zsh,
    /// fish (put it in ~/.config/fish/completions/flr.fish).
    Fish,
    /// PowerShell (dot-source it from $PROFILE).
    Powershell,
}

/// Writes the completion script for `shell` to stdout.
pub(crate) fn completions(shell: Shell) -> i32 {
    let mut cmd = crate::Cli::command();
    let mut out = Vec::new();
    match shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "flr", &mut out)
        }
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "flr", &mut out),
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "flr", &mut out)
        }
        Shell::Powershell => {
            clap_complete::generate(clap_complete::Shell::PowerShell, &mut cmd, "flr", &mut out)
        }
    }
    emit(&out)
}

fn emit(bytes: &[u8]) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flr: output: {e}");
            5
        }
    }
}

/// Every page: `flr(1)`, then one per subcommand (`flr-get(1)`,
/// `flr-fleet-run(1)`, …), as (file name, roff text).
fn pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut root = crate::Cli::command();
    root.build();
    let mut pages = Vec::new();
    fn add(
        cmd: &clap::Command,
        name: String,
        pages: &mut Vec<(String, Vec<u8>)>,
    ) -> std::io::Result<()> {
        // A page's title is the command's name; clap names are &'static str
        // (without its `string` feature), and this runs once per process.
        let title: &'static str = Box::leak(name.clone().into_boxed_str());
        let page = cmd.clone().name(title).bin_name(name.replace('-', " "));
        let mut text = Vec::new();
        clap_mangen::Man::new(page).render(&mut text)?;
        pages.push((format!("{name}.1"), text));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            add(sub, format!("{name}-{}", sub.get_name()), pages)?;
        }
        Ok(())
    }
    add(&root, "flr".into(), &mut pages)?;
    Ok(pages)
}

/// `flr man`: the `flr(1)` page on stdout; with `--dir DIR` every page
/// written into DIR (created), one file per command.
pub(crate) fn man(dir: Option<&Path>) -> i32 {
    let pages = match pages() {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flr: man: {e}");
            return 5;
        }
    };
    let Some(dir) = dir else {
        return emit(&pages[0].1);
    };
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        for (name, text) in &pages {
            std::fs::write(dir.join(name), text)?;
        }
        Ok(())
    });
    match written {
        Ok(()) => {
            let _ = writeln!(
                std::io::stderr(),
                "flr: wrote {} man pages into {}",
                pages.len(),
                dir.display()
            );
            0
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flr: man --dir {}: {e}", dir.display());
            5
        }
    }
}
