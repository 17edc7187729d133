//! One module per subcommand. Each parses its own arguments, makes its call through
//! [`crate::connect::Session`] and hands the answer with a text renderer to [`crate::output::Output`].

pub mod audit;
pub mod connect;
pub mod disconnect;
pub mod discovery;
pub mod find;
pub mod history;
pub mod marks;
pub mod metrics;
pub mod peer;
pub mod peers;
pub mod status;
pub mod topology;
pub mod watch;
