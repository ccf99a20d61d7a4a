//! FindCoordinator: the live broker that coordinates a group or transactional id
//! ([`crate::Broker::coordinator_for`]: a hash of the key over the live brokers; this broker
//! when it is the only one). Serving it matters even without consumer groups: librdkafka only
//! compresses with lz4 when the broker advertises FindCoordinator (its feature table ties the
//! two together).

use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
    find_coordinator_response::Coordinator,
};
use kafka_protocol::protocol::StrBytes;

use super::Ctx;
use crate::errors::BrokerError;

/// `key_type` values: consumer group, transactional id.
const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

pub(super) fn handle(ctx: &Ctx<'_>, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    // The coordinator, with its address on this connection's listener.
    let locate = |key: &str| match req.key_type {
        GROUP | TRANSACTION => {
            let b = ctx.broker.coordinator_for(key);
            let id = b.id;
            ctx.on_listener(b).ok_or_else(|| {
                BrokerError::CoordinatorNotAvailable(format!(
                    "coordinator {id} has no {} listener",
                    ctx.listener
                ))
            })
        }
        other => Err(BrokerError::InvalidRequest(format!(
            "unknown coordinator key type {other}"
        ))),
    };
    if ctx.version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match locate(key) {
                    Ok(b) => c
                        .with_node_id(BrokerId(b.id))
                        .with_host(StrBytes::from(b.host))
                        .with_port(i32::from(b.port)),
                    Err(e) => {
                        let (code, message) = ctx.error(&e);
                        c.with_node_id(BrokerId(-1))
                            .with_port(-1)
                            .with_error_code(code)
                            .with_error_message(message)
                    }
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let resp = FindCoordinatorResponse::default();
    match locate(&req.key) {
        Ok(b) => resp
            .with_node_id(BrokerId(b.id))
            .with_host(StrBytes::from(b.host))
            .with_port(i32::from(b.port))
            .with_error_message(None),
        Err(e) => {
            let (code, message) = ctx.error(&e);
            let resp = resp
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(code);
            if ctx.version >= 1 {
                resp.with_error_message(message)
            } else {
                resp
            }
        }
    }
}
