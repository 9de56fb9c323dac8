//! Names from the first bytes of a captured connection: TLS ClientHello SNI, or
//! the HTTP/1 `Host` header.
//!
//! Threat handled: hostile input. These parsers run on bytes chosen by the
//! agent before any decision; they are bounds-checked slice walkers with no
//! indexing that can panic, no recursion and no allocation proportional to
//! lengths claimed by the input (fuzz-safe by construction; see the garbage
//! tests). A name is only a *claim*: the gate verifies that the connected
//! address really serves that name before using it (`destination_mismatch`).
//! Residual risk: TLS Encrypted Client Hello hides the real name (the outer SNI
//! is used); HTTP requests after the first on the same connection are not
//! inspected.

/// Most bytes buffered while sniffing.
pub(crate) const MAX_SNIFF: usize = 16 * 1024;

/// What the first bytes looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A TLS ClientHello, with its server name if it carried a valid one.
    Tls(Option<String>),
    /// An HTTP/1 request, with its `Host` (port stripped) if valid.
    Http(Option<String>),
    /// Anything else (or unparseable).
    Other,
}

/// Result of looking at a (possibly incomplete) prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More bytes could change the answer.
    NeedMore,
    /// Final answer.
    Done(Sniffed),
}

/// Classifies the prefix `buf`.
pub(crate) fn sniff(buf: &[u8]) -> Progress {
    match buf.first() {
        None => Progress::NeedMore,
        Some(0x16) => client_hello_sni(buf),
        Some(b'A'..=b'Z') => http_host(buf),
        Some(_) => Progress::Done(Sniffed::Other),
    }
}

/// A cursor over a byte slice; every read is checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// Reassembles the first handshake message from consecutive handshake records
/// and extracts the SNI host name.
fn client_hello_sni(buf: &[u8]) -> Progress {
    let mut records = Reader { buf };
    let mut hs: Vec<u8> = Vec::new();
    loop {
        let Some(header) = records.take(5) else { return Progress::NeedMore };
        // Handshake records of TLS 1.0..1.3 (record version 3.x).
        if header[0] != 0x16 || header[1] != 3 {
            return Progress::Done(Sniffed::Other);
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > 16_384 + 256 {
            return Progress::Done(Sniffed::Other);
        }
        let Some(fragment) = records.take(len) else { return Progress::NeedMore };
        hs.extend_from_slice(fragment);
        let mut h = Reader { buf: &hs };
        let (Some(msg_type), Some(msg_len)) = (h.u8(), h.u24()) else { continue };
        if msg_type != 1 || msg_len > MAX_SNIFF {
            return Progress::Done(Sniffed::Other);
        }
        let Some(body) = h.take(msg_len) else { continue };
        return Progress::Done(match parse_client_hello(body) {
            Some(sni) => Sniffed::Tls(sni),
            None => Sniffed::Other,
        });
    }
}

/// `Some(sni)` for a well-formed ClientHello body; `None` if malformed.
fn parse_client_hello(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader { buf: body };
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    if r.buf.is_empty() {
        return Some(None); // no extensions
    }
    let mut exts = Reader { buf: r.vec16()? };
    while !exts.buf.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        if ty != 0 {
            continue;
        }
        let mut list = Reader { buf: Reader { buf: data }.vec16()? };
        while !list.buf.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                return Some(std::str::from_utf8(name).ok().and_then(valid_name));
            }
        }
        return Some(None);
    }
    Some(None)
}

