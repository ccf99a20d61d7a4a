//! Fuzzes the produce-path check of one Kafka v2 record batch: CRC-32C, framing, capped
//! decompression (gzip, snappy, lz4, zstd) and record decoding by kafka-protocol.
//!
//! Input layout: one mode byte, then the batch. If bit 0 of the mode byte is set and the batch
//! holds at least a v2 header (61 bytes), the harness rewrites the batch-length field and the
//! CRC-32C so they match the bytes, which lets the fuzzer reach record decoding and the
//! decompressors instead of stopping at the CRC check. With bit 0 clear the bytes are passed as
//! they are, as a producer would send them.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sediment_broker::{BatchLimits, validate_batch};

/// Size of the v2 batch header; the CRC covers everything from `ATTRIBUTES_OFFSET` on.
const HEADER_SIZE: usize = 61;
const LENGTH_OFFSET: usize = 8;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

const LIMITS: BatchLimits = BatchLimits {
    max_message_bytes: 1 << 20,
    max_decompressed_bytes: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, batch)) = data.split_first() else {
        return;
    };
    let mut batch = batch.to_vec();
    if mode & 1 != 0 && batch.len() >= HEADER_SIZE {
        let length = (batch.len() - 12) as i32;
        batch[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }
    if let Err(e) = validate_batch(&Bytes::from(batch), &LIMITS) {
        let _ = e.to_string();
    }
});
