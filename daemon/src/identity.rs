//! The node's persistent identity: an ed25519 key in `<state_dir>/identity.key` (protobuf
//! encoding, mode 0600), created on first start, so the PeerId survives every restart.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use libp2p::identity::Keypair;

pub const KEY_FILE: &str = "identity.key";

pub fn load_or_create(state_dir: &Path) -> anyhow::Result<Keypair> {
    let path = state_dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let mode = fs::metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                bail!(
                    "identity key {} is readable by others (mode {:o}); fix it with: chmod 600 {}",
                    path.display(),
                    mode & 0o777,
                    path.display()
                );
            }
            Keypair::from_protobuf_encoding(&bytes).with_context(|| {
                format!(
                    "identity key {} is not a valid libp2p key; restore it from a backup, or move it aside to start with a new PeerId",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().context("encoding the new identity key")?;
            // Write to a temp file created 0600 and rename, so a crash never leaves half a key.
            // The name is predictable, so whatever is there (a crash's leftover, or a symlink
            // someone planted) is unlinked, never followed, and the file is created new
            // (O_EXCL, O_NOFOLLOW): the key cannot be written through a link into another file.
            let tmp = state_dir.join(format!("{KEY_FILE}.tmp"));
            match fs::remove_file(&tmp) {
                Ok(()) => tracing::warn!(path = %tmp.display(), "removed a leftover temporary identity key"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(&bytes)
                .and_then(|_| f.sync_all())
                .with_context(|| format!("writing {}", tmp.display()))?;
            fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            tracing::info!(path = %path.display(), "created a new identity key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading identity key {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn planted_temp_key_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(format!("{KEY_FILE}.tmp"))).unwrap();
        let key = load_or_create(dir.path()).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let mode = fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "the victim's mode changed");
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(key.public().to_peer_id(), again.public().to_peer_id());
        assert!(
            !fs::symlink_metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        fs::set_permissions(dir.path().join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
