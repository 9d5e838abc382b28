//! `http [PORT]`: a small HTTP/1.1 server on `std::net` (default port
//! 8080), for the network tests. Also runs on the host (`cargo run -p
//! image-http`).
//!
//! Contract (the network tests rely on it exactly):
//!
//! - Once listening, prints `http: listening on 0.0.0.0:PORT`.
//! - One thread per connection (named `http-conn`); requests are served in
//!   order on it. HTTP/1.1 keeps the connection open unless the request
//!   says `Connection: close`; HTTP/1.0 closes it unless it says
//!   `Connection: keep-alive`. Every response has a `Content-Length`.
//! - `GET /` (or `HEAD /`): 200, `text/html`, a page holding
//!   `<title>Spindle</title>`.
//! - `GET /bytes/N` (N <= 2^31): 200, `application/octet-stream`, N bytes
//!   where byte i is `i % 251` ([`pattern_byte`]).
//! - Any other path: 404. A method other than GET or HEAD: 405. A
//!   malformed request line or header, a header section over 16 KiB, or a
//!   chunked request body: 400, and the connection is closed.
//! - When a connection closes: `http: client ADDR done, R requests`.
//! - A bad PORT is a usage error (exit status 2).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_PORT: u16 = 8080;
/// The largest header section accepted.
const MAX_HEAD: usize = 16 * 1024;
/// The largest `/bytes/N`.
const MAX_BYTES: u64 = 1 << 31;
/// How long an idle keep-alive connection is kept.
const IDLE: Duration = Duration::from_secs(60);

const PAGE: &str = "<!DOCTYPE html>\n<html>\n<head><title>Spindle</title></head>\n<body>\n\
<h1>Spindle</h1>\n<p>Served by a static Linux program running on Spindle.</p>\n\
<p><a href=\"/bytes/1000000\">/bytes/1000000</a>: a million bytes of a pattern.</p>\n\
</body>\n</html>\n";

/// Byte `i` of every `/bytes/N` body.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

fn main() -> ExitCode {
    let port = match image_support::port_argument("http", DEFAULT_PORT) {
        Ok(port) => port,
        Err(code) => return code,
    };
    image_support::serve_forever("http", port, "http-conn", serve)
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    /// The connection stays open after the response.
    keep_alive: bool,
    /// Bytes of request body to read and discard.
    body: u64,
}

/// Why no request could be read.
#[derive(Debug)]
enum ReadError {
    /// The client closed (or went idle) between requests.
    Closed,
    /// A malformed request: answer 400 and close.
    Bad(&'static str),
    Io(std::io::Error),
}

/// Reads one line (up to `\n`) of at most `*budget` bytes.
fn read_line(r: &mut impl BufRead, budget: &mut usize) -> Result<Option<String>, ReadError> {
    let mut line = Vec::new();
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        if chunk.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Bad("the connection ended inside a line"))
            };
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if take > *budget {
            return Err(ReadError::Bad("the request head is too large"));
        }
        *budget -= take;
        line.extend_from_slice(&chunk[..take]);
        r.consume(take);
        if done {
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            return String::from_utf8(line)
                .map(Some)
                .map_err(|_| ReadError::Bad("a request line that is not UTF-8"));
        }
    }
}

fn read_request(r: &mut impl BufRead) -> Result<Request, ReadError> {
    let mut budget = MAX_HEAD;
    // Empty lines before a request line are allowed (RFC 9112 2.2).
    let first = loop {
        match read_line(r, &mut budget) {
            Ok(None) => return Err(ReadError::Closed),
            Ok(Some(l)) if l.is_empty() => continue,
            Ok(Some(l)) => break l,
            Err(ReadError::Io(e))
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock
                        | ErrorKind::TimedOut
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                ) && budget == MAX_HEAD =>
            {
                return Err(ReadError::Closed);
            }
            Err(e) => return Err(e),
        }
    };
    let parts: Vec<&str> = first.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(ReadError::Bad(
            "the request line is not METHOD TARGET VERSION",
        ));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ReadError::Bad("a bad method"));
    }
    if !target.starts_with('/') {
        return Err(ReadError::Bad("the target is not an absolute path"));
    }
    let mut keep_alive = match *version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(ReadError::Bad("an unknown HTTP version")),
    };
    let mut body = 0u64;
    loop {
        let Some(line) = read_line(r, &mut budget)? else {
            return Err(ReadError::Bad("the connection ended inside the head"));
        };
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad("a header line without a colon"));
        };
        if name.is_empty() || name.ends_with(' ') || name.ends_with('\t') {
            return Err(ReadError::Bad("a bad header name"));
        }
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "connection" => {
                for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
                    match token.as_str() {
                        "close" => keep_alive = false,
                        "keep-alive" => keep_alive = true,
                        _ => {}
                    }
                }
            }
            "content-length" => {
                body = value
                    .parse()
                    .map_err(|_| ReadError::Bad("a bad Content-Length"))?;
            }
            "transfer-encoding" => {
                return Err(ReadError::Bad("request bodies with Transfer-Encoding"));
            }
            _ => {}
        }
    }
    Ok(Request {
        method: method.to_string(),
        path: target.to_string(),
        keep_alive,
        body,
    })
}

