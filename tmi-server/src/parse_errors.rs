//! TMI's JSON error body on the answers hyper writes itself, for requests it cannot parse: `414 URI Too
//! Long` (a request target over hyper's 64 KiB) and `431 Request Header Fields Too Large` (more than 100
//! header fields, or a head beyond the read buffer). Those answers never reach the router, so no layer can
//! change them: hyper writes a bare head (`content-length: 0`) and closes the connection. `JsonParseErrors`
//! wraps the listener, and its connections replace exactly such a head, as it is written, with the same
//! status carrying `{"error", "error_description"}`. `server::run` wraps each connection in
//! [`JsonErrorIo`]. Every other byte passes through unchanged; the
//! application never answers 414 or 431 with an empty body itself. IO: wraps the connection's writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ErrorBody;

/// A connection that rewrites hyper's bare 414 and 431 heads.
pub struct JsonErrorIo<I> {
    inner: I,
    /// The replacement being written: its bytes, how many are written, and the length of the head it
    /// stands for (reported to hyper as written once the replacement is).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<I> JsonErrorIo<I> {
    /// Wraps one accepted connection (see `server::run`).
    pub fn new(inner: I) -> Self {
        JsonErrorIo {
            inner,
            replacing: None,
        }
    }
}

/// The full response that replaces `head`, when `head` is one of hyper's bare parse-error answers.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let (status, code, description) =
        if head.starts_with(b"HTTP/1.1 414 ") || head.starts_with(b"HTTP/1.0 414 ") {
            ("414 URI Too Long", "uri_too_long", "The request URI is too long")
        } else if head.starts_with(b"HTTP/1.1 431 ") || head.starts_with(b"HTTP/1.0 431 ") {
            (
                "431 Request Header Fields Too Large",
                "request_header_fields_too_large",
                "The request header fields are too large or too many",
            )
        } else {
            return None;
        };
    let text = std::str::from_utf8(head).ok()?;
    let (fields, _) = text.split_once("\r\n\r\n")?;
    let bare = fields
        .split("\r\n")
        .any(|l| l.eq_ignore_ascii_case("content-length: 0"));
    if !bare {
        return None;
    }
    let date = fields
        .split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with("date:"));
    let body = serde_json::to_string(&ErrorBody {
        error: code.into(),
        error_description: description.into(),
    })
    .ok()?;
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(date) = date {
        out.push_str(date);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<I: AsyncWrite + Unpin> JsonErrorIo<I> {
    /// Writes the pending replacement; `Ready(Ok(n))` with the replaced head's length once all is written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, written, claimed)) = self.replacing.as_mut() {
            if *written == bytes.len() {
                let claimed = *claimed;
                self.replacing = None;
                return Poll::Ready(Ok(claimed));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(0))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for JsonErrorIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for JsonErrorIo<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            match replacement(buf) {
                Some(bytes) => self.replacing = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        self.poll_replacement(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            let first = bufs.iter().find(|b| !b.is_empty());
            match first.and_then(|b| replacement(b).map(|r| (r, b.len()))) {
                Some((bytes, len)) => self.replacing = Some((bytes, 0, len)),
                None => return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            }
        }
        self.poll_replacement(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_parse_error_heads_are_replaced() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 10:48:15 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(head).unwrap()).unwrap();
        let (fields, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(fields.starts_with("HTTP/1.1 431 "));
        assert!(fields.contains("content-type: application/json"));
        assert!(fields.contains("date: Thu, 03 Dec 2026"));
        assert!(fields.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "request_header_fields_too_large");
        assert!(replacement(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n").is_some());
        assert!(replacement(b"HTTP/1.1 431 X\r\ncontent-length: 12\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"{\"HTTP/1.1 414 \"}").is_none());
    }
}