fn http_host(buf: &[u8]) -> Progress {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_SNIFF {
                Progress::Done(Sniffed::Other)
            } else {
                Progress::NeedMore
            }
        }
        Ok(httparse::Status::Complete(_)) => {
            let host = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| valid_name(strip_port(v.trim())));
            Progress::Done(Sniffed::Http(host))
        }
        Err(_) => Progress::Done(Sniffed::Other),
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` -> host part (brackets removed).
pub(crate) fn strip_port(v: &str) -> &str {
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']').map_or(v, |(h, _)| h);
    }
    match v.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => v,
    }
}

/// A syntactically valid DNS name or IP literal, normalized (lower case, no
/// trailing dot); `None` otherwise.
pub(crate) fn valid_name(s: &str) -> Option<String> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Some(ip.to_canonical().to_string());
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    let ok_len = !s.is_empty() && s.len() <= 253;
    let ok_labels = s.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    });
    (ok_len && ok_labels).then(|| s.to_ascii_lowercase())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ClientHello carrying `sni`, split into records of `chunk` bytes.
    pub(crate) fn client_hello(sni: Option<&str>, chunk: usize) -> Vec<u8> {
        let mut exts = Vec::new();
        // an unrelated extension first (supported_versions)
        exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        if let Some(name) = sni {
            let n = name.len() as u16;
            exts.extend_from_slice(&[0x00, 0x00]);
            exts.extend_from_slice(&(n + 5).to_be_bytes());
            exts.extend_from_slice(&(n + 3).to_be_bytes());
            exts.push(0);
            exts.extend_from_slice(&n.to_be_bytes());
            exts.extend_from_slice(name.as_bytes());
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
        body.extend_from_slice(&[0x01, 0x00]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut out = Vec::new();
        for part in hs.chunks(chunk) {
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn sni_single_and_fragmented() {
        let hello = client_hello(Some("API.Example.com."), 1000);
        assert_eq!(sniff(&hello), Progress::Done(Sniffed::Tls(Some("api.example.com".into()))));
        let frag = client_hello(Some("api.example.com"), 7);
        assert_eq!(sniff(&frag), Progress::Done(Sniffed::Tls(Some("api.example.com".into()))));
        for cut in 0..hello.len() {
            assert_eq!(sniff(&hello[..cut]), Progress::NeedMore, "cut at {cut}");
        }
        assert_eq!(sniff(&client_hello(None, 1000)), Progress::Done(Sniffed::Tls(None)));
        assert_eq!(sniff(&client_hello(Some("bad name!"), 1000)), Progress::Done(Sniffed::Tls(None)));
    }

    #[test]
    fn http_host_header() {
        let req = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHost: Example.COM:8080\r\n\r\n";
        assert_eq!(sniff(req), Progress::Done(Sniffed::Http(Some("example.com".into()))));
        assert_eq!(sniff(&req[..20]), Progress::NeedMore);
        let v6 = b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n";
        assert_eq!(sniff(v6), Progress::Done(Sniffed::Http(Some("::1".into()))));
        let none = b"GET / HTTP/1.0\r\n\r\n";
        assert_eq!(sniff(none), Progress::Done(Sniffed::Http(None)));
        assert_eq!(sniff(b"SSH-2.0-OpenSSH\r\n"), Progress::Done(Sniffed::Other));
        assert_eq!(sniff(b"\x00\x01binary"), Progress::Done(Sniffed::Other));
    }

    #[test]
    fn names_validated() {
        assert_eq!(valid_name("a-b.c_d.example"), Some("a-b.c_d.example".into()));
        assert_eq!(valid_name("::ffff:1.2.3.4"), Some("1.2.3.4".into()));
        for bad in ["", ".", "a..b", "-a.com", "a-.com", "a b", "é.com", &"a".repeat(64), &"a.".repeat(130)]
        {
            assert_eq!(valid_name(bad), None, "{bad:?}");
        }
        assert_eq!(strip_port("h:1"), "h");
        assert_eq!(strip_port("[::1]:1"), "::1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("h:x"), "h:x");
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random inputs plus mutations of a real hello.
        let hello = client_hello(Some("api.example.com"), 50);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut buf = hello.clone();
            let flips = (next() % 8) as usize;
            for _ in 0..flips {
                let i = (next() as usize) % buf.len();
                buf[i] = next() as u8;
            }
            buf.truncate((next() as usize) % (buf.len() + 1));
            let _ = sniff(&buf);
            let len = (next() % 600) as usize;
            let mut raw: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(b) = raw.first_mut() {
                *b = [0x16, b'G', b'P', 0][(next() % 4) as usize];
            }
            let _ = sniff(&raw);
        }
        // Lengths that claim more than is there.
        let _ = sniff(&[0x16, 3, 1, 0xff, 0xff, 1, 0xff, 0xff, 0xff]);
        let _ = sniff(&[0x16, 3, 1, 0, 4, 1, 0, 0, 0]);
    }
}
