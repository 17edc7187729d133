//! Connecting to the daemon: the socket, the tarpc client, the version handshake, and errors
//! that tell a person which socket was tried, why it failed, and what to run next.

use std::path::{Path, PathBuf};
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::tokio::Stream as _;
use interprocess::local_socket::{GenericFilePath, ToFsName};
use tarpc::context;

use crate::IpcError;
use crate::service::{API_VERSION, ControlClient};
use crate::types::{Hello, Role};

/// Why a client could not talk to the daemon. Every variant's message names the socket.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "firma-transportd is not running at {path} ({reason}).\n  Start it with: firma-transportd --socket {path}\n  or pick another socket with --socket PATH / FIRMA_SOCKET"
    )]
    NotRunning { path: PathBuf, reason: String },
    #[error(
        "permission denied on {path}.\n  Run as root, as the daemon's user, or as a member of its control group (default `firma`): sudo usermod -aG firma $USER"
    )]
    PermissionDenied { path: PathBuf },
    #[error(
        "the daemon at {path} speaks control API {daemon}, this client speaks {client}.\n  Install matching versions of firma-transportd and its clients"
    )]
    VersionMismatch { path: PathBuf, daemon: u32, client: u32 },
    /// The daemon answered `hello` with an error: over a connection limit, or denied.
    #[error("the daemon at {path} refused this client: {error}")]
    Refused { path: PathBuf, error: IpcError },
    #[error(
        "the daemon at {path} closed the connection without answering ({detail}).\n  Either this account may not use the control socket (root, the daemon's user, its control group, control.web_users), or the daemon is at a connection limit; its log says which"
    )]
    Closed { path: PathBuf, detail: String },
    #[error("could not talk to the daemon at {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "{path} is served by uid {uid}, which is not root, you, nor the account that owns the socket's directory; another local user may be impersonating firma-transportd, so nothing was sent.\n  Check who listens (ss -xlp | grep {path}) and the directory (ls -ld {dir})"
    )]
    ForeignServer { path: PathBuf, uid: u32, dir: PathBuf },
}

impl ConnectError {
    /// The daemon said no for good (as opposed to "not now": a connection limit).
    pub fn is_denied(&self) -> bool {
        matches!(self, ConnectError::Refused { error, .. } if error.code == crate::ErrorCode::Denied)
    }
}

/// A connected, version-checked control client.
pub struct Connection {
    pub client: ControlClient,
    pub hello: Hello,
    pub path: PathBuf,
}

/// A request context with a deadline `timeout` from now.
pub fn ctx(timeout: Duration) -> context::Context {
    let mut ctx = context::current();
    ctx.deadline = std::time::Instant::now() + timeout;
    ctx
}

/// Default deadline for ordinary calls.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect to the daemon's control socket and do the version handshake.
pub async fn connect(path: &Path, client_name: &str, want_role: Role) -> Result<Connection, ConnectError> {
    let name = path.to_fs_name::<GenericFilePath>().map_err(|e| ConnectError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let stream = match Stream::connect(name).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ConnectError::PermissionDenied { path: path.to_owned() });
        }
        Err(e) => {
            let reason = match e.kind() {
                std::io::ErrorKind::NotFound => "no socket file".to_owned(),
                std::io::ErrorKind::ConnectionRefused => "socket file exists but nobody listens".to_owned(),
                _ => e.to_string(),
            };
            return Err(ConnectError::NotRunning {
                path: path.to_owned(),
                reason,
            });
        }
    };
    check_server(path, &stream)?;
    let transport = crate::codec::transport(stream);
    let client = ControlClient::new(tarpc::client::Config::default(), transport).spawn();
    let hello = match client
        .hello(ctx(CALL_TIMEOUT), API_VERSION, client_name.to_owned(), want_role)
        .await
    {
        Ok(Ok(hello)) => hello,
        Ok(Err(error)) => {
            return Err(ConnectError::Refused {
                path: path.to_owned(),
                error,
            });
        }
        // The daemon closes connections it refuses by credentials before decoding a frame; our
        // `hello` may then fail to be written (Channel) or find the connection gone (Shutdown).
        Err(e @ (tarpc::client::RpcError::Shutdown | tarpc::client::RpcError::Channel(_))) => {
            return Err(ConnectError::Closed {
                path: path.to_owned(),
                detail: error_chain(&e),
            });
        }
        Err(e) => {
            return Err(ConnectError::Io {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    if hello.api_version != API_VERSION {
        return Err(ConnectError::VersionMismatch {
            path: path.to_owned(),
            daemon: hello.api_version,
            client: API_VERSION,
        });
    }
    Ok(Connection {
        client,
        hello,
        path: path.to_owned(),
    })
}

/// `err` and its sources joined: tarpc's own messages hide the useful part (the I/O error).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Exponential backoff for reconnect loops: `initial`, doubling up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            next: initial,
            initial,
            max,
        }
    }
    /// The delay before the next attempt; each call doubles the one after it.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Connect, retrying with `backoff` until it works or a non-retryable error (version mismatch,
/// permission, a denial) comes back; a connection limit is waited out. `on_retry` sees each failure, e.g. to report "reconnecting".
pub async fn connect_with_retry(
    path: &Path,
    client_name: &str,
    want_role: Role,
    backoff: &mut Backoff,
    mut on_retry: impl FnMut(&ConnectError),
) -> Result<Connection, ConnectError> {
    loop {
        match connect(path, client_name, want_role).await {
            Ok(c) => {
                backoff.reset();
                return Ok(c);
            }
            Err(e @ (ConnectError::VersionMismatch { .. } | ConnectError::PermissionDenied { .. })) => return Err(e),
            Err(e @ ConnectError::Refused { .. }) if e.is_denied() => return Err(e),
            Err(e) => {
                on_retry(&e);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Refuses a server that nobody we trust put there (SO_PEERCRED of the listening process): root,
/// this user, or an account root set up, i.e. the owner of the socket or its directory when
/// the directory above that is root's or ours and writable by nobody else. A socket directory
/// another user made in /tmp fails that test, whatever that user serves in it.
fn check_server(path: &Path, stream: &Stream) -> Result<(), ConnectError> {
    use interprocess::local_socket::traits::StreamCommon as _;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(uid) = stream.peer_creds().ok().and_then(|c| c.euid()) else {
        return Ok(());
    };
    let me = nix::unistd::geteuid().as_raw();
    if uid == 0 || uid == me {
        return Ok(());
    }
    let guarded = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| (m.uid() == 0 || m.uid() == me) && m.permissions().mode() & 0o022 == 0)
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let owned_by = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.uid() == uid);
    let by_dir = owned_by(dir) && dir.parent().is_some_and(guarded);
    let by_file = owned_by(path) && guarded(dir);
    if by_dir || by_file {
        return Ok(());
    }
    Err(ConnectError::ForeignServer {
        path: path.to_owned(),
        uid,
        dir: dir.to_owned(),
    })
}
