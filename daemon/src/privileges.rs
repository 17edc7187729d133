//! Least privilege: started as root, the daemon opens its store and binds its socket (and any
//! privileged listen port) first, then hands its files to the service account and drops to it
//! for good (setgroups, setgid, setuid), and proves root cannot be regained.
//!
//! glibc's `setuid` changes every thread of the process (it broadcasts the change), so doing
//! this after the tokio runtime started is correct; raw syscalls would change one thread only.

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, bail};
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, User, fchown, fchownat, getegid, geteuid, setgid, setgroups, setuid};

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

/// How deep `hand_over_tree` descends; the state dir is a few levels deep, never this.
const MAX_TREE_DEPTH: usize = 32;

/// Hands the tree under `root` to the target account without ever following a symlink: each
/// directory is opened `O_NOFOLLOW|O_DIRECTORY` relative to its parent's descriptor and every
/// entry is chowned with `fchownat(AT_SYMLINK_NOFOLLOW)`. A directory swapped for a symlink
/// meanwhile (the service account owns the tree and could try) is not entered, and a symlink is
/// at most chowned itself, never its target. `root` itself is the operator's choice and may be
/// a symlink.
pub fn hand_over_tree(target: &Target, root: &Path) -> anyhow::Result<()> {
    let fd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", root.display()))?;
    fchown(&fd, Some(target.uid), Some(target.gid))
        .with_context(|| format!("giving {} to user {}", root.display(), target.name))?;
    hand_over_dir(target, fd, root, 0)
}

fn hand_over_dir(target: &Target, dir: OwnedFd, path: &Path, depth: usize) -> anyhow::Result<()> {
    if depth >= MAX_TREE_DEPTH {
        bail!(
            "{} is nested deeper than {MAX_TREE_DEPTH} levels; not handing it over",
            path.display()
        );
    }
    let listing = dir.try_clone().with_context(|| format!("reading {}", path.display()))?;
    let mut entries = Dir::from_fd(listing).with_context(|| format!("reading {}", path.display()))?;
    for entry in entries.iter() {
        let entry = entry.with_context(|| format!("reading {}", path.display()))?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let child = path.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        match fchownat(
            &dir,
            name,
            Some(target.uid),
            Some(target.gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("giving {} to user {}", child.display(), target.name)),
        }
        if entry.file_type() != Some(Type::Directory) {
            continue;
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match openat(&dir, name, flags, Mode::empty()) {
            Ok(sub) => hand_over_dir(target, sub, &child, depth + 1)?,
            // Swapped for a symlink or removed since it was listed: nothing of ours to hand over.
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => {
                tracing::warn!(path = %child.display(), "a directory in the state dir changed while it was handed over; left alone");
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", child.display())),
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// What the compromised service account runs: swap every `dN` directory with its `lN`
    /// symlink (renameat2 RENAME_EXCHANGE) in a loop until killed.
    const SWAPPER: &str = "
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
d, n = sys.argv[1].encode(), int(sys.argv[2])
while True:
    for i in range(n):
        libc.renameat2(-100, d + b'/d%d' % i, -100, d + b'/l%d' % i, 2)
";

    /// The attack of a compromised service account on a root start: a process of that account
    /// keeps swapping directories of the state dir with symlinks to a root-owned file while the
    /// tree is handed over again. The file must stay root's. (Needs root, as the hand-over does,
    /// and Debian's /usr/bin/python3 for the attacker's renameat2.)
    #[test]
    fn swapping_a_directory_for_a_symlink_never_chowns_its_target() {
        use std::os::unix::fs::PermissionsExt;
        if !geteuid().is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let Ok(Some(nobody)) = User::from_name("nobody") else {
            eprintln!("skipped: no user nobody");
            return;
        };
        let target = Target {
            name: nobody.name,
            uid: nobody.uid,
            gid: nobody.gid,
        };
        let top = tempfile::tempdir().unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let victim = top.path().join("victim");
        std::fs::write(&victim, b"root's").unwrap();
        let state = top.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let pairs = 64;
        for i in 0..pairs {
            std::fs::create_dir(state.join(format!("d{i}"))).unwrap();
            std::os::unix::fs::symlink(&victim, state.join(format!("l{i}"))).unwrap();
        }
        // The first start hands the tree over; from then on the account can swap inside it.
        hand_over_tree(&target, &state).unwrap();
        let mut attacker = std::process::Command::new("setpriv")
            .arg(format!("--reuid={}", target.uid))
            .arg(format!("--regid={}", target.gid))
            .args(["--clear-groups", "/usr/bin/python3", "-c", SWAPPER])
            .arg(&state)
            .arg(pairs.to_string())
            .spawn()
            .unwrap();
        // Until the attacker is really swapping, so the hand-overs below run under attack.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !(0..pairs).any(|i| std::fs::symlink_metadata(state.join(format!("d{i}"))).is_ok_and(|m| m.is_symlink()))
        {
            assert!(attacker.try_wait().unwrap().is_none(), "the attacker's swapper exited");
            assert!(std::time::Instant::now() < deadline, "the attacker never swapped");
            std::thread::yield_now();
        }
        for _ in 0..300 {
            hand_over_tree(&target, &state).unwrap();
            if std::fs::metadata(&victim).unwrap().uid() != 0 {
                break;
            }
        }
        attacker.kill().unwrap();
        attacker.wait().unwrap();
        let meta = std::fs::metadata(&victim).unwrap();
        assert_eq!(meta.uid(), 0, "the symlink's target was handed to nobody");
        // The tree itself was handed over.
        assert_eq!(std::fs::metadata(&state).unwrap().uid(), target.uid.as_raw());
    }
}
