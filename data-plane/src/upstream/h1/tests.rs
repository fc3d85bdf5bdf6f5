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
    // Complete, but too large all the same (it came in one read).
    let complete = format!("{long}\r\n\r\n");
    assert_eq!(
        parse(&complete, &Method::GET).unwrap_err(),
        H1Error::HeadTooLarge
    );
}

#[test]
fn transfer_encoding_wins_over_content_length_which_is_removed() {
    for length in ["3", "100", "abc", "1, 2"] {
        let text = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let head = parse(&text, &Method::GET).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Chunked, "{length}");
        assert!(
            !head.keep_alive,
            "both framings: the connection is not reused"
        );
        assert!(
            !head.headers.contains_key(header::CONTENT_LENGTH),
            "{length}"
        );
    }
    // Chunked first, then another coding: the body ends with the connection.
    let head = parse(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\nContent-Length: 9\r\n\r\n",
        &Method::GET,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (head.framing, head.keep_alive),
        (Framing::UntilClose, false)
    );
    assert!(!head.headers.contains_key(header::CONTENT_LENGTH));
    let head = parse(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
        &Method::GET,
    );
    assert_eq!(head.unwrap().unwrap().framing, Framing::UntilClose);
    let head = parse(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        &Method::GET,
    );
    assert_eq!(head.unwrap().unwrap().framing, Framing::Chunked);
}

#[test]
fn repeated_identical_content_lengths_become_one_value() {
    for text in [
        "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5 ,5\r\nContent-Length: 5\r\n\r\n",
    ] {
        let head = parse(text, &Method::GET).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Length(5), "{text:?}");
        assert!(head.keep_alive, "{text:?}");
        let values: Vec<_> = head
            .headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .collect();
        assert_eq!(values, ["5"], "{text:?}");
    }
    // A HEAD answer's length is told, never read: one value too.
    let head = parse(
        "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
        &Method::HEAD,
    );
    let head = head.unwrap().unwrap();
    assert_eq!(head.framing, Framing::Empty);
    assert_eq!(head.headers[header::CONTENT_LENGTH], "7");
    let head = parse(
        "HTTP/1.1 200 OK\r\nContent-Length: 0, 0\r\n\r\n",
        &Method::GET,
    );
    let head = head.unwrap().unwrap();
    assert_eq!((head.framing, head.keep_alive), (Framing::Empty, true));
    assert_eq!(head.headers[header::CONTENT_LENGTH], "0");
}

#[test]
fn bad_content_lengths_are_errors() {
    for value in [
        "1, 2",
        "-1",
        "+1",
        "",
        " , ",
        "1,",
        "0x10",
        "1 2",
        "18446744073709551616",
    ] {
        let text = format!("HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n");
        assert_eq!(
            parse(&text, &Method::GET).unwrap_err(),
            H1Error::ContentLength,
            "{value:?}"
        );
    }
}

#[test]
fn reuse_follows_the_version_and_connection_header() {
    for (text, keep_alive) in [
        ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", true),
        (
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: x, Close\r\nContent-Length: 1\r\n\r\n",
            false,
        ),
        ("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
        (
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            true,
        ),
        ("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", false),
        ("HTTP/1.1 204 No Content\r\n\r\n", true),
        (
            "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            true,
        ),
    ] {
        let head = parse(text, &Method::GET).unwrap().unwrap();
        assert_eq!(head.keep_alive, keep_alive, "{text:?}");
    }
}

/// The data, the trailers, and whether the end was seen.
type Body = (Vec<u8>, HeaderMap, bool);

/// Decodes `body` fed in the pieces `splits` cuts it into; what follows the
/// body is left in the buffer returned.
fn decode_split(body: &[u8], splits: &[usize]) -> (Result<Body, H1Error>, BytesMut) {
    let (mut decoder, mut buf) = (ChunkedDecoder::new(), BytesMut::new());
    let (mut data, mut trailers) = (Vec::new(), HeaderMap::new());
    let mut cuts = splits.to_vec();
    cuts.push(body.len());
    let mut from = 0;
    for cut in cuts {
        buf.extend_from_slice(&body[from..cut]);
        from = cut;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(piece)) => data.extend_from_slice(&piece),
                Ok(Decoded::Trailers(fields)) => trailers = fields,
                Ok(Decoded::More) => break,
                Ok(Decoded::Done) => {
                    buf.extend_from_slice(&body[from..]);
                    return (Ok((data, trailers, true)), buf);
                }
                Err(error) => return (Err(error), buf),
            }
        }
    }
    (Ok((data, trailers, false)), buf)
}

