//! Where results go: JSON (the API types' own serde form, for scripts and tests) or text for
//! people (aligned tables and key/value lists). Commands hand a value and a text renderer to
//! [`Output::emit`]; apart from the failure report (exit.rs), nothing else writes to stdout.

use std::io::{self, Write};

use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

use crate::exit::CliError;

/// Space between table columns.
const COLUMN_GAP: u16 = 2;

#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Print `value` as one pretty JSON document, or as the text `human` makes of it.
    pub fn emit<T: Serialize + ?Sized>(&self, value: &T, human: impl FnOnce(&T) -> String) -> Result<(), CliError> {
        let text = if self.json {
            serde_json::to_string_pretty(value).map_err(io::Error::other)?
        } else {
            human(value)
        };
        self.line(&text)
    }

    /// Print `value` as compact JSON on one line (streams: one object per line).
    pub fn json_line<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), CliError> {
        let text = serde_json::to_string(value).map_err(io::Error::other)?;
        self.line(&text)
    }

    /// A remark for the person at the terminal (progress, reconnects) on stderr, so that stdout
    /// stays pure data in every mode. A failed write to stderr has nowhere to be reported: ignored.
    pub fn notice(&self, text: &str) {
        let _ = writeln!(io::stderr().lock(), "{text}");
    }

    /// Print one line of text. Flushed at once, so a `watch` piped into another program is live.
    pub fn line(&self, text: &str) -> Result<(), CliError> {
        let mut out = io::stdout().lock();
        writeln!(out, "{text}")?;
        out.flush()?;
        Ok(())
    }
}

/// A borderless table with a header row, laid out for a terminal or a pipe alike: columns are
/// as wide as their widest cell and nothing wraps (lines of `grep`-able text beat folded cells).
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    table
}

/// Render a table built by [`table`]: no leading padding, a gap between columns, no trailing blanks.
pub fn render(mut table: Table) -> String {
    for column in table.column_iter_mut() {
        column.set_padding((0, COLUMN_GAP));
    }
    table.trim_fmt()
}

/// Aligned `key  value` lines. A value with several lines keeps them under the value column.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in rows {
        let mut lines = value.lines();
        let first = lines.next().unwrap_or("");
        text.push_str(format!("{key:<width$}  {first}").trim_end());
        text.push('\n');
        for more in lines {
            text.push_str(&format!("{:<width$}  {more}\n", ""));
        }
    }
    text.truncate(text.trim_end().len());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_without_borders() {
        let mut t = table(["PEER", "RTT"]);
        t.add_row(vec!["a…b".to_owned(), "1.0 ms".to_owned()]);
        t.add_row(vec!["longer-id".to_owned(), "-".to_owned()]);
        let text = render(t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, vec!["PEER       RTT", "a…b        1.0 ms", "longer-id  -"]);
    }

    #[test]
    fn key_values_align_and_indent() {
        let text = key_values(&[
            ("peer id", "12D3".to_owned()),
            ("listening", "/ip4/a\n/ip4/b".to_owned()),
            ("agent", String::new()),
        ]);
        assert_eq!(text, "peer id    12D3\nlistening  /ip4/a\n           /ip4/b\nagent");
    }
}
