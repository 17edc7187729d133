//! Waiting for a condition with a deadline: the only way the suites wait. A condition is polled
//! every [`POLL`] until it holds or the deadline passes; nothing sleeps for a fixed time hoping
//! that something has happened meanwhile.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;

/// How often a condition is checked. Short, so that measured durations are precise to about this.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns true; returns how long that took. Fails naming `what` after `deadline`.
pub async fn wait_for<F, Fut>(deadline: Duration, what: &str, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_value(deadline, what, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await
    .map(|((), took)| took)
}

/// Polls `check` until it returns `Some`; returns the value and how long it took.
pub async fn wait_for_value<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> anyhow::Result<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let end = start + deadline;
    loop {
        // A check that hangs must not outlive the deadline either.
        let left = end.saturating_duration_since(Instant::now());
        if let Ok(Some(v)) = tokio::time::timeout(left, check()).await {
            return Ok((v, start.elapsed()));
        }
        if Instant::now() >= end {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}
