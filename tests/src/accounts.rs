//! Local accounts for the privilege and local-attack suites: a daemon runs as one, an attacker
//! acts as another. Created with `useradd` on first use (the suites run as root) and kept.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nix::unistd::{Gid, Uid, User, chown};

use crate::wait::wait_for_value;

/// The account the dropped and account-started daemons run as.
pub const SERVICE: &str = "firma-e2e";
/// Another local user, for attacks on the daemon's files and socket.
pub const ATTACKER: &str = "firma-e2e-evil";

/// How long concurrent suites may contend for /etc/passwd's lock.
const CREATE_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The account `name`, created (system account, own group, no home, no login) if missing.
/// Suites run in parallel processes: a `useradd` that loses the race or finds the passwd file
/// locked is simply tried again until the account exists.
pub async fn ensure(name: &str) -> anyhow::Result<Account> {
    let what = format!("local account `{name}` to exist");
    let (acct, _) = wait_for_value(CREATE_DEADLINE, &what, || async {
        if let Ok(Some(u)) = User::from_name(name) {
            return Some(Account {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            });
        }
        let _ = tokio::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
            .await;
        None
    })
    .await?;
    Ok(acct)
}

impl Account {
    /// A harness wrapper that starts the daemon directly as this account, as a service manager
    /// does with `User=` (setpriv execs it: the pid stays the daemon's).
    pub fn wrapper(&self) -> Vec<String> {
        vec![
            "/usr/bin/setpriv".to_owned(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--clear-groups".to_owned(),
            "--".to_owned(),
        ]
    }

    /// Creates `dir` owned by this account with `mode`, as systemd's StateDirectory= and
    /// RuntimeDirectory= prepare them.
    pub fn make_dir(&self, dir: &Path, mode: u32) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        chown(dir, Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)))
            .with_context(|| format!("chown {} to {}", dir.display(), self.name))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", dir.display()))
    }
}
