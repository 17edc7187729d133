//! firma-tests: end-to-end suites that start the real binaries in temp dirs and drive them as
//! their users do (the control API, `firmactl`, signals, a js-libp2p peer).
//!
//! - [`harness`]: one `firma-transportd` process ([`Daemon`]), its temp dir, API helpers, Drop that reaps.
//! - [`cli`]: `firmactl` as a child process.
//! - [`wait`]: polling with deadlines, the only way the suites wait.
//! - [`bins`]: where the binaries under test are found.
//! - [`js`]: the js-libp2p interop node (tests/js).
//! - [`netns`]: a pair of network namespaces joined by a veth, for mDNS.
//! - [`accounts`]: local accounts to run daemons as and to attack them from.
//! - [`skip`]: the one way a test skips itself (a failure under CI).

pub mod accounts;
pub mod bins;
pub mod cli;
pub mod harness;
pub mod js;
pub mod machine;
pub mod netns;
pub mod ops;
pub mod skip;
pub mod transfer;
pub mod wait;
pub mod web;

pub use harness::{Daemon, DaemonOpts};
pub use wait::{wait_for, wait_for_value};
