//! DescribeCluster: the cluster id, the controller and the brokers.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse,
    describe_cluster_response::DescribeClusterBroker,
};

use super::{CLUSTER_OPERATIONS, Ctx, OPERATIONS_NOT_REQUESTED};

/// `endpoint_type` values (KIP-919).
const BROKERS: i8 = 1;
const CONTROLLERS: i8 = 2;

pub(super) fn handle(ctx: &Ctx<'_>, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let live = ctx.live_brokers();
    let controller = live.first().map_or(ctx.node(), |b| BrokerId(b.id));
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(ctx.broker.cluster_id().to_string().into())
        .with_controller_id(controller)
        .with_endpoint_type(if ctx.version >= 1 { BROKERS } else { 1 })
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS
        } else {
            OPERATIONS_NOT_REQUESTED
        });
    if ctx.version >= 1 && req.endpoint_type != BROKERS {
        let (code, message) = if req.endpoint_type == CONTROLLERS {
            (
                ResponseError::MismatchedEndpointType,
                "this listener serves brokers, not controllers",
            )
        } else {
            (
                ResponseError::UnsupportedEndpointType,
                "unknown endpoint type",
            )
        };
        return resp
            .with_error_code(ctx.code(code.code()))
            .with_error_message(Some(message.into()));
    }
    resp.brokers = live
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(b.host.into())
                .with_port(i32::from(b.port))
                .with_rack(b.rack.map(Into::into))
        })
        .collect();
    resp
}
