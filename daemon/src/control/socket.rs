//! Creating the control socket safely: a directory of our own (0750, never writable by others),
//! a lock file against a second instance (never opened through a symlink),
//! a live-socket probe before a stale socket is unlinked, and a socket created 0660 from the
//! start (interprocess `fchmod`s it before `bind`, so no window with looser permissions exists).
//! Never an abstract socket: those have no permissions at all.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use nix::fcntl::{AT_FDCWD, AtFlags, Flock, FlockArg};
use nix::unistd::{Gid, Uid, fchown, fchownat, geteuid};

/// Holds the instance lock for as long as the daemon runs; dropping it releases the lock.
pub struct InstanceLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

/// The bound control socket and the lock that makes it ours.
pub struct ControlSocket {
    pub listener: Listener,
    pub path: PathBuf,
    pub lock: InstanceLock,
    /// The socket directory was created by this start (so it is ours to hand over).
    pub created_dir: bool,
}

impl ControlSocket {
    /// Gives what this daemon created to the account it drops to: the socket, the lock (through
    /// its descriptor) and the socket directory only if this start created it. A directory that
    /// existed is never chowned (it may be /tmp, or a service manager's).
    pub fn hand_over(&self, uid: Uid, gid: Gid) -> anyhow::Result<()> {
        fchown(&*self.lock._lock, Some(uid), Some(gid))
            .with_context(|| format!("giving lock file {} to uid {uid}", self.lock.path.display()))?;
        fchownat(AT_FDCWD, &self.path, Some(uid), Some(gid), AtFlags::AT_SYMLINK_NOFOLLOW)
            .with_context(|| format!("giving control socket {} to uid {uid}", self.path.display()))?;
        if self.created_dir {
            let dir = socket_dir(&self.path);
            fchownat(AT_FDCWD, dir, Some(uid), Some(gid), AtFlags::AT_SYMLINK_NOFOLLOW)
                .with_context(|| format!("giving socket directory {} to uid {uid}", dir.display()))?;
        }
        Ok(())
    }
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    socket.with_file_name(name)
}

/// Creates the socket directory (0750) if needed; true when this call created it. An existing
/// directory is left as its owner made it (systemd's RuntimeDirectory, or an operator), but it
/// must be owned by us, root, or `account` (the one we drop to), and nobody else may write it:
/// otherwise another local user could have made it, to swap the socket or plant a lock symlink.
pub fn ensure_socket_dir(dir: &Path, account: Option<Uid>) -> anyhow::Result<bool> {
    match fs::metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                bail!(
                    "{} exists and is not a directory; remove it or choose another --socket",
                    dir.display()
                );
            }
            let mode = meta.permissions().mode() & 0o7777;
            let owner = meta.uid();
            let ours = [Some(geteuid()), Some(Uid::from_raw(0)), account]
                .iter()
                .flatten()
                .any(|u| u.as_raw() == owner);
            if !ours {
                bail!(
                    "socket directory {} belongs to uid {owner}, not to this daemon's account or root; another user may have created it to take over the socket. Remove it if you do not trust it, or choose another --socket",
                    dir.display()
                );
            }
            if mode & 0o002 != 0 {
                bail!(
                    "socket directory {} is writable by others (mode {mode:04o}); anyone could replace the socket or plant a lock file. Use a directory of your own (e.g. --socket /run/firma/transportd.sock) or fix it: chmod 750 {}",
                    dir.display(),
                    dir.display()
                );
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .with_context(|| format!("creating socket directory {}", dir.display()))?;
            // The umask may have taken bits away; never more than 0750.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o750))
                .with_context(|| format!("setting mode 0750 on socket directory {}", dir.display()))?;
            Ok(true)
        }
        Err(e) => Err(e).with_context(|| format!("checking socket directory {}", dir.display())),
    }
}

