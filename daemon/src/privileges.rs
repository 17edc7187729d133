//! Least privilege: started as root, the daemon binds its socket and listeners and opens its
//! store first, then hands its files to the service account and drops to it for good
//! (setgroups, setgid, setuid), and proves root cannot be regained.
//!
//! glibc's `setuid` changes every thread of the process (it broadcasts the change), so doing
//! this after the tokio runtime started is correct; raw syscalls would change one thread only.

use std::path::Path;

use anyhow::{Context, bail};
use nix::unistd::{Gid, Uid, User, chown, getegid, geteuid, setgid, setgroups, setuid};

/// What `drop_root` did, for the startup log.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    NotRoot,
    KeptRoot,
    Dropped { user: String, uid: u32, gid: u32 },
}

/// The account to drop to, looked up before anything is handed over.
pub struct Target {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Decides what will happen, before any file is created, so a missing account fails fast.
pub fn plan(user: &str, allow_root: bool) -> anyhow::Result<Option<Target>> {
    if !geteuid().is_root() || allow_root {
        return Ok(None);
    }
    let Some(u) = User::from_name(user).with_context(|| format!("looking up user `{user}`"))? else {
        bail!(
            "started as root, but the account `{user}` to drop to does not exist. Create it (`systemd-sysusers`, or `useradd --system --no-create-home {user}`), choose another with --user NAME, or keep root with --allow-root (not recommended)"
        );
    };
    Ok(Some(Target {
        name: u.name,
        uid: u.uid,
        gid: u.gid,
    }))
}

/// Gives the daemon's own files to the target account so it can keep using them after the drop.
pub fn hand_over(target: &Target, paths: &[&Path]) -> anyhow::Result<()> {
    for p in paths {
        chown(*p, Some(target.uid), Some(target.gid))
            .with_context(|| format!("giving {} to user {}", p.display(), target.name))?;
    }
    Ok(())
}

/// Hands `paths` (recursively for directories) to the target account.
pub fn hand_over_tree(target: &Target, root: &Path) -> anyhow::Result<()> {
    hand_over(target, &[root])?;
    let entries = std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))?;
    for entry in entries {
        let path = entry.with_context(|| format!("reading {}", root.display()))?.path();
        let meta = std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if meta.is_dir() {
            hand_over_tree(target, &path)?;
        } else if !meta.file_type().is_symlink() {
            hand_over(target, &[path.as_path()])?;
        }
    }
    Ok(())
}

/// Drops to `target`, or reports why the process stays as it is.
pub fn drop_root(target: Option<Target>) -> anyhow::Result<Outcome> {
    let Some(t) = target else {
        return Ok(if geteuid().is_root() {
            Outcome::KeptRoot
        } else {
            Outcome::NotRoot
        });
    };
    setgroups(&[t.gid]).context("setgroups")?;
    setgid(t.gid).context("setgid")?;
    setuid(t.uid).context("setuid")?;
    // Refuse to go on unless the drop is irreversible.
    if setuid(Uid::from_raw(0)).is_ok() || geteuid().is_root() || getegid().as_raw() == 0 && t.gid.as_raw() != 0 {
        bail!("dropped to {} but root could be regained; refusing to run", t.name);
    }
    // No setuid binary we might ever exec can raise privileges again.
    nix::sys::prctl::set_no_new_privs().context("PR_SET_NO_NEW_PRIVS")?;
    Ok(Outcome::Dropped {
        user: t.name,
        uid: t.uid.as_raw(),
        gid: t.gid.as_raw(),
    })
}
