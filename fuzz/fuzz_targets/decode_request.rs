//! Fuzzes the broker's request decoding: one Kafka request frame (the bytes after the 4-byte
//! length prefix) in, `Decoded` or `DecodeError` out. Any panic, abort or allocation above
//! libFuzzer's `-malloc_limit_mb` is a finding.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sediment_broker::protocol::{Decoded, decode_request, unsupported_response};

fuzz_target!(|data: &[u8]| {
    match decode_request(Bytes::copy_from_slice(data)) {
        Ok(Decoded::Request(req)) => {
            // What the server logs at debug level; cheap, and exercises the decoded values.
            let _ = format!("{req:?}");
        }
        // The server answers these without closing the connection.
        Ok(Decoded::Unsupported {
            correlation_id,
            api_key,
            version,
        }) => {
            let _ = unsupported_response(correlation_id, api_key, version);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
