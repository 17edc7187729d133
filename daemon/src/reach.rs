//! Before anything starts: can the account the daemon will run as reach its directories?
//!
//! A daemon dropped to `--user` (or started as that account by a service manager) must be able
//! to traverse every parent of its state and socket directories. Found out late, this looks like
//! `creating directory .../blobs/uploads: Permission denied` with the network already up; found
//! out here, the error names the directory, its owner and mode, and the command that fixes it.
//!
//! The check reads mode bits (owner, group, other), as the kernel applies them to the account's
//! uid and groups; an ACL that grants more is not seen, and then `chmod o+x` is still the fix.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use nix::unistd::{Gid, Group, Uid, User, getegid, geteuid, getgroups};

use crate::privileges::Target;

/// Who will use the directories once the daemon runs.
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gids: Vec<Gid>,
}

impl Account {
    /// The account to drop to, with the one group the drop leaves it (`setgroups([gid])`); or
    /// this process when it keeps its identity; `None` for root staying root (it reaches all).
    pub fn after_start(target: Option<&Target>) -> Option<Account> {
        if let Some(t) = target {
            return Some(Account {
                name: t.name.clone(),
                uid: t.uid,
                gids: vec![t.gid],
            });
        }
        let uid = geteuid();
        if uid.is_root() {
            return None;
        }
        let mut gids = getgroups().unwrap_or_default();
        gids.push(getegid());
        let name = User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        Some(Account { name, uid, gids })
    }

    /// Whether the mode bits of `meta` give this account all of `want` (0o1 x, 0o2 w, 0o4 r).
    fn may(&self, meta: &std::fs::Metadata, want: u32) -> bool {
        let mode = meta.permissions().mode();
        let bits = if meta.uid() == self.uid.as_raw() {
            mode >> 6
        } else if self.gids.iter().any(|g| g.as_raw() == meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        bits & want == want
    }
}

/// Fails when `account` cannot reach `dir`: each existing parent must be searchable by it.
/// `creates`: the account itself will create the missing part of `dir` (it was not started as
/// root), so the deepest existing directory must also be writable by it. `what` and `flag` name
/// the directory and the setting that moves it, e.g. "state directory", "--state-dir".
pub fn check(account: &Account, dir: &Path, creates: bool, what: &str, flag: &str) -> anyhow::Result<()> {
    let dir = std::path::absolute(dir).with_context(|| format!("resolving the {what} {}", dir.display()))?;
    let mut parents: Vec<&Path> = dir.ancestors().skip(1).collect();
    parents.reverse();
    let mut deepest = None;
    for p in parents {
        let meta = match std::fs::metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e).with_context(|| format!("checking {} (a parent of the {what})", p.display())),
        };
        if !meta.is_dir() {
            bail!(
                "{} (a parent of the {what} {}) is not a directory; choose another {flag}",
                p.display(),
                dir.display()
            );
        }
        if !account.may(&meta, 0o1) {
            bail!(refusal(account, &dir, p, &meta, "traverse", "x", what, flag));
        }
        deepest = Some((p.to_path_buf(), meta));
    }
    let target = std::fs::metadata(&dir).ok();
    match (target, deepest) {
        (Some(meta), _) if creates && !account.may(&meta, 0o7) => {
            bail!(refusal(account, &dir, &dir, &meta, "use", "rwx", what, flag))
        }
        (None, Some((p, meta))) if creates && !account.may(&meta, 0o3) => {
            bail!(refusal(
                account,
                &dir,
                &p,
                &meta,
                "create the directory in",
                "wx",
                what,
                flag
            ))
        }
        _ => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn refusal(
    account: &Account,
    dir: &Path,
    blocking: &Path,
    meta: &std::fs::Metadata,
    verb: &str,
    perm: &str,
    what: &str,
    flag: &str,
) -> String {
    let owner = User::from_uid(Uid::from_raw(meta.uid()))
        .ok()
        .flatten()
        .map_or_else(|| meta.uid().to_string(), |u| u.name);
    let group = Group::from_gid(Gid::from_raw(meta.gid()))
        .ok()
        .flatten()
        .map_or_else(|| meta.gid().to_string(), |g| g.name);
    let mode = meta.permissions().mode() & 0o7777;
    let (name, b) = (&account.name, blocking.display());
    let fix = if meta.uid() == account.uid.as_raw() {
        format!("chmod u+{perm} {b}")
    } else {
        format!("chmod o+{perm} {b} (or, for this account only: setfacl -m u:{name}:{perm} {b})")
    };
    format!(
        "the account `{name}` (uid {}) cannot {verb} {b}, so it cannot reach its {what} {}: {b} is owned by {owner}:{group} with mode {mode:04o}. Fix: {fix}, or choose another {flag}",
        account.uid,
        dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untraversable_parent_is_named_with_owner_mode_and_fix() {
        let top = tempfile::tempdir().unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let someone = Account {
            name: "someone".into(),
            uid: Uid::from_raw(4_000_123),
            gids: vec![Gid::from_raw(4_000_123)],
        };
        let dir = top.path().join("state");
        let err = check(&someone, &dir, false, "state directory", "--state-dir")
            .unwrap_err()
            .to_string();
        let t = top.path().display().to_string();
        assert!(err.contains(&format!("cannot traverse {t}")), "{err}");
        assert!(
            err.contains("mode 0700") && err.contains(&format!("chmod o+x {t}")),
            "{err}"
        );
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        check(&someone, &dir, false, "state directory", "--state-dir").unwrap();
        // Creating it needs write access too.
        let err = check(&someone, &dir, true, "state directory", "--state-dir")
            .unwrap_err()
            .to_string();
        assert!(err.contains("chmod o+wx"), "{err}");
    }
}
