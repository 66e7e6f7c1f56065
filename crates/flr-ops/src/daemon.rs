//! `flr mount --daemon`: the mount detached into the background.
//!
//! The parent starts the same command again as a child in its own process
//! group (so a Ctrl-C at the terminal does not reach it), with standard
//! input closed and standard output a pipe. The child prints its messages
//! (a wrong key, a locked volume) on the terminal's stderr like a foreground
//! mount, writes one line on the pipe once the mount is live, and from then
//! on writes nothing (its stdout and stderr become /dev/null). The parent
//! returns when that line arrives, or with the child's exit code when the
//! child fails before mounting. Nothing forks after threads exist.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "FLR_MOUNT_DAEMON_CHILD";
const READY: &str = "flr-mount-ready";

/// True in the detached child.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some_and(|v| v == "1")
}

/// How the detach went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// The mount is live; the child serving it has this pid.
    Mounted(u32),
    /// The child ended before mounting, with this exit code (its messages
    /// are already on stderr).
    Failed(i32),
}

/// In the parent: starts this process's command again as the detached
/// child and waits until it has mounted or failed.
pub fn detach() -> std::io::Result<Detached> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    let out = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no pipe to the child"))?;
    for line in BufReader::new(out).lines() {
        if line? == READY {
            return Ok(Detached::Mounted(pid));
        }
    }
    let status = child.wait()?;
    Ok(Detached::Failed(status.code().unwrap_or(1)))
}

/// In the child, once mounted: tells the parent, then stops writing to the
/// parent's pipe and terminal.
pub fn ready() {
    if !is_child() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, format!("{READY}\n").as_bytes());
    let _ = std::io::Write::flush(&mut out);
    drop(out);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}
