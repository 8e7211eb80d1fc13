//! Character classes and small lexical helpers from the RFC 3261 grammar (§25.1).

/// `token` characters: alphanum and `-.!%*_+`~'`.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Linear white space inside a (already unfolded) header value.
pub fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits a header value at top-level commas, honouring quoted strings and
/// `<...>` brackets. Returns `None` on an unterminated quoted string.
pub fn split_list(value: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let bytes = value.as_bytes();
    let mut start = 0;
    let mut i = 0;
    let mut in_quotes = false;
    let mut in_angle = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            match b {
                b'\\' => i += 1,
                b'"' => in_quotes = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_quotes = true,
                b'<' => in_angle = true,
                b'>' => in_angle = false,
                b',' if !in_angle => {
                    parts.push(value[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    if in_quotes {
        return None;
    }
    parts.push(value[start..].trim());
    Some(parts)
}

/// Finds `needle` in `s` outside quoted strings.
pub fn find_unquoted(s: &str, needle: u8) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut in_quotes = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            match b {
                b'\\' => i += 1,
                b'"' => in_quotes = false,
                _ => {}
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Parses a `quoted-string` at the start of `s` (after optional white
/// space). Returns the unescaped content and the rest of the input.
pub fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    let rest = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, escaped) = chars.next()?;
                // quoted-pair excludes CR and LF (%x0A / %x0D).
                if escaped == '\r' || escaped == '\n' {
                    return None;
                }
                out.push(escaped);
            }
            '"' => return Some((out, &rest[i + 1..])),
            '\r' | '\n' => return None,
            c => out.push(c),
        }
    }
    None
}

/// Generic parameters `;name[=value]` as they follow many header values.
/// Values may be tokens, hosts or quoted strings; quoted strings keep their
/// quotes so that re-serialisation is exact.
pub fn parse_params(s: &str) -> Option<Vec<(String, Option<String>)>> {
    let mut params = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        rest = rest.strip_prefix(';')?.trim_start();
        let end = find_unquoted(rest, b';').unwrap_or(rest.len());
        let item = rest[..end].trim();
        rest = rest[end..].trim_start();
        let (name, value) = match item.find('=') {
            Some(eq) => (item[..eq].trim(), Some(item[eq + 1..].trim())),
            None => (item, None),
        };
        if !is_token(name) {
            return None;
        }
        if let Some(v) = value {
            if v.starts_with('"') {
                let (_, after) = parse_quoted(v)?;
                if !after.trim().is_empty() {
                    return None;
                }
            } else if v.is_empty() || !v.bytes().all(|b| is_token_char(b) || b"[]:".contains(&b)) {
                return None;
            }
        }
        params.push((name.to_string(), value.map(str::to_string)));
    }
    Some(params)
}

/// Writes `;name[=value]` parameters.
pub fn write_params(out: &mut String, params: &[(String, Option<String>)]) {
    for (name, value) in params {
        out.push(';');
        out.push_str(name);
        if let Some(v) = value {
            out.push('=');
            out.push_str(v);
        }
    }
}

/// Looks up a parameter case-insensitively by name.
pub fn param<'a>(params: &'a [(String, Option<String>)], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

/// Sets (or replaces) a parameter.
pub fn set_param(params: &mut Vec<(String, Option<String>)>, name: &str, value: Option<String>) {
    if let Some(p) = params
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        p.1 = value;
    } else {
        params.push((name.to_string(), value));
    }
}

/// Percent-decodes `s`. Returns `None` on a malformed escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}
