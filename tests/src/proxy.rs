//! A loopback HTTP proxy that drops one request header before forwarding: it turns a server
//! that honours `If-None-Match` into one that, as far as the client can tell, ignores it.

use std::net::SocketAddr;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The running proxy; stops when dropped.
pub struct HeaderStrippingProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for HeaderStrippingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HeaderStrippingProxy {
    /// Forwards `127.0.0.1:<new port>` to `upstream`, removing `header` (case-insensitive)
    /// from every request.
    pub async fn start(upstream: SocketAddr, header: &'static str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = pipe(client, server, header).await;
                    }
                });
            }
        });
        Ok(HeaderStrippingProxy { addr, task })
    }
}

async fn pipe(client: TcpStream, server: TcpStream, header: &str) -> Result<()> {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let down = tokio::spawn(async move { tokio::io::copy(&mut sr, &mut cw).await });
    let prefix = format!("{}:", header.to_ascii_lowercase());
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // read one request head
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = cr.read(&mut chunk).await?;
            if n == 0 {
                down.abort();
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut length = 0usize;
        let mut out = String::new();
        for line in head.split("\r\n") {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with(&prefix) {
                continue;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        // `head` ended with \r\n\r\n, so `out` has the blank line already (plus one extra pair)
        let out = out.trim_end_matches("\r\n").to_string() + "\r\n\r\n";
        buf.drain(..head_end);
        while buf.len() < length {
            let mut chunk = [0u8; 65536];
            let n = cr.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf.drain(..length.min(buf.len())).collect();
        sw.write_all(out.as_bytes()).await?;
        sw.write_all(&body).await?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
