//! The one way a test skips itself when this machine cannot run it (no root, no namespaces, a
//! missing system tool). Outside CI the test prints why and passes; under CI (`CI` set to
//! anything but empty, `0` or `false`) the same reason fails it, so a CI machine that lost a
//! capability cannot turn a suite green by not running it. scripts/test.sh installs every tool.

use std::fmt::Display;

/// Whether this run is CI's, which must run every suite.
pub fn under_ci() -> bool {
    means_ci(std::env::var("CI").ok().as_deref())
}

fn means_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false" | "no"))
}

/// Skip the calling test for `reason`: `Ok(())` to return from it, or under CI the error that
/// fails it. Use as `return skip(...)` (or `skip(...)?` before returning a "nothing to do" value).
pub fn skip(reason: impl Display) -> anyhow::Result<()> {
    if under_ci() {
        anyhow::bail!("this test cannot run here, and under CI (CI=true) a skip is a failure: {reason}");
    }
    println!("SKIP: {reason}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ci_values() {
        for (value, ci) in [
            (Some("true"), true),
            (Some("1"), true),
            (Some("false"), false),
            (Some("0"), false),
            (Some(""), false),
            (None, false),
        ] {
            assert_eq!(super::means_ci(value), ci, "CI={value:?}");
        }
    }
}
