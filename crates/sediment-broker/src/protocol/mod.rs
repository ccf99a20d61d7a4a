//! Kafka wire framing and message codecs. No I/O besides reading and writing frames; message
//! bodies are decoded and encoded by `kafka-protocol`.

mod codec;
mod frame;
mod versions;

pub use codec::{
    DecodeError, Decoded, Request, api_versions_table, decode_request, encode_response,
    unsupported_response,
};
pub use frame::{FrameError, read_frame};
pub use versions::{SUPPORTED_APIS, supported_range};
