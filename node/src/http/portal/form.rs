//! A submitted web form: `application/x-www-form-urlencoded` pairs in order, keys repeated for
//! checkbox lists (the 信息项 an application picks).

/// The pairs of one form.
#[derive(Clone, Debug, Default)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    /// Parses a form body (invalid UTF-8 is replaced, never refused: the fields are checked
    /// where they are used).
    pub(crate) fn parse(body: &[u8]) -> Self {
        Self(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `key`, trimmed ("" when missing).
    pub(crate) fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.trim())
    }

    /// The first value of `key` exactly as sent ("" when missing): passwords are not trimmed.
    pub(crate) fn raw(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every non-empty value of `key`, in order.
    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        self.0
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
    }
}
