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

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[tokio::test]
    async fn returns_when_the_condition_holds() -> anyhow::Result<()> {
        let start = Instant::now();
        let took = wait_for(Duration::from_secs(5), "a clock", || async move {
            start.elapsed() >= POLL * 3
        })
        .await?;
        anyhow::ensure!(took >= POLL * 3 && took < Duration::from_secs(2), "took {took:?}");
        Ok(())
    }

    #[tokio::test]
    async fn fails_after_the_deadline_naming_what() -> anyhow::Result<()> {
        let start = Instant::now();
        let err = wait_for(Duration::from_millis(100), "the impossible", || async { false }).await;
        let msg = format!("{:#}", err.err().context("a false condition was met")?);
        anyhow::ensure!(msg.contains("the impossible"), "{msg}");
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(2),
            "overran the deadline: {:?}",
            start.elapsed()
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_hanging_check_does_not_outlive_the_deadline() -> anyhow::Result<()> {
        let start = Instant::now();
        let r = wait_for(Duration::from_millis(100), "a hang", std::future::pending::<bool>).await;
        anyhow::ensure!(
            r.is_err() && start.elapsed() < Duration::from_secs(2),
            "{r:?} after {:?}",
            start.elapsed()
        );
        Ok(())
    }
}
