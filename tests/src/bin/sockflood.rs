//! sockflood: opens many connections to a Unix socket and holds them without a word, for tests
//! of idle-connection floods (they start it with `Command::uid` to flood as another account).
//!
//! Usage: sockflood SOCKET COUNT
//! Prints one JSON line once the connections are open: `{"uid":..,"opened":N,"failed":M,"error":..}`.
//! Then, for each line read on stdin, prints `{"open":N,"closed":M}`: how many of its connections
//! the other side has closed meanwhile. Exits when stdin closes, dropping every connection.

use std::io::{BufRead, ErrorKind, Read};
use std::os::unix::net::UnixStream;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(count)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: sockflood SOCKET COUNT");
        std::process::exit(2);
    };
    // One descriptor per connection: lift the soft limit as far as the hard one allows.
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = (count + 64).min(hard);
        if want > soft {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
    let uid = nix::unistd::getuid().as_raw();
    let mut conns = Vec::new();
    let mut failed = 0u64;
    let mut error = None;
    for _ in 0..count {
        match UnixStream::connect(&path) {
            Ok(s) => conns.push(s),
            Err(e) => {
                failed += 1;
                error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({ "uid": uid, "opened": conns.len(), "failed": failed, "error": error })
    );
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        let closed = conns.iter().filter(|s| is_closed(s)).count();
        println!(
            "{}",
            serde_json::json!({ "open": conns.len() - closed, "closed": closed })
        );
    }
}

/// Whether the other side closed `s`: a non-blocking read sees EOF (or an error), not "nothing yet".
fn is_closed(mut s: &UnixStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // Whatever the other side said (a refusal), keep reading to its end.
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}
