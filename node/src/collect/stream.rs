//! The pipe between a collection run's extractor (async, reading the database) and its
//! publisher (a blocking thread): chunks of CSV text through a bounded channel, so at most
//! [`super::STREAM_CHUNKS`] chunks are in memory. The stream ends cleanly only when the extractor
//! says so ([`Sink::end`]): a run that fails or is dropped part-way makes the publisher's read
//! fail, so a table cut short is never published.
//!
//! Layering: a leaf of [`crate::collect`].

use tokio::sync::mpsc::{Receiver, Sender};

/// One message of the stream.
#[derive(Debug)]
pub enum Piece {
    /// CSV text.
    Text(Vec<u8>),
    /// The extraction is complete.
    End,
    /// The extraction failed (why).
    Failed(String),
}

pub use crate::dataset::publish::{KeyOrder, Layout};

/// The extractor's end.
pub struct Sink {
    tx: Sender<Piece>,
    layout: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Layout>>>,
}

/// Why a chunk could not be sent: the publisher stopped reading (it failed; its error says
/// why).
#[derive(Debug)]
pub struct Closed;

impl Sink {
    /// A sink sending into `tx`, and the layout of the rows (once, before them) into `layout`.
    pub fn new(tx: Sender<Piece>, layout: tokio::sync::oneshot::Sender<Layout>) -> Self {
        Self {
            tx,
            layout: std::sync::Mutex::new(Some(layout)),
        }
    }

    /// Says how the rows are laid out; before the first row.
    pub fn layout(&self, layout: Layout) {
        let sender = self.layout.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(s) = sender {
            // A publisher that stopped already has its own error.
            let _ = s.send(layout);
        }
    }

    /// Sends CSV text, waiting while the publisher is behind.
    pub async fn send(&self, text: Vec<u8>) -> Result<(), Closed> {
        if text.is_empty() {
            return Ok(());
        }
        self.tx.send(Piece::Text(text)).await.map_err(|_| Closed)
    }

    /// Ends the stream: everything was sent. (A layout not said by then is the default.)
    pub async fn end(&self) {
        self.layout(Layout::default());
        // A publisher that stopped already has its own error.
        let _ = self.tx.send(Piece::End).await;
    }

    /// Ends the stream as failed. (The publisher waits for the layout first: it is released.)
    pub async fn fail(&self, why: String) {
        self.layout(Layout::default());
        let _ = self.tx.send(Piece::Failed(why)).await;
    }
}

/// The publisher's end: `std::io::Read` on a blocking thread.
pub struct Reader {
    rx: Receiver<Piece>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Reader {
    /// A reader of `rx`.
    pub fn new(rx: Receiver<Piece>) -> Self {
        Self {
            rx,
            cur: Vec::new(),
            pos: 0,
            ended: false,
        }
    }
}

impl std::io::Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = buf.len().min(self.cur.len() - self.pos);
                buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Text(t)) => {
                    self.cur = t;
                    self.pos = 0;
                }
                Some(Piece::End) => self.ended = true,
                Some(Piece::Failed(why)) => return Err(std::io::Error::other(why)),
                None => {
                    return Err(std::io::Error::other(
                        "the source's rows stopped before the end (the run was stopped)",
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn only_an_ended_stream_reads_to_its_end() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let sink = Sink::new(tx, tokio::sync::oneshot::channel().0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            sink.send(b"a,b\n".to_vec()).await.unwrap();
            sink.end().await;
        });
        let mut text = String::new();
        Reader::new(rx).read_to_string(&mut text).unwrap();
        assert_eq!(text, "a,b\n");

        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let sink = Sink::new(tx, tokio::sync::oneshot::channel().0);
        rt.block_on(sink.send(b"a,b\n".to_vec())).unwrap();
        drop(sink);
        let mut text = String::new();
        assert!(
            Reader::new(rx).read_to_string(&mut text).is_err(),
            "cut short"
        );
    }
}
