//! A disk or snapshot named by its Azure resource id: read its encryption
//! settings, get a read SAS for the run (`beginGetAccess`), and give it
//! back at the end (`endGetAccess`), also after an error or a signal (the
//! session keeps the grant and hands it to its signal handler).

use std::io::Write;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use flr_arm::{ArmClient, DiskAccess, ResourceId, Revoked};
use flr_config::Config;

use crate::OpsError;

/// What the resource said, for the key chain.
#[derive(Debug, Clone)]
pub struct ResourceFacts {
    /// The resource JSON (`az snapshot show` shape).
    pub json: String,
    /// `snapshot NAME` / `disk NAME`.
    pub label: String,
}

/// Requests read access to the disk or snapshot `arg` names. Messages go
/// to `err`: the resource's name, the lifetime asked, and that (and how) it
/// will be revoked; `mount` (which may outlive the SAS) says how long it can
/// read. The caller keeps the grant, revokes it with [`end_access`] when the
/// run ends, and from its signal handler.
pub fn begin_access(
    arg: &str,
    cfg: &Config,
    keep: bool,
    mount: bool,
    err: &mut dyn Write,
) -> Result<(Arc<DiskAccess>, ResourceFacts), OpsError> {
    let id = ResourceId::parse(arg).map_err(OpsError::Usage)?;
    let client = ArmClient::new(&cfg.azure).map_err(|e| arm_error(&id, "set up", e))?;
    let resource = client.get(&id).map_err(|e| arm_error(&id, "read", e))?;
    let kind = id.kind.name();
    let secs = cfg.azure.access_seconds;
    writeln!(
        err,
        "flr: {kind} {}: requesting read access for {secs} s (beginGetAccess); {}",
        id.name,
        if keep {
            "--keep-access: flr will NOT revoke it at the end".to_string()
        } else {
            "flr revokes it when it ends (endGetAccess), also after an error or Ctrl-C".to_string()
        }
    )?;
    if mount {
        writeln!(
            err,
            "flr: {kind} {}: the mount can read for {secs} s, while the SAS is valid; set [azure] access_seconds for a longer one",
            id.name
        )?;
    }
    let label = format!("{kind} {}", id.name);
    let access = DiskAccess::grant(client, id.clone(), secs, keep)
        .map_err(|e| arm_error(&id, "grant read access to", e))?;
    Ok((
        Arc::new(access),
        ResourceFacts {
            json: resource.to_string(),
            label,
        },
    ))
}

fn arm_error(id: &ResourceId, what: &str, e: flr_arm::ArmError) -> OpsError {
    let msg = format!("{} {}: cannot {what} it: {e}", id.kind.name(), id.path());
    match e {
        // Throttled past the retries, failing or unreachable: try later.
        e if e.is_retryable() => OpsError::Retryable(msg),
        flr_arm::ArmError::Service {
            status: 400..=499, ..
        } => OpsError::Usage(msg),
        _ => OpsError::Source(msg),
    }
}

/// Blob options for `loc`: unchanged when the location carries a SAS;
/// else with an Entra ID bearer for Storage as `[azure]` configures it
/// (`credential = "none"` reads anonymously, for public containers).
pub fn storage_auth(
    loc: &flr_blob::BlobLocation,
    opts: &flr_blob::BlobOptions,
    cfg: &Config,
) -> Result<flr_blob::BlobOptions, OpsError> {
    let mut opts = opts.clone();
    if loc.has_sas() || opts.bearer.is_some() {
        return Ok(opts);
    }
    opts.ca_file = cfg.azure.ca_file.clone();
    let bearer = flr_azauth::Bearer::from_config(
        &cfg.azure,
        &cfg.azure.storage_token_env,
        flr_azauth::STORAGE_RESOURCE,
    )
    .map_err(|e| OpsError::Usage(format!("{}: {e}", loc.shown())))?;
    opts.bearer = Some(Arc::new(bearer));
    Ok(opts)
}

/// The SAS URL for `arg` when it names the resource `access` was granted
/// for.
pub fn sas_for(access: &DiskAccess, arg: &str) -> Option<String> {
    let id = ResourceId::parse(arg).ok()?;
    (id.path().eq_ignore_ascii_case(access.id().path())).then(|| access.sas_url().to_string())
}

/// Revokes the access (unless kept) and says so on `err`. Safe to call more
/// than once (and from a signal handler): only the first call revokes.
pub fn end_access(a: &DiskAccess, err: &mut dyn Write) {
    let what = format!("{} {}", a.id().kind.name(), a.id().name);
    let line = match a.revoke() {
        Revoked::Now => format!("flr: {what}: read access revoked (endGetAccess)"),
        Revoked::Already => return,
        Revoked::Kept(until) => format!(
            "flr: {what}: read access KEPT (--keep-access) until {}; revoke it with `az {} revoke-access --ids {}`",
            utc(until),
            a.id().kind.name(),
            a.id().path()
        ),
        Revoked::Failed(e, until) => format!(
            "flr: {what}: WARNING: endGetAccess failed, the read SAS stays valid until {}: {e}; revoke it with `az {} revoke-access --ids {}`",
            utc(until),
            a.id().kind.name(),
            a.id().path()
        ),
    };
    let _ = writeln!(err, "{line}");
}

/// Standard error without `std`'s lock (for a signal handler: the command's
/// thread may hold the lock for its whole run).
pub(crate) struct RawStderr;

impl Write for RawStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::os::fd::AsFd;
        Ok(rustix::io::write(std::io::stderr().as_fd(), buf)?)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `2026-11-28T07:15:00Z`.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(1_795_849_199)),
            "2026-11-28T06:59:59Z"
        );
    }
}
