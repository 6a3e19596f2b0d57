//! One line for an error and its causes, for messages a user reads.

/// An error and its sources, joined by ": "; empty messages, and ones already said by the
/// error that wraps them, are left out (libp2p's transport errors print nothing of their own
/// and keep the OS error as a source; some errors repeat their source's message).
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("")]
    struct Silent(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn empty_and_repeated_messages_are_left_out() {
        let io = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address in use");
        assert_eq!(describe(&Silent(io())), "Address in use");
        assert_eq!(describe(&Repeats(io())), "cannot bind: Address in use");
        assert_eq!(describe(&io()), "Address in use");
    }
}
