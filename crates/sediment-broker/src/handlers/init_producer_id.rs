//! InitProducerId: a fresh producer id (epoch 0) for every idempotent producer. As in Kafka, a
//! producer without a transactional id always gets a new id, even when it names its old one
//! (KIP-360 epoch bumps only matter to transactional producers). Ids come from blocks reserved
//! durably in the metadata store, so they are unique across restarts.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Ctx;
use crate::errors::BrokerError;

pub(super) fn handle(ctx: &Ctx<'_>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let result = match req.transactional_id {
        Some(id) => Err(BrokerError::InvalidRequest(format!(
            "transactions are not supported (transactional.id {})",
            &*id
        ))),
        None => ctx.broker.allocate_producer_id(),
    };
    match result {
        Ok(id) => {
            tracing::debug!(producer_id = id, "allocated producer id");
            resp.with_producer_id(ProducerId(id)).with_producer_epoch(0)
        }
        Err(e) => {
            tracing::info!(error = %e, "InitProducerId refused");
            resp.with_error_code(ctx.error(&e).0)
        }
    }
}
