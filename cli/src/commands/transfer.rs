//! `firmactl transfer ID`: one transfer with its documents, recipients and receipt. Also renders
//! a transfer for the commands that change one (`accept`, `reject`, `cancel`, `send`), so a
//! transfer always looks the same.
//!
//! File names and messages come from peers and are data, not text to trust: before they reach a
//! terminal, control characters are escaped (no escape sequences from a stranger) and length is
//! capped. `--json` prints them exactly as the daemon has them.

use firma_ipc::transfer::{DocumentInfo, TransferInfo};

use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::{Output, key_values, render, table};

/// Longest file name shown in a table; the whole name is in `--json`.
const NAME_WIDTH: usize = 48;
/// Longest message or error shown.
const TEXT_WIDTH: usize = 500;

pub async fn run(session: &Session, out: Output, id: String) -> Result<(), CliError> {
    let info = session.call(|c, ctx| async move { c.transfer(ctx, id).await }).await?;
    let now = format::now_ms();
    out.emit(&info, |t| render_transfer(t, now))
}

/// Text from a peer made safe for a terminal: control characters (NUL, ESC, newlines) escaped,
/// at most `max` characters, cut with an ellipsis.
pub fn display_text(text: &str, max: usize) -> String {
    let mut shown = String::new();
    let mut count = 0;
    for c in text.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        count += piece.chars().count();
        if count > max {
            shown.push('…');
            return shown;
        }
        shown.push_str(&piece);
    }
    shown
}

/// Bytes done of the total, with the percentage: "1.5 MiB of 3.0 MiB (50%)".
pub fn progress_text(done: u64, total: u64) -> String {
    format!(
        "{} of {} ({})",
        format::bytes(done),
        format::bytes(total),
        format::percent(done, total)
    )
}

pub fn render_transfer(t: &TransferInfo, now_ms: u64) -> String {
    let when = |ms: u64| format!("{} ({})", format::timestamp(ms), format::ago(ms, now_ms));
    let mut rows = vec![
        ("transfer", t.id.clone()),
        ("direction", format::transfer_direction(t.direction).to_owned()),
        ("state", crate::commands::follow::describe_state(t)),
        (
            match t.direction {
                firma_ipc::transfer::TransferDirection::Outgoing => "to",
                firma_ipc::transfer::TransferDirection::Incoming => "from",
            },
            t.peer_id.clone(),
        ),
        ("protocol", t.protocol.clone()),
        ("progress", progress_text(t.bytes_done, t.bytes_total)),
        ("created", when(t.created_ms)),
        ("updated", when(t.updated_ms)),
    ];
    if let Some(deadline) = t.deadline_ms {
        let left = if deadline > now_ms {
            format!("in {}", format::duration_ms(deadline - now_ms))
        } else {
            "passed".to_owned()
        };
        rows.push(("deadline", format!("{} ({left})", format::timestamp(deadline))));
    }
    if let Some(message) = &t.message {
        rows.push(("message", display_text(message, TEXT_WIDTH)));
    }
    rows.push((
        "signatures",
        if t.require_all_signatures {
            "all recipients must sign"
        } else {
            "any recipient may sign"
        }
        .to_owned(),
    ));
    if t.chunks_resent > 0 {
        rows.push(("chunks re-sent", t.chunks_resent.to_string()));
    }
    if let Some(r) = &t.receipt {
        let verified = if r.verified { "verified" } else { "NOT verified" };
        rows.push((
            "receipt",
            format!("signed by {} at {}, {verified}", r.signer, format::timestamp(r.at_ms)),
        ));
        rows.push(("manifest sha256", r.manifest_sha256.clone()));
    }
    for r in &t.recipients {
        let docs = if r.document_ids.is_empty() {
            "all documents".to_owned()
        } else {
            r.document_ids.join(", ")
        };
        rows.push(("recipient", format!("{} signs {docs}", r.peer_id)));
    }
    let mut text = key_values(&rows);
    text.push_str("\n\n");
    text.push_str(&render_documents(&t.documents));
    text
}

