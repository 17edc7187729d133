//! firmactl: the operator's command line for firma-transportd.
//!
//! This file is the command line (clap), the dispatch to one module per subcommand in
//! `commands/`, and the exit code. Connecting lives in `connect.rs`, failures and their exit codes
//! in `exit.rs`, printing in `output.rs` (JSON or text) and `format.rs` (text helpers).

// Tests may panic on what they did not expect; the normal build still denies it everywhere.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod commands;
mod connect;
mod exit;
mod format;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use commands::audit::AuditArgs;
use commands::decide::Decision;
use commands::discovery::DiscoveryArgs;
use commands::get::GetArgs;
use commands::history::HistoryArgs;
use commands::marks::Mark;
use commands::peers::PeersArgs;
use commands::send::SendArgs;
use commands::transfers::TransfersArgs;
use commands::watch::WatchArgs;
use firma_ipc::client::CALL_TIMEOUT;

use crate::connect::Session;
use crate::exit::{CliError, Exit, exit_codes_help};
use crate::output::Output;

/// Default deadline for calls that wait on the network (dialling, DHT lookups), which the daemon
/// bounds itself: long enough to get the daemon's own answer rather than a client-side timeout.
const NETWORK_CALL_TIMEOUT: Duration = Duration::from_secs(60);

const LONG_ABOUT: &str = "\
Operate firma-transportd, the P2P transport daemon of Firma-Sign, through its control socket: \
see its status, list and manage peers, steer discovery, read connection history, the topology, \
metrics and the audit log, and follow its events live.

Every command prints text for people, or with --json the control API's own JSON shapes for scripts.";

#[derive(Debug, Parser)]
#[command(
    name = "firmactl",
    version,
    about = "Operate firma-transportd: peers, discovery, history and live events.",
    long_about = LONG_ABOUT,
    propagate_version = true,
    after_help = concat!(
        "Examples:
  firmactl status
  firmactl peers --known
  firmactl connect /ip4/127.0.0.1/tcp/9092/p2p/12D3KooW...
  firmactl --json peers | jq -r '.[].peer_id'
  firmactl watch
  FIRMA_SOCKET=/run/firma/transportd.sock firmactl status

",
        exit_codes_help!()
    )
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes, before or after its name.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
struct Global {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "FIRMA_SOCKET", hide_env_values = true, value_name = "PATH", default_value_os_t = firma_ipc::paths::default_socket())]
    socket: PathBuf,
    /// Print JSON (the control API's own shapes) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for the daemon, e.g. 500ms, 5s, 1m [default: 10s; 60s for connect and find].
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Option<Duration>,
}

