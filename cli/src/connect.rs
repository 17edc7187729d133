//! The one place firmactl talks to the daemon: open a version-checked connection with a deadline,
//! and make calls whose transport failures, deadlines and daemon errors all become [`CliError`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use firma_ipc::client::{self, Backoff, ConnectError, Connection};
use firma_ipc::types::Role;
use firma_ipc::{ControlClient, IpcError};
use tarpc::client::RpcError;
use tarpc::context::Context;

use crate::exit::CliError;

/// How firmactl introduces itself in `hello` (the daemon logs and audits it).
pub const CLIENT_NAME: &str = "firmactl";

/// An open connection plus the deadline every call on it gets.
pub struct Session {
    conn: Connection,
    timeout: Duration,
}

impl Session {
    /// Connect to `path` as an operator, giving up after `timeout`.
    pub async fn open(path: &Path, timeout: Duration) -> Result<Self, CliError> {
        match tokio::time::timeout(timeout, client::connect(path, CLIENT_NAME, Role::Operator)).await {
            Ok(conn) => Ok(Self { conn: conn?, timeout }),
            Err(_) => Err(CliError::Timeout {
                path: path.to_owned(),
                timeout,
            }),
        }
    }

    /// Connect to `path`, retrying with `backoff` for as long as the daemon is merely absent;
    /// `on_retry` sees each failed attempt. Used by commands that outlive a daemon restart.
    pub async fn open_with_retry(
        path: &Path,
        timeout: Duration,
        backoff: &mut Backoff,
        on_retry: impl FnMut(&ConnectError),
    ) -> Result<Self, CliError> {
        let conn = client::connect_with_retry(path, CLIENT_NAME, Role::Operator, backoff, on_retry).await?;
        Ok(Self { conn, timeout })
    }

    pub fn path(&self) -> &Path {
        &self.conn.path
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Make one call with the session's deadline, e.g.
    /// `session.call(|c, ctx| async move { c.status(ctx).await })`.
    ///
    /// The closure gets its own handle of the client (a cheap clone) because tarpc's generated
    /// methods return futures that borrow the client.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, CliError>
    where
        F: FnOnce(ControlClient, Context) -> Fut,
        Fut: Future<Output = Result<Result<T, IpcError>, RpcError>>,
    {
        self.call_within(self.timeout, f).await
    }

    /// Like [`Session::call`] with an explicit deadline, for long polls that outlast the default.
    pub async fn call_within<T, F, Fut>(&self, deadline: Duration, f: F) -> Result<T, CliError>
    where
        F: FnOnce(ControlClient, Context) -> Fut,
        Fut: Future<Output = Result<Result<T, IpcError>, RpcError>>,
    {
        match f(self.conn.client.clone(), client::ctx(deadline)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CliError::Daemon(e)),
            Err(e) => Err(CliError::from_rpc(e, self.path_buf(), deadline)),
        }
    }

    fn path_buf(&self) -> PathBuf {
        self.conn.path.clone()
    }
}