#[test]
fn chunked_bodies_decode_across_any_split() {
    let body = b"5;ext=1\r\nhello\r\n7 ; a=\"b c\"\r\n, world\r\n0\r\n\r\nnext";
    for split in 0..=body.len() {
        let (decoded, rest) = decode_split(body, &[split]);
        let (data, trailers, done) = decoded.unwrap();
        assert!(done, "split at {split}");
        assert_eq!(data, b"hello, world", "split at {split}");
        assert!(trailers.is_empty());
        assert_eq!(&rest[..], b"next", "split at {split}");
    }
    // One byte at a time.
    let every: Vec<usize> = (1..body.len()).collect();
    let (decoded, rest) = decode_split(body, &every);
    assert_eq!(decoded.unwrap().0, b"hello, world");
    assert_eq!(&rest[..], b"next");
}

#[test]
fn chunked_trailers_come_out_as_a_header_map_across_any_split() {
    let body = b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\nx-many: 1\r\nx-many: 2\r\n\
                 content-length: 3\r\n\r\nnext";
    for split in 0..=body.len() {
        for second in split..=body.len() {
            let (decoded, rest) = decode_split(body, &[split, second]);
            let (data, trailers, done) = decoded.unwrap();
            assert!(done, "split at {split}, {second}");
            assert_eq!(data, b"abc");
            assert_eq!(trailers["x-checksum"], "42");
            let many: Vec<_> = trailers.get_all("x-many").iter().collect();
            assert_eq!(many, ["1", "2"]);
            assert!(
                !trailers.contains_key(header::CONTENT_LENGTH),
                "framing fields are not trailers"
            );
            assert_eq!(&rest[..], b"next");
        }
    }
}

#[test]
fn chunk_sizes_are_hex_digits_only() {
    for bad in [
        "zz\r\n",
        "-1\r\n",
        "+1\r\n",
        " 1\r\n",
        "1 \r\n",
        "1\t\r\n",
        "\r\n",
        ";ext\r\n",
        "0x1\r\n",
        "1_0\r\n",
        "1000000000000000\r\n",
        "f\r\r\n",
    ] {
        let (decoded, _) = decode_split(bad.as_bytes(), &[]);
        assert!(decoded.is_err(), "{bad:?}");
    }
    // The most digits a size may have, leading zeros included.
    let (decoded, _) = decode_split(b"000000000000001\r\na\r\n0\r\n\r\n", &[]);
    assert_eq!(decoded.unwrap().0, b"a");
    let (decoded, _) = decode_split(b"A;x\r\n0123456789\r\n0;last\r\n\r\n", &[]);
    assert_eq!(decoded.unwrap().0, b"0123456789");
    // An incomplete size line waits; a bad byte is refused at once.
    assert_eq!(
        decode_split(b"1f", &[]).0.unwrap(),
        (vec![], HeaderMap::new(), false)
    );
    assert!(decode_split(b"1 x", &[]).0.is_err());
}

