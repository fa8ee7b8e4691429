//! Prometheus text of one role's registry, to be joined with other roles' on one endpoint.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// The registry in the text exposition format, without the closing `# EOF` line (the
/// endpoint that joins several roles' metrics writes it once, at the end).
pub fn text(registry: &Registry) -> String {
    let mut out = String::new();
    // writing to a String cannot fail
    let _ = encode(&mut out, registry);
    match out.strip_suffix("# EOF\n") {
        Some(body) => body.to_string(),
        None => out,
    }
}

/// Serves `render()` (the whole exposition, `# EOF` included) over HTTP on `listener`, one
/// answer per connection, until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let render = std::sync::Arc::new(render);
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut req = [0u8; 2048];
            let _ = sock.read(&mut req).await;
            let body = render();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}

/// Roles' texts from [`text`] joined into one exposition, with the closing `# EOF`.
pub fn join(parts: &[&str]) -> String {
    let mut out = parts.concat();
    out.push_str("# EOF\n");
    out
}
