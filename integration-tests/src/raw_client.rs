//! A client on a bare socket, for what a well-behaved HTTP library will not
//! send: two `Host` lines, an absolute-form target, a head trickled byte by
//! byte, a body that stops, or raw HTTP/2 frames.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::client::REQUEST_TIMEOUT;

/// Connects to `addr`.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

/// Sends `request` as it is on a new connection and returns all that came
/// back until the proxy closed it (the request should ask it to, with
/// `Connection: close`, or be one the proxy refuses).
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = connect(addr).await;
    stream
        .write_all(request)
        .await
        .unwrap_or_else(|e| panic!("writing to {addr}: {e}"));
    match read_until_closed(&mut stream, REQUEST_TIMEOUT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(partial) => panic!("the proxy did not close the connection; got {partial:?}"),
    }
}

/// Reads until the peer closes (EOF or reset) and returns what came; `Err`
/// with what came so far if it is still open after `deadline`.
pub async fn read_until_closed(
    stream: &mut TcpStream,
    deadline: Duration,
) -> Result<Vec<u8>, String> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let read_all = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    match tokio::time::timeout(deadline, read_all).await {
        Ok(()) => Ok(received),
        Err(_) => Err(String::from_utf8_lossy(&received).into_owned()),
    }
}

/// The status code of the first response in `text` (0 when there is none).
pub fn status_of(text: &str) -> u16 {
    text.strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The value of header `name` in the first response head of `text`.
pub fn header_of<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let head = text.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The value of one sample line (`name{labels} value`) of a Prometheus page.
pub fn sample(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{page}"))
}
