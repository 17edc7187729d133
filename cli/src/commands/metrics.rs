//! `firmactl metrics`: the daemon's counters and gauges.

use firma_ipc::types::{MetricKind, Metrics};

use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::{Output, render, table};

pub async fn run(session: &Session, out: Output) -> Result<(), CliError> {
    let metrics = session.call(|c, ctx| async move { c.metrics(ctx).await }).await?;
    out.emit(&metrics, render_table)
}

fn render_table(m: &Metrics) -> String {
    let mut t = table(["NAME", "KIND", "VALUE", "MEANING"]);
    for metric in &m.metrics {
        let kind = match metric.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        t.add_row(vec![
            metric.name.clone(),
            kind.to_owned(),
            format::metric_value(metric.value),
            metric.help.clone(),
        ]);
    }
    render(t)
}
