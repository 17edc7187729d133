//! The js-libp2p node of tests/js/interop.mjs as a child process: commands go to its stdin as
//! JSON lines, its JSON-line answers and events are collected by a reader thread. Dropping a
//! [`JsNode`] kills and reaps it (closing stdin alone also stops it).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::wait::wait_for_value;

/// Node startup includes loading js-libp2p; generous on a busy 2-core machine.
pub const JS_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Most lines kept from one node; the interop suites produce a few dozen.
const MAX_LINES: usize = 10_000;

/// tests/js, where package.json and interop.mjs live.
pub fn js_dir() -> PathBuf {
    crate::bins::workspace_root().join("tests").join("js")
}

pub struct JsNode {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    next_id: u64,
    pub peer_id: String,
    pub addrs: Vec<String>,
}

impl JsNode {
    /// Start a node listening on 127.0.0.1 port 0 with agent `agent` (`name/version`).
    pub async fn spawn(agent: &str) -> anyhow::Result<JsNode> {
        Self::spawn_script("interop.mjs", agent).await
    }

    /// Like [`JsNode::spawn`] with another script of tests/js that speaks the same stdin/stdout
    /// protocol (e.g. `v1-peer.mjs`, the upstream-style transfer peer).
    pub async fn spawn_script(script: &str, agent: &str) -> anyhow::Result<JsNode> {
        let dir = js_dir();
        if !dir.join("node_modules").join("libp2p").is_dir() {
            bail!(
                "js-libp2p is not installed in {}.\n  Run: (cd tests/js && npm ci)  (scripts/test.sh does it)",
                dir.display()
            );
        }
        let mut child = Command::new("node")
            .arg(script)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--agent", agent])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `node {script}` (is Node.js 20+ installed?)"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let lines = lines.clone();
            // A thread, not a task: the pipe is blocking and ends when the process does.
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let v = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "unparsed": line }));
                    let mut l = lines.lock().unwrap_or_else(|p| p.into_inner());
                    if l.len() < MAX_LINES {
                        l.push(v);
                    }
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut l = stderr.lock().unwrap_or_else(|p| p.into_inner());
                    if l.len() < MAX_LINES {
                        l.push(line);
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        let mut node = JsNode {
            child,
            stdin,
            lines,
            stderr,
            next_id: 1,
            peer_id: String::new(),
            addrs: Vec::new(),
        };
        let listening = node
            .wait_line(JS_READY_TIMEOUT, "the js node to listen", |v| v["event"] == "listening")
            .await?;
        node.peer_id = listening["peer_id"].as_str().unwrap_or_default().to_owned();
        node.addrs = listening["addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        if node.peer_id.is_empty() || node.addrs.is_empty() {
            bail!("js node announced no peer id or address: {listening}");
        }
        Ok(node)
    }

    /// The first TCP listen address, with `/p2p/`.
    pub fn addr(&self) -> &str {
        self.addrs.first().map(String::as_str).unwrap_or_default()
    }

    /// Every JSON line the node printed so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }

    /// Wait for the first printed line that matches `pred`.
    pub async fn wait_line(
        &mut self,
        deadline: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let lines = self.lines.clone();
        let res = wait_for_value(deadline, what, || {
            let found = lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|v| pred(v))
                .cloned();
            async move { found }
        })
        .await;
        match res {
            Ok((v, _)) => Ok(v),
            Err(e) => {
                let exited = self.child.try_wait().ok().flatten();
                Err(e.context(format!(
                    "js node (exited: {exited:?}) printed {:?}\nstderr: {}",
                    self.lines(),
                    self.stderr()
                )))
            }
        }
    }

    /// Send one command and wait for its answer; fails when the answer says `ok: false`.
    pub async fn request(&mut self, mut cmd: Value, deadline: Duration) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = json!(id);
        let stdin = self.stdin.as_mut().context("js node stdin is closed")?;
        writeln!(stdin, "{cmd}")?;
        stdin.flush()?;
        let answer = self
            .wait_line(deadline, &format!("js answer to {cmd}"), |v| v["id"] == json!(id))
            .await?;
        if answer["ok"] != json!(true) {
            bail!("js node failed {cmd}: {answer}");
        }
        Ok(answer)
    }
}

impl Drop for JsNode {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!(
            "----- js node {} -----\nstdout: {:?}\nstderr: {}",
            self.peer_id,
            self.lines(),
            self.stderr()
        );
    }
}
