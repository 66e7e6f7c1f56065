//! Reading a passphrase from the terminal without echo.

use std::fs::File;
use std::io::{Read, Write};

use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions, Termios};
use zeroize::{Zeroize, Zeroizing};

use flr_keys::Secret;

/// The longest line accepted (ADE's BEK passphrase is 172 bytes).
const MAX_LEN: usize = 4096;

/// Restores the terminal's modes when dropped, whatever happens in between.
struct EchoOff<'a> {
    tty: &'a File,
    saved: Termios,
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.tty, OptionalActions::Now, &self.saved);
    }
}

/// Shows `prompt` on the controlling terminal (`/dev/tty`, so it works
/// with stdout redirected) and reads one line with echo off. The line's
/// bytes, without the final newline, become the secret; they pass through
/// no buffer that outlives this call unwiped.
pub(crate) fn read_hidden(prompt: &str) -> std::io::Result<Secret> {
    let tty = File::options().read(true).write(true).open("/dev/tty")?;
    let saved = tcgetattr(&tty)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    // Still echo the newline, so the next output starts on its own line.
    quiet.local_modes.insert(LocalModes::ECHONL);
    // Echo goes off (discarding anything typed ahead) before the prompt
    // appears, so nothing typed after the prompt can be echoed.
    tcsetattr(&tty, OptionalActions::Flush, &quiet)?;
    let guard = EchoOff { tty: &tty, saved };
    (&*guard.tty).write_all(prompt.as_bytes())?;
    (&*guard.tty).flush()?;
    let mut line = Zeroizing::new(Vec::with_capacity(256));
    let mut byte = [0u8; 1];
    loop {
        let n = (&*guard.tty).read(&mut byte)?;
        if n == 0 || byte[0] == b'\n' {
            break;
        }
        if line.len() == MAX_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "passphrase longer than 4096 bytes",
            ));
        }
        line.push(byte[0]);
    }
    byte.zeroize();
    drop(guard);
    Ok(Secret::from_slice(&line))
}
