//! Default locations of the control socket, state and config, in user mode and system mode.
//!
//! System mode is a daemon started by root or by a service manager; user mode is everyone else.
//! These are defaults only: every binary lets `--socket`, `--state-dir`, `--config` and the
//! matching `FIRMA_*` variables override them.

use std::path::PathBuf;

/// True when the defaults should be the system-service ones (`/run/firma`, `/var/lib/firma`).
pub fn system_mode() -> bool {
    nix::unistd::geteuid().is_root()
}

fn per_user_tmp() -> PathBuf {
    std::env::temp_dir().join(format!("firma-{}", nix::unistd::geteuid()))
}

/// `$XDG_RUNTIME_DIR/firma`, or `/run/firma` for a system service.
pub fn runtime_dir() -> PathBuf {
    if system_mode() {
        return PathBuf::from("/run/firma");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("firma"),
        _ => per_user_tmp(),
    }
}

/// The control socket clients connect to when neither `--socket` nor `FIRMA_SOCKET` is given.
pub fn default_socket() -> PathBuf {
    runtime_dir().join("transportd.sock")
}

/// `$XDG_STATE_HOME/firma` (default `~/.local/state/firma`), or `/var/lib/firma` for a system service.
pub fn default_state_dir() -> PathBuf {
    if system_mode() {
        return PathBuf::from("/var/lib/firma");
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("firma");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/firma"),
        None => per_user_tmp().join("state"),
    }
}

/// `$XDG_CONFIG_HOME/firma/transportd.toml`, or `/etc/firma/transportd.toml` for a system service.
pub fn default_config_file() -> PathBuf {
    if system_mode() {
        return PathBuf::from("/etc/firma/transportd.toml");
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("firma/transportd.toml");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".config/firma/transportd.toml"),
        None => per_user_tmp().join("transportd.toml"),
    }
}
