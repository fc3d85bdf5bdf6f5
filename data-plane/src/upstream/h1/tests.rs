use super::*;

fn parse(text: &str, method: &Method) -> Result<Option<ResponseHead>, H1Error> {
    let mut buf = BytesMut::from(text);
    parse_response(&mut buf, method)
}

#[test]
fn request_heads_carry_every_header_and_the_framing() {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("example.test"));
    headers.append("x-many", HeaderValue::from_static("1"));
    headers.append("x-many", HeaderValue::from_static("2"));
    let mut out = BytesMut::new();
    encode_request_head(
        &mut out,
        &Method::POST,
        "/a?b=c",
        &headers,
        RequestFraming::Chunked,
    );
    assert_eq!(
        &out[..],
        &b"POST /a?b=c HTTP/1.1\r\nhost: example.test\r\nx-many: 1\r\nx-many: 2\r\n\
           transfer-encoding: chunked\r\n\r\n"[..]
    );
    let mut chunk = BytesMut::new();
    encode_chunk(&mut chunk, b"hello, world");
    encode_chunk(&mut chunk, b"");
    assert_eq!(&chunk[..], b"c\r\nhello, world\r\n");
}

#[test]
fn response_heads_give_status_headers_framing_and_reuse() {
    let head = parse(
        "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: 1\r\nX-A: 2\r\n\r\nHello world!",
        &Method::GET,
    )
    .unwrap()
    .unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.framing, Framing::Length(12));
    assert!(head.keep_alive);
    assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
    let head = parse(
        "HTTP/1.1 204 No Content\r\nX-Empty:\r\nX-B:  b \r\n\r\n",
        &Method::GET,
    )
    .unwrap()
    .unwrap();
    assert_eq!(head.headers["x-empty"], "");
    assert_eq!(head.headers["x-b"], "b");

    let head = parse(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        &Method::GET,
    );
    assert_eq!(head.unwrap().unwrap().framing, Framing::Chunked);
    let head = parse(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
        &Method::GET,
    );
    assert!(!head.unwrap().unwrap().keep_alive);
    let head = parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", &Method::GET);
    assert!(
        !head.unwrap().unwrap().keep_alive,
        "HTTP/1.0 closes by default"
    );
    let head = parse("HTTP/1.1 200 OK\r\n\r\n", &Method::GET)
        .unwrap()
        .unwrap();
    assert_eq!(
        (head.framing, head.keep_alive),
        (Framing::UntilClose, false)
    );
    let head = parse(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        &Method::HEAD,
    );
    assert_eq!(head.unwrap().unwrap().framing, Framing::Empty);
    let head = parse(
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        &Method::GET,
    );
    assert_eq!(head.unwrap().unwrap().framing, Framing::Empty);
    let head = parse(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        &Method::GET,
    )
    .unwrap()
    .unwrap();
    assert_eq!((head.framing, head.keep_alive), (Framing::Chunked, false));
}

#[test]
fn interim_answers_are_skipped_and_partial_heads_wait() {
    let mut buf = BytesMut::from(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nrest",
    );
    let head = parse_response(&mut buf, &Method::POST).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::CREATED);
    assert_eq!(&buf[..], b"rest");
    assert!(
        parse("HTTP/1.1 200 OK\r\nContent-Le", &Method::GET)
            .unwrap()
            .is_none()
    );
}

#[test]
fn bad_heads_are_errors() {
    for bad in [
        "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "garbage\r\n\r\n",
    ] {
        assert!(parse(bad, &Method::GET).is_err(), "{bad:?}");
    }
    let long = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD + 1));
    assert_eq!(
        parse(&long, &Method::GET).unwrap_err(),
        H1Error::HeadTooLarge
    );
}

#[test]
fn chunked_bodies_decode_across_any_split() {
    let body = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\nnext";
    for split in 1..body.len() {
        let (mut state, mut buf, mut out) = (Chunked::Size, BytesMut::new(), Vec::new());
        let mut done = false;
        for part in [&body[..split], &body[split..]] {
            buf.extend_from_slice(part);
            loop {
                match state.decode(&mut buf).unwrap() {
                    Decoded::Data(data) => out.extend_from_slice(&data),
                    Decoded::More => break,
                    Decoded::Done => {
                        done = true;
                        break;
                    }
                }
            }
        }
        assert!(done, "split at {split}");
        assert_eq!(out, b"hello, world", "split at {split}");
        assert_eq!(&buf[..], b"next", "split at {split}");
    }
    let mut state = Chunked::Size;
    assert!(state.decode(&mut BytesMut::from("zz\r\n")).is_err());
    let (mut state, mut buf) = (Chunked::Size, BytesMut::from("1\r\nabc"));
    assert_eq!(
        state.decode(&mut buf),
        Ok(Decoded::Data(Bytes::from_static(b"a")))
    );
    assert!(state.decode(&mut buf).is_err(), "no CRLF after the chunk");
}

#[test]
fn a_101_head_is_handed_out_and_the_bytes_after_it_are_left() {
    let mut buf = BytesMut::from(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\nhello",
    );
    let head = parse_response(&mut buf, &Method::GET).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(head.headers[header::UPGRADE], "echo");
    assert!(!head.keep_alive);
    assert_eq!(&buf[..], b"hello");
}
