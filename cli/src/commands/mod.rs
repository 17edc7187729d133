//! One module per subcommand. Each parses its own arguments, makes its call through
//! [`crate::connect::Session`] and hands the answer with a text renderer to [`crate::output::Output`].

pub mod audit;
pub mod connect;
pub mod decide;
pub mod disconnect;
pub mod discovery;
pub mod doctor;
pub mod find;
pub mod follow;
pub mod get;
pub mod history;
pub mod marks;
pub mod metrics;
pub mod peer;
pub mod peers;
pub mod progress;
pub mod reconnect;
pub mod send;
pub mod status;
pub mod topology;
pub mod transfer;
pub mod transfers;
pub mod upload;
pub mod watch;

/// Value parser for arguments that name a peer: catches the shortened ids the tables print
/// (`12D3KooW…CVe2Xo`) before the daemon rejects them with a less helpful message.
pub fn peer_id_arg(text: &str) -> Result<String, String> {
    if text.contains('…') {
        return Err("this is a shortened peer id as tables show it; the full ids are in: \
                    firmactl --json peers --known"
            .to_owned());
    }
    if text.trim().is_empty() {
        return Err("a peer id cannot be empty".to_owned());
    }
    Ok(text.to_owned())
}