/// The peer a command is about.
#[derive(Debug, Args)]
struct PeerArg {
    /// The peer's id, e.g. 12D3KooW... (full ids: firmactl --json peers --known).
    #[arg(value_name = "PEER_ID", value_parser = commands::peer_id_arg)]
    peer_id: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the daemon's peer id, listen addresses, peer counts, discovery and store health.
    #[command(after_help = "Examples:\n  firmactl status\n  firmactl --json status | jq -r .peer_id")]
    Status,
    /// List peers as a table: the connected ones unless told otherwise.
    #[command(after_help = "Examples:\n  firmactl peers\n  firmactl peers --pinned\n  firmactl --json peers --known")]
    Peers(PeersArgs),
    /// Show everything the daemon knows about one peer: addresses, agent, RTT, marks.
    #[command(after_help = "Example:\n  firmactl peer 12D3KooW...")]
    Peer(PeerArg),
    /// Dial a peer by multiaddr or by the id of a peer the daemon already knows.
    #[command(
        long_about = "Dial a peer by multiaddr (with or without /p2p/<id>) or by the id of a peer the daemon \
already knows; the daemon picks that peer's best stored address. Waits until the connection is up.",
        after_help = "Examples:\n  firmactl connect /ip4/127.0.0.1/tcp/9092/p2p/12D3KooW...\n  firmactl connect 12D3KooW...\n  firmactl --timeout 2m connect /ip4/127.0.0.1/udp/9092/quic-v1"
    )]
    Connect {
        /// A multiaddr, e.g. /ip4/127.0.0.1/tcp/9092/p2p/12D3KooW..., or a known peer id.
        #[arg(value_name = "MULTIADDR|PEER_ID")]
        target: String,
    },
    /// Close every connection to a peer (it may dial back: `ban` stops that).
    #[command(after_help = "Example:\n  firmactl disconnect 12D3KooW...")]
    Disconnect(PeerArg),
    /// Pin a peer: keep it connected and redial it after restarts.
    #[command(after_help = "Examples:\n  firmactl pin 12D3KooW...\n  firmactl peers --pinned")]
    Pin(PeerArg),
    /// Remove a peer's pin.
    #[command(after_help = "Example:\n  firmactl unpin 12D3KooW...")]
    Unpin(PeerArg),
    /// Ban a peer: disconnect it and refuse it from now on, across restarts.
    #[command(after_help = "Example:\n  firmactl ban 12D3KooW...")]
    Ban(PeerArg),
    /// Lift a peer's ban.
    #[command(after_help = "Example:\n  firmactl unban 12D3KooW...")]
    Unban(PeerArg),
    /// Show peer discovery (mDNS, DHT); switch mDNS or start a DHT bootstrap.
    #[command(
        long_about = "Show whether local-network discovery (mDNS) and the Kademlia DHT are on. With --mdns, \
switch mDNS; with --bootstrap, start a DHT bootstrap through the configured bootstrap nodes. Prints the state after the change.",
        after_help = "Examples:\n  firmactl discovery\n  firmactl discovery --mdns off\n  firmactl discovery --bootstrap"
    )]
    Discovery(DiscoveryArgs),
    /// Look a peer's addresses up in the DHT.
    #[command(after_help = "Example:\n  firmactl find 12D3KooW...")]
    Find(PeerArg),
    /// List past and open connections, newest first.
    #[command(after_help = "Examples:\n  firmactl history\n  firmactl history --peer 12D3KooW... --limit 10")]
    History(HistoryArgs),
    /// Draw the daemon's view of the network: its links and their RTTs.
    #[command(after_help = "Examples:\n  firmactl topology\n  firmactl --json topology")]
    Topology,
    /// Show the daemon's counters and gauges.
    #[command(after_help = "Example:\n  firmactl metrics")]
    Metrics,
    /// Show the audit log of control-socket calls, newest first.
    #[command(after_help = "Example:\n  firmactl audit --limit 20")]
    Audit(AuditArgs),
    /// Follow the daemon's events live, across daemon restarts, until Ctrl-C.
    #[command(
        long_about = "Follow the daemon's events live, one line per event (with --json one object per line). \
If the daemon goes away, watch says so on stderr and reconnects with backoff. When events were missed (the daemon \
restarted and numbers its events anew, or this watch fell too far behind), it prints a resync notice (with --json \
a {\"resync\":true,...} object) and continues with the newest events. Ctrl-C ends it with exit code 0.",
        after_help = "Examples:\n  firmactl watch\n  firmactl watch --since 0\n  firmactl watch --peer 12D3KooW...\n  firmactl --json watch | jq -c 'select(.event.type == \"peer_connected\")'"
    )]
    Watch(WatchArgs),
    /// Send documents to a peer and follow the transfer until the recipient's signed receipt is back.
    #[command(
        long_about = "Send documents to a peer. firmactl streams each FILE into the daemon over the control socket \
(the daemon never opens your files), creates the transfer, and follows it with a progress bar until the recipient \
returns a signed receipt. If the daemon restarts meanwhile, firmactl reconnects and goes on; an upload cut short \
resumes where it stopped. A recipient that is offline is not an error: the transfer waits in the daemon's outbox \
until the peer is reachable or the deadline passes. Ctrl-C stops following; the transfer goes on in the daemon.",
        after_help = "Examples:\n  firmactl send 12D3KooW... contract.pdf annex.pdf --message 'Please sign by Friday'\n  firmactl send 12D3KooW... contract.pdf --deadline 7d --require-all\n  firmactl --json send --no-wait 12D3KooW... contract.pdf | jq -r .id"
    )]
    Send(SendArgs),
    /// List transfers: all of them, or the incoming, outgoing or unfinished ones.
    #[command(
        after_help = "Examples:\n  firmactl transfers --active\n  firmactl --json transfers --incoming | jq -r '.[] | [.id, .state] | @tsv'"
    )]
    Transfers(TransfersArgs),
    /// Show one transfer: state, progress, documents, recipients and receipt.
    #[command(after_help = "Example:\n  firmactl transfer V1StGXR8_Z5jdHi6B-myT")]
    Transfer(TransferArg),
    /// Accept an incoming transfer that waits for a decision (inbox policy `ask`).
    #[command(after_help = "Example:\n  firmactl accept V1StGXR8_Z5jdHi6B-myT")]
    Accept(TransferArg),
    /// Reject an incoming transfer; the sender is told the reason.
    #[command(after_help = "Example:\n  firmactl reject V1StGXR8_Z5jdHi6B-myT --reason 'wrong contract'")]
    Reject {
        #[command(flatten)]
        transfer: TransferArg,
        /// Why, for the sender.
        #[arg(long, value_name = "TEXT", default_value = "rejected by the recipient's operator")]
        reason: String,
    },
    /// Cancel a transfer that has not finished (an incoming one ends `rejected`: the sender is told).
    #[command(after_help = "Example:\n  firmactl cancel V1StGXR8_Z5jdHi6B-myT")]
    Cancel(TransferArg),
    /// Download a received document to a file (written whole or not at all, its SHA-256 checked).
    #[command(
        after_help = "Examples:\n  firmactl get V1StGXR8_Z5jdHi6B-myT doc-1 -o contract.pdf\n  firmactl get V1StGXR8_Z5jdHi6B-myT contract.pdf -o ~/signed/contract.pdf --force"
    )]
    Get(GetArgs),
    /// Diagnose a setup: socket, permissions, daemon health, ports, mDNS, clock; each problem with its fix.
    #[command(
        long_about = "Checks, without needing the daemon to be up: the control socket (exists, is a socket, mode \
0660 in a directory nobody else can write), whether the daemon answers and speaks this client's API version, the \
store's health, whether the P2P and web ports are free or held by which process, whether an interface can do mDNS, \
and whether the clock is sane. Prints each finding with the exact fix. Exits 5 when it found a problem.",
        after_help = "Examples:\n  firmactl doctor\n  firmactl --json doctor | jq '.[] | select(.level == \"fail\")'\n  firmactl doctor --web 127.0.0.1:8081"
    )]
    Doctor(commands::doctor::DoctorArgs),
}