pub fn render_documents(docs: &[DocumentInfo]) -> String {
    if docs.is_empty() {
        return "no documents".to_owned();
    }
    let mut t = table(["DOCUMENT", "FILE NAME", "SIZE", "TYPE", "STATE", "SHA-256"]);
    for d in docs {
        let state = if d.complete {
            "complete".to_owned()
        } else {
            format::percent(d.bytes_done, d.size)
        };
        t.add_row(vec![
            d.id.clone(),
            display_text(&d.file_name, NAME_WIDTH),
            format::bytes(d.size),
            display_text(&d.mime_type, NAME_WIDTH),
            state,
            d.sha256.clone(),
        ]);
    }
    render(t)
}

#[cfg(test)]
pub(crate) mod tests {
    use firma_ipc::transfer::{ReceiptInfo, RecipientInfo, TransferDirection, TransferState};

    use super::*;

    pub(crate) fn transfer(id: &str, state: TransferState) -> TransferInfo {
        TransferInfo {
            id: id.into(),
            direction: TransferDirection::Incoming,
            state,
            peer_id: "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaaaa".into(),
            documents: vec![DocumentInfo {
                id: "doc-1".into(),
                file_name: "../../x\u{0}<img onerror=alert(1)>\u{1b}[2J".into(),
                size: 2048,
                mime_type: "application/pdf".into(),
                sha256: "ab".repeat(32),
                bytes_done: 1024,
                complete: false,
            }],
            recipients: vec![RecipientInfo {
                peer_id: "12D3KooWBBBB".into(),
                document_ids: vec![],
            }],
            message: Some("please sign\nby Friday".into()),
            deadline_ms: None,
            require_all_signatures: true,
            created_ms: 1_000,
            updated_ms: 2_000,
            bytes_total: 2048,
            bytes_done: 1024,
            protocol: "/firma-sign/transfer/2.0.0".into(),
            receipt: None,
            error: None,
            chunks_resent: 1,
        }
    }

    #[test]
    fn peer_text_cannot_reach_the_terminal_raw() {
        assert_eq!(display_text("a\u{0}b\u{1b}[2J\nc", 100), "a\\u{0}b\\u{1b}[2J\\nc");
        assert_eq!(display_text(&"x".repeat(4096), 10), format!("{}…", "x".repeat(10)));
        assert_eq!(display_text("<img onerror=alert(1)>", 100), "<img onerror=alert(1)>");
    }

    #[test]
    fn one_transfer_reads_as_key_values_and_a_document_table() {
        let mut t = transfer("T1", TransferState::Receiving);
        let text = render_transfer(&t, 3_000);
        assert!(text.contains("transfer        T1"), "{text}");
        assert!(text.contains("from            12D3KooWAAAA"), "{text}");
        assert!(text.contains("1.0 KiB of 2.0 KiB (50%)"), "{text}");
        assert!(text.contains("please sign\\nby Friday"), "{text}");
        assert!(text.contains("chunks re-sent  1"), "{text}");
        assert!(
            text.contains("doc-1     ../../x\\u{0}<img onerror=alert(1)>\\u{1b}[2J  2.0 KiB"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}') && !text.contains('\u{0}'), "{text}");
        t.state = TransferState::Delivered;
        t.receipt = Some(ReceiptInfo {
            signer: "12D3KooWBBBB".into(),
            manifest_sha256: "cd".repeat(32),
            document_sha256: vec!["ab".repeat(32)],
            at_ms: 2_500,
            verified: true,
        });
        let text = render_transfer(&t, 3_000);
        assert!(
            text.contains("delivered (receipt signed by the recipient and verified)"),
            "{text}"
        );
        assert!(text.contains("signed by 12D3KooWBBBB"), "{text}");
    }
}
