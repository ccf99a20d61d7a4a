//! ApiVersions: the served API table (see `protocol::versions`).

use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::Ctx;
use crate::protocol::api_versions_table;

pub(super) fn handle(_ctx: &Ctx<'_>, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(api_versions_table())
}