/// The transfer a command is about.
#[derive(Debug, Args)]
struct TransferArg {
    /// The transfer's id (see: firmactl transfers).
    #[arg(value_name = "TRANSFER_ID")]
    id: String,
}

impl Command {
    /// The deadline used when `--timeout` is not given.
    fn default_timeout(&self) -> Duration {
        match self {
            Command::Connect { .. } | Command::Find(_) => NETWORK_CALL_TIMEOUT,
            _ => CALL_TIMEOUT,
        }
    }
}

/// A humantime duration that is not zero (a zero deadline would fail every call).
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|e| format!("{e} (try e.g. 500ms, 5s, 1m)"))?;
    if timeout.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(timeout)
}

async fn run(cli: Cli, out: Output) -> Result<(), CliError> {
    let timeout = cli.global.timeout.unwrap_or_else(|| cli.command.default_timeout());
    // The doctor must work when the daemon does not: it opens its own connection, if it can.
    let command = match cli.command {
        Command::Doctor(args) => return commands::doctor::run(&cli.global.socket, timeout, out, args).await,
        other => other,
    };
    let session = Session::open(&cli.global.socket, timeout).await?;
    let s = &session;
    match command {
        Command::Status => commands::status::run(s, out).await,
        Command::Peers(args) => commands::peers::run(s, out, args).await,
        Command::Peer(p) => commands::peer::run(s, out, p.peer_id).await,
        Command::Connect { target } => commands::connect::run(s, out, target).await,
        Command::Disconnect(p) => commands::disconnect::run(s, out, p.peer_id).await,
        Command::Pin(p) => commands::marks::run(s, out, p.peer_id, Mark::Pin, true).await,
        Command::Unpin(p) => commands::marks::run(s, out, p.peer_id, Mark::Pin, false).await,
        Command::Ban(p) => commands::marks::run(s, out, p.peer_id, Mark::Ban, true).await,
        Command::Unban(p) => commands::marks::run(s, out, p.peer_id, Mark::Ban, false).await,
        Command::Discovery(args) => commands::discovery::run(s, out, args).await,
        Command::Find(p) => commands::find::run(s, out, p.peer_id).await,
        Command::History(args) => commands::history::run(s, out, args).await,
        Command::Topology => commands::topology::run(s, out).await,
        Command::Metrics => commands::metrics::run(s, out).await,
        Command::Audit(args) => commands::audit::run(s, out, args).await,
        Command::Watch(args) => commands::watch::run(session, out, args).await,
        Command::Send(args) => commands::send::run(session, out, args).await,
        Command::Transfers(args) => commands::transfers::run(s, out, args).await,
        Command::Transfer(t) => commands::transfer::run(s, out, t.id).await,
        Command::Accept(t) => commands::decide::run(s, out, t.id, Decision::Accept).await,
        Command::Reject { transfer, reason } => {
            commands::decide::run(s, out, transfer.id, Decision::Reject { reason }).await
        }
        Command::Cancel(t) => commands::decide::run(s, out, t.id, Decision::Cancel).await,
        Command::Get(args) => commands::get::run(session, out, args).await,
        Command::Doctor(_) => unreachable!("handled before connecting"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap renders help, version and usage errors; only the latter are failures.
            let _ = e.print();
            return if e.use_stderr() { Exit::Usage } else { Exit::Ok }.into();
        }
    };
    let out = Output::new(cli.global.json);
    match run(cli, out).await {
        Ok(()) => Exit::Ok.into(),
        Err(e) => exit::report(&e, out.is_json()).into(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use firma_ipc::types::PeerFilter;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("firmactl").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let cli = parse(&["--socket", "/tmp/a.sock", "--json", "status"]).expect("parses");
        assert_eq!(cli.global.socket, PathBuf::from("/tmp/a.sock"));
        assert!(cli.global.json);
        let cli = parse(&["peers", "--json", "--socket", "/tmp/b.sock", "--timeout", "2s"]).expect("parses");
        assert_eq!(cli.global.socket, PathBuf::from("/tmp/b.sock"));
        assert!(cli.global.json);
        assert_eq!(cli.global.timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn peer_filters_exclude_each_other_and_ids_must_be_whole() {
        let filter = |args: &[&str]| match parse(args).expect("parses").command {
            Command::Peers(p) => p.filter(),
            other => panic!("parsed as {other:?}"),
        };
        assert_eq!(filter(&["peers"]), PeerFilter::Connected);
        assert_eq!(filter(&["peers", "--known"]), PeerFilter::Known);
        assert_eq!(filter(&["peers", "--pinned"]), PeerFilter::Pinned);
        let err = parse(&["peers", "--known", "--pinned"]).expect_err("conflict");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let err = parse(&["peer", "12D3KooW…CVe2Xo"]).expect_err("shortened id");
        assert!(err.to_string().contains("firmactl --json peers --known"), "{err}");
        let err = parse(&["history", "--peer", "12D3KooW…CVe2Xo"]).expect_err("shortened id");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn usage_errors_are_reported_as_such() {
        for bad in [
            &["nonsense"][..],
            &["peer"],
            &["discovery", "--mdns", "maybe"],
            &["status", "--timeout", "0s"],
        ] {
            let err = parse(bad).expect_err("usage error");
            assert!(err.use_stderr(), "{bad:?} should be a usage error");
        }
        // Help is not an error.
        let help = parse(&["--help"]).expect_err("help exits early");
        assert!(!help.use_stderr());
    }

    #[test]
    fn command_arguments() {
        match parse(&["watch", "--since", "7", "--peer", "P"])
            .expect("parses")
            .command
        {
            Command::Watch(w) => assert_eq!((w.since, w.peer.as_deref()), (Some(7), Some("P"))),
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["history", "--peer", "P"]).expect("parses").command {
            Command::History(h) => assert_eq!((h.peer.as_deref(), h.limit), (Some("P"), 50)),
            other => panic!("parsed as {other:?}"),
        }
        match parse(&["connect", "/ip4/127.0.0.1/tcp/9092"]).expect("parses").command {
            c @ Command::Connect { .. } => assert_eq!(c.default_timeout(), NETWORK_CALL_TIMEOUT),
            other => panic!("parsed as {other:?}"),
        }
        assert_eq!(
            parse(&["status"]).expect("parses").command.default_timeout(),
            CALL_TIMEOUT
        );
    }

    #[test]
    fn help_teaches_exit_codes_and_examples() {
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("Exit codes:") && help.contains("3  the daemon could not be reached"),
            "{help}"
        );
        assert!(help.contains("firmactl connect /ip4/127.0.0.1/tcp/9092/p2p/12D3KooW..."));
    }
}
