//! Everything that can make firmactl fail, the exit code each failure maps to, and how a failure
//! is reported (stderr for people, `{"error":{...}}` on stdout for `--json` scripts).
//!
//! The mapping lives here once so that every command fails the same way.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use firma_ipc::client::{ConnectError, error_chain};
use firma_ipc::{ErrorCode, IpcError};
use serde::Serialize;
use tarpc::client::RpcError;

/// firmactl's exit codes; the text of `--help` and cli/README.md describe the same table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The daemon answered with an error.
    DaemonError = 1,
    /// The command line was wrong.
    Usage = 2,
    /// The daemon could not be reached: not running, permission, version mismatch, connection lost.
    Unreachable = 3,
    /// The daemon did not answer in time, or answered that the operation timed out.
    Timeout = 4,
    /// `doctor` found at least one problem (each is printed with its fix).
    Problems = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// The exit-code table, shown at the end of `firmactl --help` (a macro so that `concat!` can
/// join it to the examples at compile time, as clap's attributes want).
macro_rules! exit_codes_help {
    () => {
        "Exit codes:
  0  ok
  1  the daemon answered with an error
  2  usage error: unknown command or bad arguments
  3  the daemon could not be reached: not running, permission denied,
     version mismatch, or the connection was lost
  4  timeout: no answer within --timeout, or the operation itself timed out
  5  doctor found problems (each is printed with its fix)
Errors go to stderr. With --json, failures 1, 3 and 4 also print
{\"error\":{\"code\":..,\"message\":..}} on stdout."
    };
}
pub(crate) use exit_codes_help;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The daemon answered, and the answer was an error.
    #[error("{0}")]
    Daemon(IpcError),
    /// Connecting failed; the message names the socket, the reason and the command to start the daemon.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(
        "lost the connection to the daemon at {path}: {reason}.\n  Check that firma-transportd is still running: firmactl --socket {path} status"
    )]
    ConnectionLost { path: PathBuf, reason: String },
    #[error(
        "the daemon at {path} did not answer within {}.\n  It may be busy or stuck: retry with a longer --timeout, or look at its logs",
        humantime::format_duration(*.timeout)
    )]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("could not write the output: {0}")]
    Output(#[from] io::Error),
    #[error("doctor found {failures} problem(s); each is listed above with its fix")]
    Doctor { failures: usize },
}

impl CliError {
    /// Translate a failed tarpc call on the connection to `path` whose deadline was `timeout`.
    pub fn from_rpc(err: RpcError, path: PathBuf, timeout: Duration) -> Self {
        match err {
            RpcError::DeadlineExceeded => CliError::Timeout { path, timeout },
            RpcError::Server(e) if e.kind == io::ErrorKind::TimedOut => CliError::Timeout { path, timeout },
            // The daemon's tarpc server refused the request (e.g. throttled): it answered, so exit 1.
            RpcError::Server(e) => CliError::Daemon(IpcError::unavailable(format!(
                "the daemon aborted the request: {}",
                e.detail
            ))),
            RpcError::Shutdown | RpcError::Send(_) | RpcError::Channel(_) => CliError::ConnectionLost {
                path,
                reason: error_chain(&err),
            },
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            CliError::Daemon(e) if e.code == ErrorCode::Timeout => Exit::Timeout,
            CliError::Daemon(_) | CliError::Output(_) => Exit::DaemonError,
            CliError::Connect(_) | CliError::ConnectionLost { .. } => Exit::Unreachable,
            CliError::Timeout { .. } => Exit::Timeout,
            CliError::Doctor { .. } => Exit::Problems,
        }
    }

    /// The code a `--json` caller branches on; failures of our own use the API's vocabulary too.
    pub fn code(&self) -> ErrorCode {
        match self {
            CliError::Daemon(e) => e.code,
            CliError::Connect(_) | CliError::ConnectionLost { .. } => ErrorCode::Unavailable,
            CliError::Timeout { .. } => ErrorCode::Timeout,
            CliError::Output(_) => ErrorCode::Internal,
            CliError::Doctor { .. } => ErrorCode::Unavailable,
        }
    }

    /// A reader that went away (`firmactl peers | head`) is not a failure worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

#[derive(Serialize)]
struct JsonError<'a> {
    error: &'a IpcError,
}

/// The `--json` form of a failure: `{"error":{"code":"not_found","message":"..."}}`.
pub fn json_error(err: &CliError) -> String {
    let ipc = match err {
        CliError::Daemon(e) => e.clone(),
        other => IpcError::new(other.code(), other.to_string()),
    };
    serde_json::to_string(&JsonError { error: &ipc })
        .unwrap_or_else(|_| r#"{"error":{"code":"internal","message":"unprintable error"}}"#.to_owned())
}

/// Tell the user about `err` and return the exit code for it.
pub fn report(err: &CliError, json: bool) -> Exit {
    if err.is_broken_pipe() {
        return Exit::Ok;
    }
    // Nothing is left to report a failed write of the report to: ignore it.
    let _ = writeln!(io::stderr().lock(), "error: {err}");
    // The doctor's findings already are its JSON answer.
    if json && !matches!(err, CliError::Output(_) | CliError::Doctor { .. }) {
        let _ = writeln!(io::stdout().lock(), "{}", json_error(err));
    }
    err.exit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> PathBuf {
        PathBuf::from("/tmp/t.sock")
    }

    #[test]
    fn exit_codes_follow_the_table() {
        assert_eq!(
            CliError::Daemon(IpcError::not_found("no such peer")).exit(),
            Exit::DaemonError
        );
        assert_eq!(
            CliError::Daemon(IpcError::timeout("dial timed out")).exit(),
            Exit::Timeout
        );
        let not_running = ConnectError::NotRunning {
            path: path(),
            reason: "no socket file".into(),
        };
        assert_eq!(CliError::from(not_running).exit(), Exit::Unreachable);
        let mismatch = ConnectError::VersionMismatch {
            path: path(),
            daemon: 2,
            client: 1,
        };
        assert_eq!(CliError::from(mismatch).exit(), Exit::Unreachable);
        assert_eq!(
            CliError::from_rpc(RpcError::Shutdown, path(), Duration::from_secs(1)).exit(),
            Exit::Unreachable
        );
        assert_eq!(
            CliError::from_rpc(RpcError::DeadlineExceeded, path(), Duration::from_secs(1)).exit(),
            Exit::Timeout
        );
        assert_eq!(ExitCode::from(Exit::Unreachable), ExitCode::from(3));
    }

    #[test]
    fn json_error_uses_the_ipc_shape() {
        let text = json_error(&CliError::Daemon(IpcError::invalid("bad peer id")));
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(v["error"]["code"], "invalid");
        assert_eq!(v["error"]["message"], "bad peer id");

        let text = json_error(&CliError::Timeout {
            path: path(),
            timeout: Duration::from_secs(2),
        });
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(v["error"]["code"], "timeout");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("/tmp/t.sock") && m.contains("2s"))
        );
    }

    #[test]
    fn broken_pipe_is_quiet() {
        let err = CliError::Output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(err.is_broken_pipe());
        assert_eq!(report(&err, false), Exit::Ok);
    }
}
