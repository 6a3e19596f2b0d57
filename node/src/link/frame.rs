//! Framing on data streams: a 4-byte big-endian length, then that many bytes of CBOR. The
//! length is checked against the limit before anything is allocated.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use huitong_protocol::codec;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream failed.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// The frame is larger than allowed.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Limit.
        limit: usize,
    },
    /// The frame is not the expected CBOR.
    #[error(transparent)]
    Decode(#[from] codec::DecodeError),
}

/// Reads one frame; `Ok(None)` when the peer closed the stream cleanly before a frame.
pub async fn read<T: DeserializeOwned, S: AsyncRead + Unpin>(
    s: &mut S,
    limit: usize,
) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(Some(codec::decode(&buf, limit)?))
}

/// Writes one frame (not flushed).
pub async fn write<T: Serialize, S: AsyncWrite + Unpin>(
    s: &mut S,
    value: &T,
) -> std::io::Result<()> {
    let bytes = codec::encode(value);
    let len =
        u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame larger than 4 GiB"))?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(&bytes).await
}