#[test]
fn every_line_of_a_chunked_body_ends_in_crlf() {
    for bad in [
        &b"1\na\r\n0\r\n\r\n"[..],
        b"1;ext\na\r\n0\r\n\r\n",
        b"1\r\na\n0\r\n\r\n",
        b"1\r\naX\r\n0\r\n\r\n",
        b"1\r\na\r\n0\n\r\n",
        b"1\r\na\r\n0\r\n\n",
        b"1\r\na\r\n0\r\nx: 1\n\r\n",
        b"1\r\na\r\n0\r\nx: 1\r\n\n",
        b"1\r\na\r\n0\r\nx: 1\rx\n\r\n",
        b"1\r\na\r\n0\r\nx: 1\r\n folded\r\n\r\n",
        b"1\r\na\r\n0\r\nno colon\r\n\r\n",
    ] {
        let (decoded, _) = decode_split(bad, &[]);
        assert!(decoded.is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    // A bare LF is refused before the rest of the trailers is in.
    let (decoded, _) = decode_split(b"0\r\nx: 1\nmore", &[]);
    assert!(decoded.is_err());
}

#[test]
fn chunk_extensions_and_trailers_are_capped() {
    let line = format!("1;{}\r\na\r\n", "e".repeat(MAX_CHUNK_LINE));
    assert!(
        decode_split(line.as_bytes(), &[]).0.is_err(),
        "one long line"
    );
    let unfinished = format!("1;{}", "e".repeat(MAX_CHUNK_LINE + 1));
    assert!(
        decode_split(unfinished.as_bytes(), &[]).0.is_err(),
        "no CRLF in sight"
    );
    // Many lines, each short, add up.
    let chunk = format!("1;{}\r\na\r\n", "e".repeat(1000));
    let mut body = chunk.repeat(MAX_CHUNK_EXTENSIONS / 1000 - 1);
    body.push_str("0\r\n\r\n");
    assert!(
        decode_split(body.as_bytes(), &[]).0.is_ok(),
        "within the cap"
    );
    let body = chunk.repeat(MAX_CHUNK_EXTENSIONS / 1000 + 1);
    assert_eq!(
        decode_split(body.as_bytes(), &[]).0.unwrap_err(),
        H1Error::Chunked("chunk extensions too long")
    );

    let many: String = (0..=MAX_TRAILERS)
        .map(|i| format!("x-{i}: v\r\n"))
        .collect();
    let body = format!("0\r\n{many}\r\n");
    assert_eq!(
        decode_split(body.as_bytes(), &[]).0.unwrap_err(),
        H1Error::Chunked("too many trailers")
    );
    let few: String = (0..MAX_TRAILERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let body = format!("0\r\n{few}\r\n");
    assert_eq!(
        decode_split(body.as_bytes(), &[]).0.unwrap().1.len(),
        MAX_TRAILERS
    );
    let big = format!("0\r\nx: {}\r\n", "v".repeat(MAX_TRAILERS_SIZE));
    assert_eq!(
        decode_split(big.as_bytes(), &[]).0.unwrap_err(),
        H1Error::Chunked("trailers too large")
    );
}

#[test]
fn a_chunk_without_its_crlf_is_an_error() {
    let (mut decoder, mut buf) = (ChunkedDecoder::new(), BytesMut::from("1\r\nabc"));
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Decoded::Data(Bytes::from_static(b"a")))
    );
    assert!(decoder.decode(&mut buf).is_err(), "no CRLF after the chunk");
}

#[test]
fn request_trailers_go_in_the_last_chunk() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("42"));
    trailers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("9"));
    trailers.insert(header::HOST, HeaderValue::from_static("evil.test"));
    let mut out = BytesMut::new();
    encode_last_chunk(&mut out, &trailers);
    assert_eq!(&out[..], b"0\r\nx-checksum: 42\r\n\r\n");
    let mut out = BytesMut::new();
    encode_last_chunk(&mut out, &HeaderMap::new());
    assert_eq!(&out[..], LAST_CHUNK);
}

/// Inputs the fuzz targets found (harness bugs both, kept as cases): the
/// same bytes parse the same whole or split, leftovers included.
#[test]
fn fuzz_inputs_parse_the_same_whole_or_split() {
    let input = b"\nHTTP/1.0 820\n\nHTTP/1.0 820\x03\t\0\xff\xff\0\0\x000 82\x03";
    let mut whole = BytesMut::from(&input[..]);
    let head = parse_response(&mut whole, &Method::HEAD).unwrap().unwrap();
    assert_eq!((head.status.as_u16(), head.framing), (820, Framing::Empty));
    for cut in 0..input.len() {
        let mut split = BytesMut::from(&input[..cut]);
        let first = parse_response(&mut split, &Method::HEAD).unwrap();
        split.extend_from_slice(&input[cut..]);
        if first.is_none() {
            parse_response(&mut split, &Method::HEAD).unwrap().unwrap();
        }
        assert_eq!(split, whole, "cut at {cut}");
    }

    let input = b"0\r\n\r\n\r\nl5sl\xff\n\xff";
    let (decoded, rest) = decode_split(input, &[]);
    assert_eq!(decoded.unwrap(), (vec![], HeaderMap::new(), true));
    assert_eq!(&rest[..], b"\r\nl5sl\xff\n\xff");
    for cut in 0..input.len() {
        assert_eq!(decode_split(input, &[cut]).1, rest, "cut at {cut}");
    }
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
