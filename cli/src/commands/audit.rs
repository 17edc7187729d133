//! `firmactl audit`: who called what on the control socket, newest first.

use clap::Args;
use firma_ipc::types::AuditRecord;

use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::{Output, render, table};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// At most this many records (the daemon may cap it lower).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: u32,
}

pub async fn run(session: &Session, out: Output, args: AuditArgs) -> Result<(), CliError> {
    let limit = args.limit;
    let records = session.call(|c, ctx| async move { c.audit(ctx, limit).await }).await?;
    out.emit(&records, |r| render_table(r))
}

fn render_table(records: &[AuditRecord]) -> String {
    if records.is_empty() {
        return "the audit log is empty".to_owned();
    }
    let mut t = table(["TIME", "UID", "PID", "ACTION", "RESULT", "DETAIL"]);
    for r in records {
        t.add_row(vec![
            format::timestamp(r.at_ms),
            r.uid.to_string(),
            r.pid.map_or_else(|| format::NONE.to_owned(), |p| p.to_string()),
            r.action.clone(),
            r.result.clone(),
            r.detail.clone(),
        ]);
    }
    render(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_record() {
        let r = AuditRecord {
            at_ms: 0,
            uid: 1000,
            pid: None,
            action: "ban".into(),
            detail: "12D3KooWx".into(),
            result: "ok".into(),
        };
        let text = render_table(&[r]);
        assert_eq!(
            text.lines().nth(1),
            Some("1970-01-01T00:00:00Z  1000  -    ban     ok      12D3KooWx")
        );
    }
}
