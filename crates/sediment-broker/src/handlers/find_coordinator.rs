//! FindCoordinator: this broker coordinates every group and transactional id, since it is the
//! only broker. Serving it matters even without consumer groups: librdkafka only compresses with
//! lz4 when the broker advertises FindCoordinator (its feature table ties the two together).

use kafka_protocol::messages::{
    FindCoordinatorRequest, FindCoordinatorResponse, find_coordinator_response::Coordinator,
};
use kafka_protocol::protocol::StrBytes;

use super::Ctx;
use crate::errors::BrokerError;

/// `key_type` values: consumer group, transactional id.
const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

pub(super) fn handle(ctx: &Ctx<'_>, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let config = ctx.broker.config();
    let host: StrBytes = config.advertised_host.clone().into();
    let port = i32::from(config.advertised_port);
    let check = || match req.key_type {
        GROUP | TRANSACTION => Ok(()),
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
                match check() {
                    Ok(()) => c
                        .with_node_id(ctx.node())
                        .with_host(host.clone())
                        .with_port(port),
                    Err(e) => {
                        let (code, message) = ctx.error(&e);
                        c.with_node_id(kafka_protocol::messages::BrokerId(-1))
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
    match check() {
        Ok(()) => resp
            .with_node_id(ctx.node())
            .with_host(host)
            .with_port(port)
            .with_error_message(None),
        Err(e) => {
            let (code, message) = ctx.error(&e);
            let resp = resp
                .with_node_id(kafka_protocol::messages::BrokerId(-1))
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
