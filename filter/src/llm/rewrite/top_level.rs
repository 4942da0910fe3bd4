//! Where the members of a JSON body's top-level object are, found by one
//! walk of its bytes without building anything: what the body rewrites
//! need to change one member and leave every other byte as it is.

use std::ops::Range;

/// Where things are in a body's top-level object.
pub struct TopLevel {
    /// Just after the opening `{`.
    pub open: usize,
    /// The object has no member.
    pub empty: bool,
    /// For each name asked about, the value of its member (the last, were
    /// one repeated), if any.
    pub found: Vec<Option<Range<usize>>>,
}

/// Walks the top level of a JSON object (strings, nesting), without
/// building anything, noting where the members `names` are; `None` when
/// the bytes are not shaped like one.
pub fn scan(body: &[u8], names: &[&str]) -> Option<TopLevel> {
    let mut at = Cursor { body, at: 0 };
    at.skip_space();
    at.eat(b'{')?;
    let open = at.at;
    at.skip_space();
    let mut object = TopLevel {
        open,
        empty: at.peek()? == b'}',
        found: vec![None; names.len()],
    };
    if object.empty {
        return Some(object);
    }
    loop {
        at.skip_space();
        let key = at.string()?;
        at.skip_space();
        at.eat(b':')?;
        at.skip_space();
        let value = at.value()?;
        let key = body.get(key)?;
        if let Some(i) = names.iter().position(|name| is_named(key, name)) {
            if let Some(slot) = object.found.get_mut(i) {
                *slot = Some(value);
            }
        }
        at.skip_space();
        match at.peek()? {
            b',' => at.at += 1,
            b'}' => return Some(object),
            _ => return None,
        }
    }
}

/// Whether a quoted key is `name` (after JSON unescaping).
fn is_named(quoted: &[u8], name: &str) -> bool {
    if quoted.contains(&b'\\') {
        serde_json::from_slice::<String>(quoted).is_ok_and(|key| key == name)
    } else {
        quoted.get(1..quoted.len().saturating_sub(1)) == Some(name.as_bytes())
    }
}

struct Cursor<'b> {
    body: &'b [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.body.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string, quotes included.
    fn string(&mut self) -> Option<Range<usize>> {
        let start = self.at;
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(start..self.at);
                }
                b'\\' => self.at += 2,
                _ => self.at += 1,
            }
        }
    }

    /// Any value: a string, an object or array (to its matching bracket),
    /// or a literal (to the next delimiter).
    fn value(&mut self) -> Option<Range<usize>> {
        let start = self.at;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                self.at += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.at += 1;
                }
            }
        }
        (self.at > start).then_some(start..self.at)
    }
}
