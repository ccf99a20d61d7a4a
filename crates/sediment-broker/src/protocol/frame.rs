//! Length-prefixed frames: a 4-byte big-endian size, then that many bytes. The size is checked
//! against `socket.request.max.bytes` before anything is allocated for the body.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a frame could not be read; every variant ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared size is above the limit.
    #[error("frame size {size} exceeds socket.request.max.bytes={max}")]
    TooLarge {
        /// Declared size.
        size: i64,
        /// Limit.
        max: usize,
    },
    /// A negative or zero size.
    #[error("invalid frame size {0}")]
    InvalidSize(i32),
    /// The peer closed the connection mid-frame.
    #[error("connection closed mid-frame after {read} of {size} bytes")]
    Truncated {
        /// Bytes received.
        read: usize,
        /// Bytes declared.
        size: usize,
    },
    /// A socket error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame; `Ok(None)` when the peer closed cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated { read: got, size: 4 })
            };
        }
        got += n;
    }
    let size = i32::from_be_bytes(len);
    if size <= 0 {
        return Err(FrameError::InvalidSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge {
            size: size as i64,
            max,
        });
    }
    // Capacity is reserved but pages are only touched as bytes arrive, so a peer that declares a
    // large frame and sends little costs little; `take` keeps the next frame's bytes unread.
    let mut body = BytesMut::with_capacity(size);
    let mut limited = (&mut *reader).take(size as u64);
    while body.len() < size {
        let n = limited.read_buf(&mut body).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                read: body.len(),
                size,
            });
        }
    }
    Ok(Some(body.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_frames_and_rejects_bad_sizes() {
        let mut input: &[u8] = &[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 1, b'z'];
        assert_eq!(
            read_frame(&mut input, 10).await.unwrap().unwrap(),
            &b"abc"[..]
        );
        assert_eq!(
            read_frame(&mut input, 10).await.unwrap().unwrap(),
            &b"z"[..]
        );
        assert!(read_frame(&mut input, 10).await.unwrap().is_none());

        let mut big: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut big, 100).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut neg: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut neg, 100).await,
            Err(FrameError::InvalidSize(-1))
        ));
        let mut short: &[u8] = &[0, 0, 0, 9, 1, 2];
        assert!(matches!(
            read_frame(&mut short, 100).await,
            Err(FrameError::Truncated { read: 2, size: 9 })
        ));
    }
}
