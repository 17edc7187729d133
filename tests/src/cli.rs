//! Running `firmactl` as a user would: a separate process, its exit code, stdout and stderr.

use std::time::Duration;

use anyhow::{Context, bail};

/// How long one `firmactl` invocation may take before the test calls it hung.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// What a finished `firmactl` run left behind.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Require exit code 0.
    pub fn ok(self) -> anyhow::Result<Self> {
        if self.code != 0 {
            bail!(
                "firmactl exited {}\nstdout: {}\nstderr: {}",
                self.code,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }

    /// stdout parsed as one JSON document.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(self.stdout.trim()).with_context(|| {
            format!(
                "firmactl stdout is not JSON: {:?} (stderr: {})",
                self.stdout, self.stderr
            )
        })
    }
}

/// Run `firmactl ARGS...` with no inherited `FIRMA_*` variables; kill it after [`CLI_TIMEOUT`].
pub async fn run_cli(args: &[&str]) -> anyhow::Result<CliOutput> {
    run(args, None).await
}

/// Like [`run_cli`], as the account `uid`/`gid` (the test runs as root; std clears the
/// supplementary groups), for what the daemon lets another account do.
pub async fn run_cli_as(uid: u32, gid: u32, args: &[&str]) -> anyhow::Result<CliOutput> {
    run(args, Some((uid, gid))).await
}

async fn run(args: &[&str], account: Option<(u32, u32)>) -> anyhow::Result<CliOutput> {
    use std::os::unix::process::CommandExt;
    let bin = crate::bins::firmactl()?;
    let mut cmd = std::process::Command::new(&bin);
    crate::harness::clear_firma_env(&mut cmd);
    cmd.args(args).stdin(std::process::Stdio::null());
    if let Some((uid, gid)) = account {
        cmd.uid(uid).gid(gid);
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("firmactl {args:?} did not finish within {CLI_TIMEOUT:?}"))?
        .with_context(|| format!("running {}", bin.display()))?;
    Ok(CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
