//! Running the servers tests need as the right user.

use std::path::PathBuf;

/// uid/gid to run servers as: `postgres` when we are root (pgbouncer refuses root).
pub(crate) fn service_user() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id postgres");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("numeric id")
    };
    Some((id("-u"), id("-g")))
}

pub(crate) fn pgbouncer_binary() -> PathBuf {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("pgbouncer is installed (scripts/stack up installs it)")
}

pub(crate) fn port_of(url: &str) -> u16 {
    url::Url::parse(url).expect("valid url").port().unwrap_or(5432)
}
