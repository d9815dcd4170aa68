//! The device link's messages and framing (ALPN `popseed-control/1`, see docs/protocol.md),
//! with no I/O: a frame is a 4-byte big-endian length and that many bytes of JSON.
//!
//! - The device opens one bidirectional stream right after the handshake and sends
//!   [`DeviceMsg::Hello`], then [`DeviceMsg::Reports`] whenever its jobs from this origin change.
//! - The origin opens one bidirectional stream per command ([`OriginMsg`]), finishes its side,
//!   and reads one [`Reply`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::job::{JobReport, JobSpec};

/// Largest frame either side accepts (a manifest and a .torrent of a large release fit).
pub const MAX_FRAME: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceMsg {
    Hello {
        name: String,
        version: String,
    },
    /// The current state of every job this origin pushed.
    Reports {
        jobs: Vec<JobReport>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OriginMsg {
    Push { job: JobSpec },
    Cancel { id: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Accepted {
        id: String,
    },
    /// The job was not taken (unknown publisher key, bad signature, mismatched .torrent...);
    /// the box recorded the refusal.
    Refused {
        id: String,
        reason: String,
    },
    Cancelled {
        id: String,
    },
    Error {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed message")]
    Malformed(#[source] serde_json::Error),
    #[error("trailing bytes after the message")]
    Trailing,
    #[error("the stream ended inside a frame")]
    Truncated,
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // serializing these plain types cannot fail
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes exactly one frame that makes up a whole buffer (a request/reply stream read to its end).
pub fn decode_one<T: DeserializeOwned>(buf: &[u8]) -> Result<T, FrameError> {
    let mut r = FrameReader::default();
    r.push(buf);
    match r.next_message()? {
        Some(m) if r.buf.is_empty() => Ok(m),
        Some(_) => Err(FrameError::Trailing),
        None => Err(FrameError::Truncated),
    }
}

/// Incremental frame decoder for a long-lived stream.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one has arrived. An oversized length prefix is an error
    /// before anything is allocated for it.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&self.buf[4..4 + len]).map_err(FrameError::Malformed);
        self.buf.drain(..4 + len);
        msg.map(Some)
    }

    /// Bytes buffered that do not yet make a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobState, ReleaseSource};

    #[test]
    fn frames_roundtrip_in_pieces() {
        let a = DeviceMsg::Hello { name: "box".into(), version: "0.1".into() };
        let b = DeviceMsg::Reports {
            jobs: vec![JobReport {
                id: "j".into(),
                name: "n".into(),
                state: JobState::Filling,
                reason: None,
                bytes_done: 1,
                bytes_total: 2,
                eta_secs: Some(1.5),
                at_risk: false,
            }],
        };
        let mut wire = encode(&a);
        wire.extend(encode(&b));
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            r.push(chunk);
            while let Some(m) = r.next_message::<DeviceMsg>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![a, b]);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut r = FrameReader::default();
        r.push(&u32::MAX.to_be_bytes());
        assert!(matches!(r.next_message::<DeviceMsg>(), Err(FrameError::TooLarge(l)) if l == u32::MAX as usize));
        let mut r = FrameReader::default();
        r.push(&[0, 0, 0, 2, b'{', b'x']);
        assert!(matches!(r.next_message::<DeviceMsg>(), Err(FrameError::Malformed(_))));
        assert!(matches!(decode_one::<OriginMsg>(&[0, 0, 0, 9, b'{']), Err(FrameError::Truncated)));
        let push = OriginMsg::Push {
            job: JobSpec {
                id: Some("1".into()),
                name: None,
                release: ReleaseSource::Origin { infohash: popseed_core::InfoHash([0; 20]) },
                deadline: None,
                priority: 0,
                pin: false,
                ttl_seconds: None,
            },
        };
        let mut two = encode(&push);
        two.extend(encode(&push));
        assert!(matches!(decode_one::<OriginMsg>(&two), Err(FrameError::Trailing)));
        assert_eq!(decode_one::<OriginMsg>(&encode(&push)).unwrap(), push);
    }
}
