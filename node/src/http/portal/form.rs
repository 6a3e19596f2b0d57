//! A submitted web form: `application/x-www-form-urlencoded` pairs in order, keys repeated for
//! checkbox lists (the 信息项 an application picks). Each key's first value is indexed once, so
//! a large form (the entry form takes 1 MiB) costs one pass, not one pass per field read.

use std::collections::HashMap;

/// The pairs of one form.
#[derive(Clone, Debug, Default)]
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
    /// Where each key first appears in `pairs`.
    first: HashMap<String, usize>,
}

impl Form {
    /// Parses a form body (invalid UTF-8 is replaced, never refused: the fields are checked
    /// where they are used).
    pub(crate) fn parse(body: &[u8]) -> Self {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut first = HashMap::with_capacity(pairs.len());
        for (i, (k, _)) in pairs.iter().enumerate() {
            first.entry(k.clone()).or_insert(i);
        }
        Self { pairs, first }
    }

    /// The first value of `key`, trimmed ("" when missing).
    pub(crate) fn get(&self, key: &str) -> &str {
        self.raw(key).trim()
    }

    /// The first value of `key` exactly as sent ("" when missing): passwords are not trimmed.
    pub(crate) fn raw(&self, key: &str) -> &str {
        self.first
            .get(key)
            .and_then(|&i| self.pairs.get(i))
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every non-empty value of `key`, in order.
    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, v)| k == key && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_kept_in_order() {
        let f = Form::parse("fields=%E5%A7%93%E5%90%8D&fields=x&purpose=+a+&fields=".as_bytes());
        assert_eq!(f.all("fields"), vec!["姓名", "x"]);
        assert_eq!(f.get("purpose"), "a");
        assert_eq!(f.get("missing"), "");
        let f = Form::parse(b"a=1&b=+2+&a=3");
        assert_eq!((f.get("a"), f.raw("b"), f.get("b")), ("1", " 2 ", "2"));
    }
}
