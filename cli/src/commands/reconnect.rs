//! A [`Session`] for commands that outlive a daemon restart (`send`, `get`): a call whose
//! connection died is made again on a fresh connection, after reconnecting with backoff.
//!
//! Lost connections are retried, and so, for a few seconds, is `unavailable` (what a daemon that
//! is shutting down answers). Anything else the daemon answers goes back to the caller, who knows
//! whether repeating the call is safe; [`Reconnecting::generation`] tells the caller that a
//! reconnect happened in between (so it can resynchronise its view).

use std::future::Future;
use std::time::Duration;

use firma_ipc::client::Backoff;
use firma_ipc::{ControlClient, ErrorCode, IpcError};
use tarpc::client::RpcError;
use tarpc::context::Context;

use crate::connect::Session;
use crate::exit::CliError;
use crate::output::Output;

const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(100);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);
/// How long a daemon may stay away before the command gives up. The daemon keeps working on the
/// transfer meanwhile, so giving up loses nothing but the progress display.
pub const RECONNECT_LIMIT: Duration = Duration::from_secs(600);
/// Most reconnects one command makes: a daemon that keeps dying under us is not coming back.
const MAX_RECONNECTS: u32 = 100;
/// `unavailable` answers are retried this often, this far apart, before they count as real.
const UNAVAILABLE_RETRIES: u32 = 20;
const UNAVAILABLE_DELAY: Duration = Duration::from_millis(250);

pub struct Reconnecting {
    session: Session,
    out: Output,
    backoff: Backoff,
    generation: u32,
}

impl Reconnecting {
    pub fn new(session: Session, out: Output) -> Self {
        Self {
            session,
            out,
            backoff: Backoff::new(RECONNECT_FIRST_DELAY, RECONNECT_MAX_DELAY),
            generation: 0,
        }
    }

    /// How many times the connection was replaced so far.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Make a call with the session's deadline, reconnecting and calling again while the
    /// connection is lost. `f` is called once per attempt.
    pub async fn call<T, F, Fut>(&mut self, f: F) -> Result<T, CliError>
    where
        F: FnMut(ControlClient, Context) -> Fut,
        Fut: Future<Output = Result<Result<T, IpcError>, RpcError>>,
    {
        let deadline = self.session.timeout();
        self.call_within(deadline, f).await
    }

    /// Like [`Reconnecting::call`] with an explicit deadline (long polls).
    pub async fn call_within<T, F, Fut>(&mut self, deadline: Duration, mut f: F) -> Result<T, CliError>
    where
        F: FnMut(ControlClient, Context) -> Fut,
        Fut: Future<Output = Result<Result<T, IpcError>, RpcError>>,
    {
        let mut unavailable = 0;
        loop {
            match self.session.call_within(deadline, &mut f).await {
                Err(CliError::ConnectionLost { .. }) => self.reconnect().await?,
                Err(CliError::Daemon(e)) if e.code == ErrorCode::Unavailable && unavailable < UNAVAILABLE_RETRIES => {
                    unavailable += 1;
                    tokio::time::sleep(UNAVAILABLE_DELAY).await;
                }
                other => return other,
            }
        }
    }

    /// Replace the connection, waiting (bounded by [`RECONNECT_LIMIT`]) for the daemon to come back.
    pub async fn reconnect(&mut self) -> Result<(), CliError> {
        if self.generation >= MAX_RECONNECTS {
            return Err(CliError::Daemon(IpcError::unavailable(format!(
                "the connection to the daemon at {} was lost {MAX_RECONNECTS} times; giving up",
                self.session.path().display()
            ))));
        }
        let out = self.out;
        out.notice("the daemon went away, reconnecting…");
        let path = self.session.path().to_owned();
        let timeout = self.session.timeout();
        let mut last_reason = String::new();
        let opened = Session::open_with_retry(&path, timeout, &mut self.backoff, |e| {
            // Say why we are still waiting, but only when the reason changes.
            let reason = e.to_string().lines().next().unwrap_or_default().to_owned();
            if reason != last_reason {
                out.notice(&format!("  still waiting: {reason}"));
                last_reason = reason;
            }
        });
        self.session = match tokio::time::timeout(RECONNECT_LIMIT, opened).await {
            Ok(session) => session?,
            Err(_) => {
                return Err(CliError::Timeout {
                    path,
                    timeout: RECONNECT_LIMIT,
                });
            }
        };
        self.generation += 1;
        out.notice(&format!("reconnected to the daemon at {}", path.display()));
        Ok(())
    }
}
