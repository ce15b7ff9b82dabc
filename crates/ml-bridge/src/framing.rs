//! The wire between the bridge and a worker, apart from the sockets, so that it can be
//! tested and fuzzed on bytes: a 4-byte big-endian length, then one UTF-8 JSON object.
//! Requests are `{"id", "op", "payload"}`; answers `{"id", "ok", "result" | "error"}`.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

use crate::MlError;

/// Frames of at most `max_frame_bytes` (longer ones are an `InvalidData` error, both ways).
pub fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// The request a health check sends.
pub fn health_request(id: u64) -> Bytes {
    serde_json::json!({"id": id, "op": "health", "payload": {}})
        .to_string()
        .into()
}

/// One answer from a worker: the request it answers and its outcome.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub id: u64,
    /// `Err` is [`MlError::Refused`] with the worker's code and message.
    pub outcome: Result<Value, MlError>,
}

/// Why a frame is not an answer. Either way the stream is out of step with the bridge, and
/// the worker is started again.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    #[error("an answer that is not the protocol's JSON: {0}")]
    NotJson(String),
    /// `"id": null` (it could not read one of our requests) or not a request id: ours are
    /// always well-formed, so the stream is out of step.
    #[error("an answer without a request id")]
    NoId,
}

#[derive(Deserialize)]
struct Wire {
    id: Value,
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    code: String,
    message: String,
}

/// Reads one frame's body as an answer.
pub fn read_answer(frame: &[u8]) -> Result<Answer, BadAnswer> {
    let wire: Wire =
        serde_json::from_slice(frame).map_err(|err| BadAnswer::NotJson(err.to_string()))?;
    let id = wire.id.as_u64().ok_or(BadAnswer::NoId)?;
    let outcome = if wire.ok {
        Ok(wire.result)
    } else {
        let error = wire.error.unwrap_or(WireError {
            code: "internal".to_owned(),
            message: "no error given".to_owned(),
        });
        Err(MlError::Refused {
            code: error.code,
            message: error.message,
        })
    };
    Ok(Answer { id, outcome })
}

/// Reads what a worker sent, as it arrives (`chunks`), into answers, the way the bridge reads
/// its socket: stops at the first frame that is too large or not an answer, with the reason.
/// What is left over is an incomplete frame.
pub fn read_answers<'a>(
    max_frame_bytes: usize,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Answer>, Option<String>) {
    let mut codec = codec(max_frame_bytes);
    let mut buf = BytesMut::new();
    let mut answers = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => match read_answer(&frame) {
                    Ok(answer) => answers.push(answer),
                    Err(err) => return (answers, Some(err.to_string())),
                },
                Ok(None) => break,
                Err(err) => return (answers, Some(err.to_string())),
            }
        }
    }
    (answers, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn answers_split_anywhere_are_read_whole() {
        let mut bytes = frame(br#"{"id":1,"ok":true,"result":{"score":0.5}}"#);
        bytes.extend(frame(
            br#"{"id":2,"ok":false,"error":{"code":"bad_payload","message":"no"}}"#,
        ));
        for split in 0..bytes.len() {
            let (head, tail) = bytes.split_at(split);
            let (answers, error) = read_answers(1024, [head, tail]);
            assert_eq!(error, None);
            assert_eq!(answers.len(), 2, "split at {split}");
            assert_eq!(answers[0].id, 1);
            assert_eq!(answers[0].outcome, Ok(serde_json::json!({"score": 0.5})));
            assert_eq!(
                answers[1].outcome,
                Err(MlError::Refused {
                    code: "bad_payload".to_owned(),
                    message: "no".to_owned()
                })
            );
        }
    }

    #[test]
    fn a_frame_over_the_limit_or_without_an_id_stops_the_stream() {
        let (answers, error) = read_answers(8, [frame(b"{\"id\":1,\"ok\":true}").as_slice()]);
        assert!(answers.is_empty());
        assert!(error.is_some_and(|e| e.contains("frame size too big")));
        let (_, error) = read_answers(64, [frame(br#"{"id":null,"ok":false}"#).as_slice()]);
        assert_eq!(error, Some(BadAnswer::NoId.to_string()));
        let (_, error) = read_answers(64, [frame(b"\xff").as_slice()]);
        assert!(error.is_some_and(|e| e.starts_with("an answer that is not")));
    }
}
