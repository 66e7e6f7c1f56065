//! The stable-toolchain fuzz runner and seed writer.
//!
//! ```text
//! flr-fuzz list
//! flr-fuzz seeds DIR [TARGET ...]          write DIR/<target>/<seed> for libFuzzer
//! flr-fuzz run TARGET [--seconds N] [--iterations N] [--seed S] [--crashes DIR]
//! flr-fuzz replay TARGET FILE ...          run inputs once (exit 1 if one panics)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn usage() -> ExitCode {
    eprintln!("usage: flr-fuzz list | seeds DIR [TARGET ...] | run TARGET [--seconds N] [--iterations N] [--seed S] [--crashes DIR] | replay TARGET FILE ...");
    ExitCode::from(2)
}

fn target(name: Option<&String>) -> Result<&'static flr_fuzz::Target, ExitCode> {
    let name = name.ok_or_else(usage)?;
    flr_fuzz::target(name).ok_or_else(|| {
        eprintln!("flr-fuzz: no target {name:?} (see flr-fuzz list)");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            for t in flr_fuzz::targets() {
                println!("{:<11} {}", t.name, t.about);
            }
            ExitCode::SUCCESS
        }
        Some("seeds") => {
            let Some(dir) = args.get(1).map(PathBuf::from) else {
                return usage();
            };
            let wanted = &args[2..];
            for t in flr_fuzz::targets() {
                if !wanted.is_empty() && !wanted.iter().any(|w| w == t.name) {
                    continue;
                }
                let d = dir.join(t.name);
                if let Err(e) = std::fs::create_dir_all(&d) {
                    eprintln!("flr-fuzz: {}: {e}", d.display());
                    return ExitCode::FAILURE;
                }
                let seeds = t.seeds();
                let regress = flr_fuzz::regressions(t);
                for (name, bytes) in &seeds {
                    let _ = std::fs::write(d.join(name), bytes);
                }
                for (k, bytes) in regress.iter().enumerate() {
                    let _ = std::fs::write(d.join(format!("regression-{k}")), bytes);
                }
                if seeds.is_empty() {
                    eprintln!(
                        "flr-fuzz: target {}: NO SEED (its seeds come from the shared corpus, absent here); fuzzing starts from nothing",
                        t.name
                    );
                }
                println!(
                    "{:<11} {} seeds, {} regression inputs, {} bytes",
                    t.name,
                    seeds.len(),
                    regress.len(),
                    seeds.iter().map(|s| s.1.len()).sum::<usize>()
                );
            }
            ExitCode::SUCCESS
        }
        Some("run") => {
            let t = match target(args.get(1)) {
                Ok(t) => t,
                Err(c) => return c,
            };
            let mut seconds = 10u64;
            let mut iterations = u64::MAX;
            let mut seed = 1u64;
            let mut crashes = None;
            let mut it = args[2..].iter();
            while let Some(a) = it.next() {
                let v = it.next();
                match (a.as_str(), v) {
                    ("--seconds", Some(v)) => seconds = v.parse().unwrap_or(seconds),
                    ("--iterations", Some(v)) => iterations = v.parse().unwrap_or(iterations),
                    ("--seed", Some(v)) => seed = v.parse().unwrap_or(seed),
                    ("--crashes", Some(v)) => crashes = Some(PathBuf::from(v)),
                    _ => return usage(),
                }
            }
            std::panic::set_hook(Box::new(|_| {}));
            let s = flr_fuzz::run_mutations(
                t,
                iterations,
                Duration::from_secs(seconds),
                seed,
                crashes.as_deref(),
            );
            println!(
                "{}: {} executions ({} seeds), slowest {:?}, {} crashes",
                t.name,
                s.executions,
                s.seeds,
                s.slowest,
                s.crashes.len()
            );
            for (input, msg) in &s.crashes {
                println!("  crash {input}: {msg}");
            }
            if s.crashes.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some("replay") => {
            let t = match target(args.get(1)) {
                Ok(t) => t,
                Err(c) => return c,
            };
            let mut bad = 0;
            for f in &args[2..] {
                match std::fs::read(f) {
                    Ok(data) => match t.check(&data) {
                        Ok(()) => println!("{f}: ok"),
                        Err(m) => {
                            println!("{f}: PANIC {m}");
                            bad += 1;
                        }
                    },
                    Err(e) => {
                        println!("{f}: {e}");
                        bad += 1;
                    }
                }
            }
            if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        _ => usage(),
    }
}
