//! Incremental server-sent-events decoder: whole events out of chunks split at any byte.

/// One dispatched event (`event:` name, `data:` lines joined with `\n`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Feeds on raw bytes; keeps only the unfinished line between calls.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    /// Lines longer than this are dropped (a misbehaving upstream cannot grow the buffer).
    max_line: usize,
    overlong: bool,
}

impl SseDecoder {
    pub fn new(max_line: usize) -> SseDecoder {
        SseDecoder {
            max_line,
            ..SseDecoder::default()
        }
    }

    /// Decodes `chunk`, appending every event it completes to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        if chunk.is_empty() {
            return;
        }
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if rest.first() == Some(&b'\n') {
                rest = &rest[1..];
            }
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', rest) {
            self.take(&rest[..i]);
            let line = std::mem::take(&mut self.line);
            if !std::mem::take(&mut self.overlong) {
                self.on_line(&line, out);
            }
            self.line = line;
            self.line.clear();
            if rest[i] == b'\r' {
                if i + 1 == rest.len() {
                    self.after_cr = true;
                    return;
                }
                if rest[i + 1] == b'\n' {
                    rest = &rest[i + 2..];
                    continue;
                }
            }
            rest = &rest[i + 1..];
        }
        self.take(rest);
    }

    /// The stream ended: a last event that no blank line closed is still dispatched (a stream
    /// may end right after its last `data:` line); `true` when something was left unfinished.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> bool {
        let unfinished = !self.line.is_empty() || self.data.is_some() || self.overlong;
        let line = std::mem::take(&mut self.line);
        if !std::mem::take(&mut self.overlong) && !line.is_empty() {
            self.on_line(&line, out);
        }
        self.on_line(b"", out);
        unfinished
    }

    fn take(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > self.max_line {
            self.overlong = true;
            self.line.clear();
        } else if !self.overlong {
            self.line.extend_from_slice(bytes);
        }
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: self.event.take(),
                    data,
                });
            }
            self.event = None;
            return;
        }
        if line[0] == b':' {
            return; // comment
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => match self.data.as_mut() {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            b"event" => self.event = Some(value.into_owned()),
            _ => {} // id, retry and unknown fields do not matter here
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new(1 << 20);
        let mut out = vec![];
        d.push(input, &mut out);
        out
    }

    #[test]
    fn events_lines_endings_and_comments() {
        let input = b": keep-alive\r\nevent: a\r\ndata: 1\r\ndata:2\r\n\r\ndata: x\rdata: y\r\rdata: z\n\nevent: lonely\n\n";
        assert_eq!(
            all(input),
            vec![
                SseEvent {
                    event: Some("a".into()),
                    data: "1\n2".into()
                },
                SseEvent {
                    event: None,
                    data: "x\ny".into()
                },
                SseEvent {
                    event: None,
                    data: "z".into()
                },
            ]
        );
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let input: &[u8] = b"event: a\r\ndata: {\"x\":1}\r\n\r\ndata: two\r\ndata: lines\n\n: c\n\nevent: b\rdata: 3\r\r";
        let want = all(input);
        assert_eq!(want.len(), 3);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let mut d = SseDecoder::new(1 << 20);
                let mut out = vec![];
                d.push(&input[..i], &mut out);
                d.push(&input[i..j], &mut out);
                d.push(&input[j..], &mut out);
                assert_eq!(out, want, "split at {i} and {j}");
            }
        }
    }

    #[test]
    fn overlong_lines_are_dropped_and_unfinished_events_reported() {
        let mut d = SseDecoder::new(8);
        let mut out = vec![];
        d.push(
            b"data: this line is too long\n\ndata: ok\n\ndata: cut",
            &mut out,
        );
        assert_eq!(
            out,
            vec![SseEvent {
                event: None,
                data: "ok".into()
            }]
        );
        assert!(d.finish(&mut out), "an event was cut off");
        assert_eq!(out.len(), 1, "an overlong last line is still dropped");
        assert!(!d.finish(&mut out));
        // a last event that no blank line closed is dispatched at the end
        d.push(b"data: z", &mut out);
        assert!(d.finish(&mut out));
        assert_eq!(out[1].data, "z");
    }
}
