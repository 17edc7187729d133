//! sockprobe: a raw connect to a Unix socket, for tests that must connect as another uid (they
//! start it with `Command::uid`). Prints one JSON line saying what happened, always exits 0
//! unless its arguments are wrong.
//!
//! Usage: sockprobe SOCKET
//! It connects, sends one well-formed length-prefixed frame, then reads until EOF, an error or
//! 5 s. A daemon that refuses the caller by its credentials closes without answering: `"read":"eof"`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: sockprobe SOCKET");
        std::process::exit(2);
    };
    let uid = nix::unistd::getuid().as_raw();
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({ "uid": uid, "connect": format!("error: {e}"), "kind": format!("{:?}", e.kind()) })
            );
            return;
        }
    };
    // A tiny MessagePack map; whatever it means, a refused caller must not get an answer to it.
    let payload = [0x81u8, 0xa1, b'x', 0x01];
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    let write = match stream.write_all(&frame) {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4096];
    let read = match stream.read(&mut buf) {
        Ok(0) => "eof".to_owned(),
        Ok(n) => format!("data: {n} bytes"),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            "timeout".to_owned()
        }
        Err(e) => format!("error: {e}"),
    };
    println!(
        "{}",
        serde_json::json!({ "uid": uid, "connect": "ok", "write": write, "read": read })
    );
}