/// What to send back.
enum Body {
    Text(&'static str, String),
    Pattern(u64),
}

fn route(req: &Request) -> (u16, &'static str, Body) {
    if req.method != "GET" && req.method != "HEAD" {
        return (
            405,
            "Method Not Allowed",
            Body::Text("text/plain", "only GET and HEAD\n".into()),
        );
    }
    let path = req.path.split('?').next().unwrap_or("");
    if path == "/" || path == "/index.html" {
        return (
            200,
            "OK",
            Body::Text("text/html; charset=utf-8", PAGE.into()),
        );
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return match n.parse::<u64>() {
            Ok(n) if n <= MAX_BYTES => (200, "OK", Body::Pattern(n)),
            _ => (
                400,
                "Bad Request",
                Body::Text("text/plain", format!("bad byte count {n:?}\n")),
            ),
        };
    }
    (
        404,
        "Not Found",
        Body::Text("text/plain", format!("no such page: {path}\n")),
    )
}

fn respond(
    w: &mut impl Write,
    status: u16,
    reason: &str,
    body: &Body,
    head_only: bool,
    keep_alive: bool,
) -> std::io::Result<()> {
    let (kind, len) = match body {
        Body::Text(kind, text) => (*kind, text.len() as u64),
        Body::Pattern(n) => ("application/octet-stream", *n),
    };
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nServer: spindle-http\r\nContent-Type: {kind}\r\n\
         Content-Length: {len}\r\nConnection: {connection}\r\n\r\n"
    );
    w.write_all(head.as_bytes())?;
    if !head_only {
        match body {
            Body::Text(_, text) => w.write_all(text.as_bytes())?,
            Body::Pattern(n) => {
                let mut chunk = vec![0u8; 64 * 1024];
                let mut at = 0u64;
                while at < *n {
                    let len = (*n - at).min(chunk.len() as u64) as usize;
                    for (k, b) in chunk[..len].iter_mut().enumerate() {
                        *b = pattern_byte(at + k as u64);
                    }
                    w.write_all(&chunk[..len])?;
                    at += len as u64;
                }
            }
        }
    }
    w.flush()
}

fn serve(stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    // A kernel without SO_RCVTIMEO keeps idle connections forever: fine.
    let _ = stream.set_read_timeout(Some(IDLE));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            println!("http: client {peer} failed: {e}");
            return;
        }
    };
    let mut reader = BufReader::new(stream);
    let mut served = 0u64;
    let outcome = loop {
        let req = match read_request(&mut reader) {
            Ok(r) => r,
            Err(ReadError::Closed) => break Ok(()),
            Err(ReadError::Bad(why)) => {
                let body = Body::Text("text/plain", format!("bad request: {why}\n"));
                let _ = respond(&mut writer, 400, "Bad Request", &body, false, false);
                served += 1;
                break Ok(());
            }
            Err(ReadError::Io(e)) => break Err(e),
        };
        if req.body > 0 {
            let mut sink = std::io::sink();
            match std::io::copy(&mut (&mut reader).take(req.body), &mut sink) {
                Ok(n) if n == req.body => {}
                Ok(_) => break Ok(()),
                Err(e) => break Err(e),
            }
        }
        let (status, reason, body) = route(&req);
        let head_only = req.method == "HEAD";
        if let Err(e) = respond(
            &mut writer,
            status,
            reason,
            &body,
            head_only,
            req.keep_alive,
        ) {
            break Err(e);
        }
        served += 1;
        if !req.keep_alive {
            break Ok(());
        }
    };
    let _ = writer.shutdown(std::net::Shutdown::Write);
    match outcome {
        Ok(()) => println!("http: client {peer} done, {served} requests"),
        Err(e) => println!("http: client {peer} failed after {served} requests: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, ReadError> {
        read_request(&mut std::io::Cursor::new(text.as_bytes().to_vec()))
    }

    #[test]
    fn requests_parse() {
        let r = parse("GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (r.path.as_str(), r.keep_alive, r.body),
            ("/bytes/10", true, 0)
        );
        let r = parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
        let r = parse("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
        let r = parse("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").unwrap();
        assert_eq!(r.body, 3);
        assert!(matches!(parse(""), Err(ReadError::Closed)));
        for bad in [
            "GET\r\n\r\n",
            "GET / HTTP/9\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "GET x HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x",
        ] {
            assert!(matches!(parse(bad), Err(ReadError::Bad(_))), "{bad:?}");
        }
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&huge), Err(ReadError::Bad(_))));
    }

    #[test]
    fn routes() {
        let req = |m: &str, p: &str| Request {
            method: m.into(),
            path: p.into(),
            keep_alive: true,
            body: 0,
        };
        assert_eq!(route(&req("GET", "/")).0, 200);
        assert!(matches!(
            route(&req("GET", "/bytes/5")),
            (200, _, Body::Pattern(5))
        ));
        assert_eq!(route(&req("GET", "/bytes/x")).0, 400);
        assert_eq!(route(&req("GET", "/bytes/")).0, 400);
        assert_eq!(route(&req("GET", "/nope")).0, 404);
        assert_eq!(route(&req("PUT", "/")).0, 405);
        assert_eq!(pattern_byte(250), 250);
        assert_eq!(pattern_byte(251), 0);
    }
}