fn take_lock(socket: &Path) -> anyhow::Result<InstanceLock> {
    let path = lock_path(socket);
    // Never through a symlink; new files are created exclusively.
    let new = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&path);
    let file = match new {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path),
        other => other,
    }
    .with_context(|| {
        format!(
            "opening lock file {} (a symlink there is refused; remove it if you did not put it there)",
            path.display()
        )
    })?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        bail!("lock file {} is not a regular file; remove it", path.display());
    }
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, _errno)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            bail!(
                "another firma-transportd{who} already uses {}: its lock {} is held. Stop it first (`firmactl --socket {} status` shows it), or give this one another --socket and --state-dir",
                socket.display(),
                path.display(),
                socket.display()
            );
        }
    };
    // Record our pid for the message above; failure here costs nothing but that message.
    let _ = lock.set_len(0);
    let _ = lock.rewind();
    let _ = write!(lock, "{}", std::process::id());
    Ok(InstanceLock { _lock: lock, path })
}

/// The control socket handed over by a service manager (systemd socket activation, `LISTEN_FDS`),
/// if any. Call before the async runtime starts: it clears `LISTEN_FDS`/`LISTEN_PID`.
pub fn take_inherited() -> anyhow::Result<Option<std::os::unix::net::UnixListener>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let Some(fd) = sd_notify::listen_fds().context("reading LISTEN_FDS")?.next() else {
        return Ok(None);
    };
    #[allow(unsafe_code)]
    // SAFETY: sd_listen_fds hands us fd 3 (SD_LISTEN_FDS_START) for this pid only (LISTEN_PID was
    // checked); nothing else in the process owns or closes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listener = std::os::unix::net::UnixListener::from(owned);
    listener
        .local_addr()
        .context("the socket passed in LISTEN_FDS is not a Unix stream socket")?;
    Ok(Some(listener))
}

/// Serves on a socket the service manager bound (mode and directory are its business), still
/// under our lock so that a second daemon on the same path is refused.
pub fn adopt(path: &Path, inherited: std::os::unix::net::UnixListener) -> anyhow::Result<ControlSocket> {
    let lock = take_lock(path)?;
    inherited
        .set_nonblocking(true)
        .context("setting the inherited control socket non-blocking")?;
    let sync = interprocess::os::unix::uds_local_socket::Listener::from(inherited);
    let uds: interprocess::os::unix::uds_local_socket::tokio::Listener = sync
        .try_into()
        .context("registering the inherited control socket with the runtime")?;
    let listener = Listener::from(uds);
    Ok(ControlSocket {
        listener,
        path: path.to_owned(),
        lock,
        created_dir: false,
    })
}

/// The directory that holds the socket at `path` (`.` for a bare file name).
pub fn socket_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Binds the control socket at `path`, or explains exactly why it cannot. `account`: the uid
/// the daemon will drop to, which may own the socket directory.
pub fn bind(path: &Path, account: Option<Uid>) -> anyhow::Result<ControlSocket> {
    let dir = socket_dir(path);
    let created_dir = ensure_socket_dir(dir, account)?;
    let lock = take_lock(path)?;
    if let Ok(meta) = fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; remove it or choose another --socket",
                path.display()
            );
        }
        // We hold the lock, so a daemon that answers here ignores locks (an old version, or a
        // different lock path): never unlink a live socket.
        if UnixStream::connect(path).is_ok() {
            bail!(
                "a process is already serving {}; stop it first or choose another --socket",
                path.display()
            );
        }
        fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
        tracing::info!(socket = %path.display(), "removed a stale control socket left by a previous run");
    }
    let name = path
        .to_fs_name::<GenericFilePath>()
        .with_context(|| format!("{} is not a usable socket path", path.display()))?;
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o660)
        .reclaim_name(true)
        .create_tokio()
        .with_context(|| format!("binding control socket {}", path.display()))?;
    // bind() masks the mode with the umask, so the socket may start tighter than 0660 (never
    // looser); widen it to exactly 0660 for the control group.
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode 0660 on control socket {}", path.display()))?;
    Ok(ControlSocket {
        listener,
        path: path.to_owned(),
        lock,
        created_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_is_0660_and_second_bind_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run/firma/t.sock");
        let first = bind(&sock, None).unwrap();
        let mode = fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let dmode = fs::metadata(sock.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dmode, 0o750);
        let err = bind(&sock, None).err().unwrap().to_string();
        assert!(err.contains("already uses"), "{err}");
        drop(first);
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock");
        // A socket file nobody listens on, as a SIGKILLed daemon leaves behind.
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        assert!(sock.exists());
        let bound = bind(&sock, None).unwrap();
        assert!(sock.exists());
        drop(bound);
    }
}
