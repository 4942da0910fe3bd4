//! `sse-upstream`: the fast, deterministic upstream of the LLM stream rows
//! of `make bench` (bench/README.md).
//!
//! It answers every request, on keep-alive HTTP/1.1 connections, with one
//! fixed `text/event-stream` body: the events of `--events` (a file of
//! server-sent events, each ending in a blank line), one chunked write per
//! event, as a provider sends tokens, with no delay between them. So the
//! gateway, not the upstream, is what the rows measure, and the bare and
//! gated rows get the same answer byte for byte.
//!
//! Each request it answers is written to `--served-log` as
//! `KEY_ID REQUEST_ID` (its `x-tollgate-key-id` and `x-request-id`
//! headers, `-` when absent): the witness of the benchmark's usage check,
//! as the fast upstream Envoy's access log is. The log is buffered and
//! written out when the process gets SIGTERM or SIGINT.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

/// Largest request head (request line and headers) it reads.
const MAX_HEAD: usize = 64 * 1024;

/// The response head; the body follows in chunks.
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";

#[derive(Debug, Parser)]
#[command(
    name = "sse-upstream",
    about = "A fixed server-sent-events upstream for the benchmark"
)]
struct Args {
    /// Loopback port to listen on.
    #[arg(long)]
    port: u16,
    /// The answer: server-sent events, each ending in a blank line.
    #[arg(long)]
    events: PathBuf,
    /// Where to write `KEY_ID REQUEST_ID` per request answered.
    #[arg(long)]
    served_log: PathBuf,
}

type Served = Arc<Mutex<Vec<u8>>>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let chunks: Arc<Vec<Vec<u8>>> = Arc::new(chunked_events(&std::fs::read(&args.events)?));
    if chunks.is_empty() {
        return Err("--events holds no event".into());
    }
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let served: Served = Arc::default();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, chunks.clone(), served.clone()));
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let lines = std::mem::take(&mut *served.lock().map_err(|_| "served log poisoned")?);
    std::fs::File::create(&args.served_log)?.write_all(&lines)?;
    Ok(())
}

/// The events of `body`, each framed as one HTTP/1.1 chunk; the last one
/// carries the chunked body's end.
fn chunked_events(body: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let end = find(rest, b"\n\n").map_or(rest.len(), |at| at + 2);
        let (event, tail) = rest.split_at(end);
        let mut chunk = format!("{:x}\r\n", event.len()).into_bytes();
        chunk.extend_from_slice(event);
        chunk.extend_from_slice(b"\r\n");
        out.push(chunk);
        rest = tail;
    }
    if let Some(last) = out.last_mut() {
        last.extend_from_slice(b"0\r\n\r\n");
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the server needs from one request's head.
struct Head {
    /// Bytes of the head, its blank line included.
    len: usize,
    body: Framing,
    key_id: String,
    request_id: String,
    close: bool,
}

enum Framing {
    Length(usize),
    Chunked,
}

fn parse_head(buf: &[u8]) -> Option<Head> {
    let len = find(buf, b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(buf.get(..len)?).ok()?;
    let mut head = Head {
        len,
        body: Framing::Length(0),
        key_id: "-".into(),
        request_id: "-".into(),
        close: false,
    };
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => head.body = Framing::Length(value.parse().ok()?),
            "transfer-encoding" if value.eq_ignore_ascii_case("chunked") => {
                head.body = Framing::Chunked
            }
            "x-tollgate-key-id" => head.key_id = value.to_string(),
            "x-request-id" => head.request_id = value.to_string(),
            "connection" => head.close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    Some(head)
}

/// Where a chunked body starting at `buf[0]` ends (trailers not supported),
/// or None while it is incomplete. Err for a malformed body.
fn chunked_end(buf: &[u8]) -> Result<Option<usize>, ()> {
    let mut at = 0;
    loop {
        let Some(line) = buf.get(at..).and_then(|rest| find(rest, b"\r\n")) else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&buf[at..at + line]).map_err(|_| ())?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| ())?;
        at += line + 2;
        if size == 0 {
            return Ok((buf.len() >= at + 2).then_some(at + 2));
        }
        at += size + 2;
        if buf.len() < at {
            return Ok(None);
        }
    }
}

/// One connection: each request read whole, then answered with the events.
async fn serve(mut stream: TcpStream, chunks: Arc<Vec<Vec<u8>>>, served: Served) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut read = [0u8; 16384];
    loop {
        let head = loop {
            if let Some(head) = parse_head(&buf) {
                break head;
            }
            if buf.len() > MAX_HEAD {
                return;
            }
            match stream.read(&mut read).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&read[..n]),
            }
        };
        let end = loop {
            let body = &buf[head.len..];
            let done = match head.body {
                Framing::Length(n) => (body.len() >= n).then_some(head.len + n),
                Framing::Chunked => match chunked_end(body) {
                    Ok(end) => end.map(|e| head.len + e),
                    Err(()) => return,
                },
            };
            if let Some(end) = done {
                break end;
            }
            match stream.read(&mut read).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&read[..n]),
            }
        };
        buf.drain(..end);
        if let Ok(mut log) = served.lock() {
            log.extend_from_slice(format!("{} {}\n", head.key_id, head.request_id).as_bytes());
        }
        if stream.write_all(HEAD).await.is_err() {
            return;
        }
        for chunk in chunks.iter() {
            if stream.write_all(chunk).await.is_err() {
                return;
            }
        }
        if head.close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_chunks_and_the_last_ends_the_body() {
        let chunks = chunked_events(b"data: a\n\ndata: [DONE]\n\n");
        assert_eq!(
            chunks,
            vec![
                b"9\r\ndata: a\n\n\r\n".to_vec(),
                b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n".to_vec()
            ]
        );
    }

    #[test]
    fn a_chunked_request_body_ends_after_its_last_chunk() {
        assert_eq!(chunked_end(b"3\r\nabc\r\n0\r\n\r\nPOST"), Ok(Some(13)));
        assert_eq!(chunked_end(b"3\r\nabc\r\n0\r\n"), Ok(None));
        assert_eq!(chunked_end(b"3\r\nab"), Ok(None));
        assert_eq!(chunked_end(b"zz\r\n"), Err(()));
    }

    #[test]
    fn the_head_names_the_body_and_the_witness() {
        let request: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 5\r\n\
x-tollgate-key-id: 7\r\nx-request-id: abc\r\n\r\nhello";
        let head = parse_head(request).expect("a whole head");
        let body_at = request.len() - 5;
        assert_eq!(
            (head.len, head.key_id.as_str(), head.request_id.as_str()),
            (body_at, "7", "abc")
        );
        assert!(matches!(head.body, Framing::Length(5)));
    }
}
