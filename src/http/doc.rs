//! The OpenAPI document's frame (info, the bearer scheme) and the schemas of answers that the
//! handlers build as JSON. The paths come from the handlers' `#[utoipa::path]` annotations,
//! collected by the routers themselves (`utoipa_axum::routes!`), so a route and its description
//! are registered by one call.

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::app::activity::Problem;
use crate::app::channels::ChannelView;
use crate::app::tiers::MetricValue;
use crate::config::TierSettings;
use crate::store::contacts::{ContactEvent, Customer, Follow};
use crate::store::inbox::EventSummary;
use crate::store::tiers::{Pin, RulesChange, TierChange};

/// The name of the bearer scheme in `components.securitySchemes`.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "siyu",
        description = "siyu's HTTP interface: the operator API under `/api/v1` (every path there \
            except `/api/v1/openapi.json` needs `Authorization: Bearer <api.token>`), WeCom's \
            callback, the health check and the Prometheus metrics. API errors answer \
            `{\"error\": \"...\"}` naming what is wrong."
    ),
    security(("bearer" = [])),
    modifiers(&BearerScheme),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the `api.token` of the configuration"))
                    .build(),
            ),
        );
    }
}

/// Every error of the JSON API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong; for a bad body or query it names the field.
    #[schema(example = "limit: must be between 1 and 1000")]
    pub error: String,
}

/// A rejected activity batch. A body that is not a batch at all answers `error` alone; a batch
/// with bad records lists every problem, and nothing of it was stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityRejected {
    #[schema(example = "the batch was rejected whole; nothing was stored")]
    pub error: String,
    #[serde(default)]
    pub problems: Vec<Problem>,
}

/// Inbox events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventSummary>,
}

/// The channels and, last, the `unattributed` pseudo-channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    pub channels: Vec<ChannelView>,
}

/// The shop's customer ids now mapped to the customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerRefs {
    pub external_userid: crate::ids::ExternalUserId,
    pub refs: Vec<String>,
}

/// Where the tier rules in force come from.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RulesSource {
    /// Changed through `PUT /api/v1/tiers`.
    Api,
    /// The `[[tiers]]` of the configuration.
    Config,
}

/// The tier rules in force and the last 100 changes made through the API, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TierRules {
    pub tiers: Vec<TierSettings>,
    #[schema(value_type = RulesSource)]
    pub source: &'static str,
    pub changes: Vec<RulesChange>,
}

// ---- answers built with `json!` in `app` (their shapes as the code builds them) ----

// As `app::customers::view` builds it.
/// A customer as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerView {
    pub customer: Customer,
    /// The operator's pin on the customer's tier, if any.
    #[schema(required = true)]
    pub pin: Option<Pin>,
    /// The value segment, once the customer has been segmented.
    #[schema(required = true)]
    pub segment: Option<CustomerSegment>,
    /// The value of every (metric, window) the tier rules look at.
    pub metrics: Vec<MetricValue>,
    /// The relations: members following the customer.
    pub follows: Vec<Follow>,
    pub tier_history: Vec<TierChange>,
    /// Relation events, oldest first.
    pub events: Vec<ContactEvent>,
    pub groups: CustomerGroups,
}

// As `app::groups::of_customer` builds it.
/// The customer's tier groups: the groups they are and were in, the invitation pending (if
/// any) and the open removal requests; every invitation and removal request, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerGroups {
    pub groups: Vec<CustomerGroup>,
    /// The invitation still on its way (queued, tasked, delivered or over the cap), if any.
    #[schema(value_type = Option<Object>, required = true)]
    pub invitation: Option<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub removal_requests: Vec<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub invitations: Vec<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub removals: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerGroup {
    pub chat_id: String,
    pub name: Option<String>,
    pub tier: Option<String>,
    pub joined_at: i64,
    /// 1 invited directly, 2 by link, 3 scanned the group QR code.
    pub join_scene: i64,
    /// The join way's state they came through.
    pub state: Option<String>,
    pub left_at: Option<i64>,
    /// The customer deleted every member (the record is kept).
    pub lost: bool,
    pub in_group: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerSegment {
    pub segment: String,
    /// The R, F and M scores (1 to 5), e.g. `"R5F3M4"`.
    pub rfm: String,
}

// As `app::tiers::summary` builds it.
/// Customers per tier and segment, and the tier moves of the last day, week and month.
#[derive(Debug, Serialize, ToSchema)]
pub struct TierSummary {
    /// Every tier in force, in rank order.
    pub tiers: Vec<TierCount>,
    pub segments: Vec<SegmentCount>,
    pub moves: TierMovesByPeriod,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierCount {
    pub code: String,
    pub name: String,
    pub customers: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentCount {
    pub segment: String,
    pub customers: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierMovesByPeriod {
    pub day: TierMoves,
    pub week: TierMoves,
    pub month: TierMoves,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierMoves {
    /// Customers moved to a higher tier.
    pub promoted: i64,
    /// Customers moved to a lower tier (or to a tier no longer in force).
    pub demoted: i64,
    pub moves: Vec<TierMove>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierMove {
    pub from: String,
    pub to: String,
    pub customers: i64,
}
