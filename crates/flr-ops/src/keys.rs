//! `--key ID=KIND:VALUE` and `--luks-header ID=FILE`: key files read and
//! passphrases asked for here, above the engine, which only receives
//! typed [`KeyMaterial`] per volume id.

use std::sync::Arc;

use flr_engine::{DetachedHeader, KeyRing};
use flr_keys::{KeyMaterial, Secret};

use crate::prompt::read_hidden;

/// The kinds `--key` takes after `ID=`.
const KINDS: &[&str] = &[
    "passphrase-file:",
    "password-file:",
    "bek:",
    "recovery:",
    "volume-key:",
];

/// Splits `ID=REST` at the `=` that starts a key kind (a nested volume id
/// such as `p2:/a=b.vhdx::p1` may itself hold `=`), else at the first one.
fn split_id(arg: &str) -> Option<(&str, &str)> {
    let eqs = arg.match_indices('=').map(|(i, _)| i);
    let mut first = None;
    for i in eqs {
        first.get_or_insert(i);
        let rest = &arg[i + 1..];
        if KINDS.iter().any(|k| rest.starts_with(k)) || rest == "ask" || rest == "ask-password" {
            return Some((&arg[..i], rest));
        }
    }
    first.map(|i| (&arg[..i], &arg[i + 1..]))
}

/// Parses one `ID=KIND:VALUE` argument into `keys`. Kinds:
/// `passphrase-file:PATH`, `password-file:PATH`, `bek:PATH`,
/// `recovery:DIGITS`, `volume-key:HEX`. Files are read as exact bytes (no
/// newline is stripped). `ID=ask` (LUKS passphrase) and `ID=ask-password`
/// (BitLocker password) read the secret from the terminal without echo.
pub fn add_key_arg(keys: &mut KeyRing, arg: &str) -> Result<(), String> {
    let (id, rest) = split_id(arg).ok_or_else(|| {
        format!("--key {arg:?}: expected ID=KIND:VALUE, e.g. p3=passphrase-file:/path")
    })?;
    if id.is_empty() {
        return Err(format!("--key {arg:?}: the volume id before '=' is empty"));
    }
    if let Some(password) = match rest {
        "ask" => Some(false),
        "ask-password" => Some(true),
        _ => None,
    } {
        let what = if password {
            "BitLocker password"
        } else {
            "passphrase"
        };
        let secret = read_hidden(&format!("flr: {what} for {id}: "))
            .map_err(|e| format!("--key {id}={rest}: cannot read from the terminal: {e}"))?;
        let key = if password {
            KeyMaterial::Password(secret)
        } else {
            KeyMaterial::Passphrase(secret)
        };
        keys.insert(id, key);
        return Ok(());
    }
    let (kind, value) = rest
        .split_once(':')
        .ok_or_else(|| format!("--key for {id}: expected KIND:VALUE after '='"))?;
    let read = |what: &str| {
        std::fs::read(value)
            .map(Secret::new)
            .map_err(|e| format!("--key for {id}: cannot read the {what} file {value:?}: {e}"))
    };
    let key = match kind {
        "passphrase-file" => KeyMaterial::Passphrase(read("passphrase")?),
        "password-file" => KeyMaterial::Password(read("password")?),
        "bek" => KeyMaterial::StartupKey(read(".BEK")?),
        "recovery" => KeyMaterial::RecoveryPassword(Secret::from_slice(value.as_bytes())),
        "volume-key" => {
            let hex = value.trim();
            if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("--key for {id}: volume-key must be hex digits"));
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
                .collect();
            KeyMaterial::VolumeKey(Secret::new(bytes))
        }
        other => {
            return Err(format!(
                "--key for {id}: unknown kind {other:?} (passphrase-file, password-file, bek, recovery, volume-key; or {id}=ask to type a passphrase)"
            ))
        }
    };
    keys.insert(id, key);
    Ok(())
}

/// Parses one `--luks-header ID=FILE` argument into `keys`: the file is
/// opened read-only here.
pub fn add_luks_header_arg(keys: &mut KeyRing, arg: &str) -> Result<(), String> {
    let (id, file) = arg
        .rsplit_once('=')
        .filter(|(id, file)| !id.is_empty() && !file.is_empty())
        .ok_or_else(|| {
            format!("--luks-header {arg:?}: expected ID=FILE, e.g. p2=/path/osluksheader")
        })?;
    let src =
        flr_io::FileSource::open(file).map_err(|e| format!("--luks-header {id}={file}: {e}"))?;
    keys.set_luks_header(
        id,
        DetachedHeader {
            source: Arc::new(src),
            origin: format!("{file} (--luks-header)"),
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds() {
        let mut k = KeyRing::new();
        add_key_arg(&mut k, "p1=recovery:111111-222222").unwrap();
        add_key_arg(&mut k, "disk=volume-key:00ff").unwrap();
        add_key_arg(&mut k, "p2:/a=b.vhdx::p1=volume-key:01").unwrap();
        assert!(matches!(
            k.get("p1"),
            Some(KeyMaterial::RecoveryPassword(_))
        ));
        match k.get("disk") {
            Some(KeyMaterial::VolumeKey(s)) => assert_eq!(s.expose(), &[0, 255]),
            _ => panic!("volume key"),
        }
        assert!(k.get("p2:/a=b.vhdx::p1").is_some());
        assert!(add_key_arg(&mut k, "p1").is_err());
        assert!(add_key_arg(&mut k, "p1=what:x").is_err());
        assert!(add_key_arg(&mut k, "p1=volume-key:xyz").is_err());
        assert!(add_key_arg(&mut k, "p1=bek:/no/such/file").is_err());
        assert!(add_luks_header_arg(&mut k, "p2=/no/such/header").is_err());
    }
}
