//! Request decoding and response encoding around `kafka-protocol`.
//!
//! Untrusted bytes are checked before they are parsed: the frame must hold the fixed header
//! prefix (api key, version, correlation id), and the (api key, version) pair must be one we
//! serve, before the header and body decoders see the frame. Decoding errors never panic; they
//! end the connection (as Kafka does for an unparsable request).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
    api_versions_response::ApiVersion,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::versions::{SUPPORTED_APIS, supported_range};

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    /// The request header (correlation id, client id).
    pub header: RequestHeader,
    /// API.
    pub api_key: ApiKey,
    /// API version.
    pub version: i16,
    /// Body.
    pub body: RequestKind,
}

/// Outcome of decoding one frame.
#[derive(Debug)]
pub enum Decoded {
    /// A request we serve.
    Request(Box<Request>),
    /// An unknown API key or a version outside the served range: answered with
    /// UNSUPPORTED_VERSION, and the connection stays open.
    Unsupported {
        /// Correlation id to answer with.
        correlation_id: i32,
        /// Raw API key.
        api_key: i16,
        /// Requested version.
        version: i16,
    },
}

/// A frame that cannot be parsed; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the 8-byte fixed header prefix.
    #[error("frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
    /// The header does not decode.
    #[error("malformed request header for api_key={api_key} version={version}: {message}")]
    Header {
        /// API key.
        api_key: i16,
        /// Version.
        version: i16,
        /// Decoder message.
        message: String,
    },
    /// The body does not decode.
    #[error("malformed {api_key:?} v{version} request body: {message}")]
    Body {
        /// API.
        api_key: ApiKey,
        /// Version.
        version: i16,
        /// Decoder message.
        message: String,
    },
}

/// Decodes one request frame (without its length prefix).
pub fn decode_request(frame: Bytes) -> Result<Decoded, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let unsupported = Decoded::Unsupported {
        correlation_id,
        api_key: raw_key,
        version,
    };
    let Ok(api_key) = ApiKey::try_from(raw_key) else {
        return Ok(unsupported);
    };
    match supported_range(api_key) {
        Some((min, max)) if (min..=max).contains(&version) => {}
        _ => return Ok(unsupported),
    }
    let mut buf = frame;
    let header_version = api_key.request_header_version(version);
    let header =
        RequestHeader::decode(&mut buf, header_version).map_err(|e| DecodeError::Header {
            api_key: raw_key,
            version,
            message: format!("{e:#}"),
        })?;
    let body = RequestKind::decode(api_key, &mut buf, version).map_err(|e| DecodeError::Body {
        api_key,
        version,
        message: format!("{e:#}"),
    })?;
    Ok(Decoded::Request(Box::new(Request {
        header,
        api_key,
        version,
        body,
    })))
}

/// Encodes a response as a length-prefixed frame.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(size_hint(body, version));
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))?;
    body.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Bytes to reserve for a response frame. Fetch responses carry megabytes of records; sizing
/// the buffer once avoids growing it by doubling (which copied a 10 MB response about twice over).
fn size_hint(body: &ResponseKind, version: i16) -> usize {
    const SMALL: usize = 512;
    match body {
        ResponseKind::Fetch(r) => r.compute_size(version).unwrap_or(SMALL) + 64,
        _ => SMALL,
    }
}

/// The answer to an unknown API or unsupported version. For ApiVersions it is a v0
/// ApiVersionsResponse carrying UNSUPPORTED_VERSION and our ranges, which is how Kafka lets a
/// newer client fall back; for anything else, the correlation id followed by the error code,
/// the common prefix a client can read without knowing the body layout.
pub fn unsupported_response(correlation_id: i32, api_key: i16, _version: i16) -> Bytes {
    let code = ResponseError::UnsupportedVersion.code();
    if api_key == ApiKey::ApiVersions as i16 {
        let body = ApiVersionsResponse::default()
            .with_error_code(code)
            .with_api_keys(api_versions_table());
        if let Ok(frame) = encode_response(
            ApiKey::ApiVersions,
            0,
            correlation_id,
            &ResponseKind::ApiVersions(body),
        ) {
            return frame;
        }
    }
    let mut buf = BytesMut::with_capacity(10);
    buf.put_i32(6);
    buf.put_i32(correlation_id);
    buf.put_i16(code);
    buf.freeze()
}

/// The ApiVersions table.
pub fn api_versions_table() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|&(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::MetadataRequest;

    fn frame(api: i16, version: i16, body: impl FnOnce(&mut BytesMut)) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(api);
        b.put_i16(version);
        b.put_i32(42);
        b.put_i16(-1); // null client id (header v1)
        body(&mut b);
        b.freeze()
    }

    #[test]
    fn decodes_a_metadata_request() {
        let mut b = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(12)
            .with_correlation_id(7)
            .with_client_id(Some("t".into()))
            .encode(&mut b, ApiKey::Metadata.request_header_version(12))
            .unwrap();
        MetadataRequest::default().encode(&mut b, 12).unwrap();
        match decode_request(b.freeze()).unwrap() {
            Decoded::Request(r) => {
                assert_eq!(r.header.correlation_id, 7);
                assert_eq!(r.api_key, ApiKey::Metadata);
                assert!(matches!(r.body, RequestKind::Metadata(_)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_api_and_version_are_unsupported_not_errors() {
        let unknown = frame(999, 0, |_| {});
        assert!(matches!(
            decode_request(unknown).unwrap(),
            Decoded::Unsupported {
                correlation_id: 42,
                api_key: 999,
                ..
            }
        ));
        let too_new = frame(ApiKey::Produce as i16, 99, |_| {});
        assert!(matches!(
            decode_request(too_new).unwrap(),
            Decoded::Unsupported { version: 99, .. }
        ));
        let resp = unsupported_response(42, 999, 0);
        assert_eq!(&resp[..], &[0, 0, 0, 6, 0, 0, 0, 42, 0, 35]);
    }

    #[test]
    fn huge_array_counts_are_errors_not_allocations() {
        // Metadata v1: topics array of i32::MAX entries in a tiny frame.
        let f = frame(ApiKey::Metadata as i16, 1, |b| b.put_i32(i32::MAX));
        assert!(matches!(decode_request(f), Err(DecodeError::Body { .. })));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 3])),
            Err(DecodeError::TooShort(2))
        ));
    }
}
