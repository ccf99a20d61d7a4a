//! Consumer group membership: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, and the admin APIs
//! ListGroups, DescribeGroups, DeleteGroups. The state machine is in [`crate::group`]; these
//! functions only translate messages and wait (JoinGroup, SyncGroup) outside its lock.

use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest,
    SyncGroupResponse,
    delete_groups_response::DeletableGroupResult,
    describe_groups_response::{DescribedGroup, DescribedGroupMember},
    join_group_response::JoinGroupResponseMember,
    leave_group_response::MemberResponse,
    list_groups_response::ListedGroup,
};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, OPERATIONS_NOT_REQUESTED};
use crate::errors::BrokerError;
use crate::group::{GroupState, JoinRequest, Reply};

/// ACL operations on a group without an authorizer: read, delete, describe.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

fn s(v: impl Into<String>) -> StrBytes {
    v.into().into()
}

/// Waits for a parked reply, giving up when the broker shuts down.
async fn wait<T>(ctx: &Ctx<'_>, reply: Reply<T>) -> Result<T, BrokerError> {
    tokio::select! {
        r = reply.wait() => r,
        _ = ctx.shutdown.cancelled() => Err(BrokerError::CoordinatorNotAvailable(
            "the broker is shutting down".into(),
        )),
    }
}

pub(super) async fn join(ctx: &Ctx<'_>, req: JoinGroupRequest) -> JoinGroupResponse {
    let session = i64::from(req.session_timeout_ms);
    let rebalance = if ctx.version >= 1 && req.rebalance_timeout_ms > 0 {
        i64::from(req.rebalance_timeout_ms)
    } else {
        session
    };
    let join = JoinRequest {
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.map(|i| i.to_string()),
        client_id: ctx.client_id.to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout_ms: session,
        rebalance_timeout_ms: rebalance,
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: ctx.version >= 4,
    };
    let empty_name = || (ctx.version < 7).then(|| s(""));
    let joined = match ctx.broker.check_coordinator(&join.group_id) {
        Ok(()) => wait(ctx, ctx.broker.groups().join(join)).await,
        Err(e) => Err(e),
    };
    match joined {
        Ok(r) => JoinGroupResponse::default()
            .with_generation_id(r.generation_id)
            .with_protocol_type(r.protocol_type.map(s))
            .with_protocol_name(r.protocol_name.map(s).or_else(empty_name))
            .with_leader(s(r.leader))
            .with_skip_assignment(r.skip_assignment && ctx.version >= 9)
            .with_member_id(s(r.member_id))
            .with_members(
                r.members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(s(m.member_id))
                            .with_group_instance_id(m.instance_id.map(s))
                            .with_metadata(m.metadata)
                    })
                    .collect(),
            ),
        Err(e) => {
            let member_id = match &e {
                BrokerError::MemberIdRequired(id) => s(id.clone()),
                _ => req.member_id,
            };
            JoinGroupResponse::default()
                .with_error_code(ctx.error(&e).0)
                .with_generation_id(-1)
                .with_protocol_name(empty_name())
                .with_member_id(member_id)
        }
    }
}

pub(super) async fn sync(ctx: &Ctx<'_>, req: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let synced = match ctx.broker.check_coordinator(&req.group_id) {
        Ok(()) => {
            let reply = ctx.broker.groups().sync(
                &req.group_id,
                req.generation_id,
                &req.member_id,
                req.group_instance_id.as_deref(),
                (req.protocol_type.as_deref(), req.protocol_name.as_deref()),
                assignments,
            );
            wait(ctx, reply).await
        }
        Err(e) => Err(e),
    };
    match synced {
        Ok(r) => {
            let resp = SyncGroupResponse::default().with_assignment(r.assignment);
            if ctx.version >= 5 {
                resp.with_protocol_type(r.protocol_type.map(s))
                    .with_protocol_name(r.protocol_name.map(s))
            } else {
                resp
            }
        }
        Err(e) => SyncGroupResponse::default().with_error_code(ctx.error(&e).0),
    }
}

pub(super) fn heartbeat(ctx: &Ctx<'_>, req: HeartbeatRequest) -> HeartbeatResponse {
    let result = ctx.broker.check_coordinator(&req.group_id).and_then(|()| {
        ctx.broker.groups().heartbeat(
            &req.group_id,
            req.generation_id,
            &req.member_id,
            req.group_instance_id.as_deref(),
        )
    });
    HeartbeatResponse::default().with_error_code(ctx.outcome(&result).0)
}

pub(super) fn leave(ctx: &Ctx<'_>, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let left = ctx
        .broker
        .check_coordinator(&req.group_id)
        .and_then(|()| ctx.broker.groups().leave(&req.group_id, &members));
    match left {
        Err(e) => LeaveGroupResponse::default().with_error_code(ctx.error(&e).0),
        Ok(results) if ctx.version < 3 => {
            let code = results.first().map_or(0, |r| ctx.outcome(r).0);
            LeaveGroupResponse::default().with_error_code(code)
        }
        Ok(results) => LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(results)
                .map(|((member_id, instance_id), r)| {
                    MemberResponse::default()
                        .with_member_id(s(member_id))
                        .with_group_instance_id(instance_id.map(s))
                        .with_error_code(ctx.outcome(&r).0)
                })
                .collect(),
        ),
    }
}

pub(super) fn list(ctx: &Ctx<'_>, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|f| f.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|f| f.to_ascii_lowercase())
        .collect();
    let groups = ctx
        .broker
        .groups()
        .list()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_ascii_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(s(g.group_id)))
                .with_protocol_type(s(g.protocol_type))
                .with_group_state(if ctx.version >= 4 {
                    s(g.state)
                } else {
                    StrBytes::default()
                })
                .with_group_type(if ctx.version >= 5 {
                    s(g.group_type)
                } else {
                    StrBytes::default()
                })
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(super) fn describe(ctx: &Ctx<'_>, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let operations = if ctx.version >= 3 && req.include_authorized_operations {
        GROUP_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let base = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(operations);
            if id.is_empty() {
                let e = BrokerError::InvalidGroupId("the group id is empty".into());
                return base.with_error_code(ctx.error(&e).0);
            }
            if let Err(e) = ctx.broker.check_coordinator(&id) {
                return base.with_error_code(ctx.error(&e).0);
            }
            match ctx.broker.groups().describe(&id) {
                // Kafka describes an unknown group as Dead with no error.
                None => base.with_group_state(s(GroupState::Dead.name())),
                Some(g) => base
                    .with_group_state(s(g.state))
                    .with_protocol_type(s(g.protocol_type))
                    .with_protocol_data(s(g.protocol))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(s(m.member_id))
                                    .with_group_instance_id(m.instance_id.map(s))
                                    .with_client_id(s(m.client_id))
                                    .with_client_host(s(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(super) fn delete(ctx: &Ctx<'_>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = req
        .groups_names
        .into_iter()
        .map(|id| {
            let result = ctx
                .broker
                .check_coordinator(&id)
                .and_then(|()| ctx.broker.groups().delete_group(&id));
            if result.is_ok() {
                tracing::info!(group = %&*id, "deleted group");
            }
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(ctx.outcome(&result).0)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
