//! `firmactl send PEER FILE...`: stream each file into the daemon, create the transfer, and
//! follow it with a progress bar until the recipient's signed receipt is back.
//!
//! Steps, each surviving a daemon restart (see [`Reconnecting`]): upload every file (resuming at
//! the offset the daemon holds), create the transfer (made again only if the daemon does not
//! already list it), then follow its events. The daemon does the sending; this command can stop
//! at any time (`--no-wait`, Ctrl-C) and the transfer goes on.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use firma_ipc::transfer::{NewTransfer, RecipientSpec, StagedDocument, TransferFilter, TransferInfo};

use crate::commands::follow::{failure, follow};
use crate::commands::progress::Progress;
use crate::commands::reconnect::Reconnecting;
use crate::commands::transfer::render_transfer;
use crate::commands::upload::{LocalFile, upload};
use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::Output;

/// Most documents in one transfer: far more than anyone signs at once, few enough to list.
const MAX_FILES: usize = 100;

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The recipient's peer id (full ids: firmactl --json peers --known).
    #[arg(value_name = "PEER_ID", value_parser = crate::commands::peer_id_arg)]
    pub peer: String,
    /// The documents to send.
    #[arg(value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// A note for the recipient.
    #[arg(long, short, value_name = "TEXT")]
    pub message: Option<String>,
    /// Give up delivering after this long, e.g. 30m, 2h, 7d (default: the daemon's).
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_timeout)]
    pub deadline: Option<Duration>,
    /// Every recipient must sign every document.
    #[arg(long)]
    pub require_all: bool,
    /// Return as soon as the transfer is created; the daemon delivers it in the background.
    #[arg(long)]
    pub no_wait: bool,
}

pub async fn run(session: Session, out: Output, args: SendArgs) -> Result<(), CliError> {
    if args.files.len() > MAX_FILES {
        return Err(CliError::Daemon(firma_ipc::IpcError::invalid(format!(
            "{} files given, at most {MAX_FILES} go in one transfer",
            args.files.len()
        ))));
    }
    // Every file is checked before the first byte is sent.
    let files = args
        .files
        .iter()
        .map(|p| LocalFile::inspect(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rc = Reconnecting::new(session, out);

    let mut staged = Vec::with_capacity(files.len());
    for file in &files {
        let progress = Progress::bytes(out, "upload", file.size);
        progress.message(&short_name(&file.file_name));
        staged.push(upload(&mut rc, out, file, &progress).await?);
    }

    // Events from here on belong to this transfer's story.
    let head = rc.call(|c, ctx| async move { c.status(ctx).await }).await?.event_head;
    let new = NewTransfer {
        documents: staged.iter().map(|d| d.id.clone()).collect(),
        recipients: vec![RecipientSpec {
            peer_id: args.peer.clone(),
            document_ids: Vec::new(),
        }],
        message: args.message.clone(),
        deadline_ms: args
            .deadline
            .map(|d| format::now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        require_all_signatures: args.require_all,
    };
    let created = create(&mut rc, &new, &staged).await?;
    if args.no_wait {
        let now = format::now_ms();
        return out.emit(&created, |t| {
            format!("created transfer {}\n\n{}", t.id, render_transfer(t, now))
        });
    }

    let progress = Progress::bytes(out, "send", created.bytes_total);
    let followed = tokio::select! {
        r = follow(&mut rc, out, &created.id, head, &progress) => Some(r?),
        () = interrupted() => None,
    };
    progress.clear();
    let Some(info) = followed else {
        out.notice(&format!(
            "stopped following; transfer {} goes on in the daemon (see: firmactl transfer {})",
            created.id, created.id
        ));
        let now = format::now_ms();
        return out.emit(&created, |t| render_transfer(t, now));
    };
    if let Some(e) = failure(&info) {
        return Err(e);
    }
    let now = format::now_ms();
    out.emit(&info, |t| render_transfer(t, now))
}

/// Create the transfer. When the connection dies during the call, the daemon may or may not have
/// created it, and the call is made again on the new connection. Afterwards the outgoing
/// transfers are searched for this one: a copy made by the lost call is cancelled, and if the
/// second call was refused (the first had already taken the staged documents) the first is used,
/// so that one `send` never delivers twice.
async fn create(rc: &mut Reconnecting, new: &NewTransfer, staged: &[StagedDocument]) -> Result<TransferInfo, CliError> {
    let generation = rc.generation();
    let started = format::now_ms();
    let first = rc
        .call(|c, ctx| {
            let new = new.clone();
            async move { c.send_transfer(ctx, new).await }
        })
        .await;
    if rc.generation() == generation {
        return first;
    }
    // The call went out again on a new connection; the first attempt may have created one too.
    let list = rc
        .call(|c, ctx| async move { c.transfers(ctx, TransferFilter::Outgoing).await })
        .await?;
    let mine: Vec<&TransferInfo> = list
        .iter()
        .filter(|t| t.created_ms + 1_000 >= started && same_transfer(t, new, staged))
        .collect();
    match first {
        // The new connection created it; a copy the lost connection created is cancelled, so
        // that the recipient gets the documents once.
        Ok(made) => {
            for dup in mine.iter().filter(|t| t.id != made.id) {
                let id = dup.id.clone();
                rc.call(|c, ctx| {
                    let id = id.clone();
                    async move { c.cancel_transfer(ctx, id).await }
                })
                .await?;
            }
            Ok(made)
        }
        // Typically: the staged documents were already taken by the transfer the lost call made.
        Err(e) => match mine.as_slice() {
            [only] => Ok((*only).clone()),
            _ => Err(e),
        },
    }
}

/// Whether `t` is the transfer `new` of the `staged` documents.
fn same_transfer(t: &TransferInfo, new: &NewTransfer, staged: &[StagedDocument]) -> bool {
    let to = new.recipients.first().map(|r| r.peer_id.as_str());
    Some(t.peer_id.as_str()) == to
        && t.message == new.message
        && t.documents.len() == staged.len()
        && t.documents
            .iter()
            .zip(staged)
            .all(|(d, s)| d.sha256 == s.sha256 && d.size == s.size && d.file_name == s.file_name)
}

fn short_name(name: &str) -> String {
    crate::commands::transfer::display_text(name, 24)
}

/// Ctrl-C while following; without a handler the default action still ends the process.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        send: SendArgs,
    }

    fn parse(args: &[&str]) -> Result<SendArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("send").chain(args.iter().copied())).map(|c| c.send)
    }

    #[test]
    fn peer_files_and_options() {
        let a = parse(&[
            "12D3KooWX",
            "a.pdf",
            "b.pdf",
            "-m",
            "hi",
            "--deadline",
            "2h",
            "--require-all",
        ])
        .unwrap();
        assert_eq!(a.peer, "12D3KooWX");
        assert_eq!(a.files, vec![PathBuf::from("a.pdf"), PathBuf::from("b.pdf")]);
        assert_eq!(a.message.as_deref(), Some("hi"));
        assert_eq!(a.deadline, Some(Duration::from_secs(7200)));
        assert!(a.require_all && !a.no_wait);
        assert!(parse(&["12D3KooWX"]).is_err(), "a file is required");
        assert!(parse(&["12D3KooW…abc", "a.pdf"]).is_err(), "shortened ids are refused");
        assert!(parse(&["12D3KooWX", "a.pdf", "--deadline", "0s"]).is_err());
    }
}
