//! Channels (渠道活码): each is a 「联系我」 QR code whose `state` is the channel's code, so every
//! customer who adds through it arrives with that code and is attributed, tagged, noted and
//! welcomed accordingly.

use serde::{Deserialize, Serialize};

use super::tags::{self, UNATTRIBUTED, UNATTRIBUTED_NAME};
use super::{AppError, Services};
use crate::config::ChannelSettings;
use crate::ids::UserId;
use crate::store::Tx;
use crate::store::contacts::{self, Channel, ChannelStats, Welcome};
use crate::wecom::client::types::{Attachment, ContactWayRequest, UpdateContactWayRequest};

/// A channel as an operator describes it (the API body, or `[[channels]]` in the config).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelInput {
    #[schema(min_length = 1, max_length = 30, pattern = "^[A-Za-z0-9_.-]+$")]
    pub code: String,
    #[schema(min_length = 1, max_length = 30)]
    pub name: String,
    #[schema(min_items = 1, max_items = 100)]
    pub staff: Vec<UserId>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub welcome: Option<Welcome>,
}

/// A channel with what happened through it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    #[serde(flatten)]
    pub channel: Channel,
    pub stats: ChannelStats,
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> AppError {
    AppError::Invalid(format!("{field}: {reason}"))
}

/// Checks everything WeCom would refuse, naming the field.
pub fn validate(services: &Services, input: &ChannelInput) -> Result<(), AppError> {
    let code = &input.code;
    if code.is_empty() || code.chars().count() > 30 {
        return Err(invalid(
            "code",
            "must be 1 to 30 characters (it is the QR code's state)",
        ));
    }
    if !code
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(invalid("code", "may hold letters, digits, _ - . only"));
    }
    if code == UNATTRIBUTED {
        return Err(invalid(
            "code",
            "\"unattributed\" is reserved for customers of no channel",
        ));
    }
    if input.name.trim().is_empty() || input.name.chars().count() > 30 {
        return Err(invalid(
            "name",
            "must be 1 to 30 characters (it is the channel's tag)",
        ));
    }
    if input.staff.is_empty() || input.staff.len() > 100 {
        return Err(invalid("staff", "must list 1 to 100 members"));
    }
    if let Some(bad) = input.staff.iter().find(|s| s.as_str().trim().is_empty()) {
        return Err(invalid("staff", format!("{bad:?} is not a member userid")));
    }
    if let Some(bad) = input
        .tags
        .iter()
        .find(|t| t.trim().is_empty() || t.chars().count() > 30)
    {
        return Err(invalid(
            "tags",
            format!("{bad:?} must be 1 to 30 characters"),
        ));
    }
    if let Some(w) = &input.welcome {
        if w.text.as_deref().is_none_or(str::is_empty) && w.attachments.is_empty() {
            return Err(invalid("welcome", "needs a text or an attachment"));
        }
        if let Some(text) = &w.text {
            if text.len() > 4000 {
                return Err(invalid("welcome.text", "WeCom takes at most 4000 bytes"));
            }
            services
                .templates
                .check_str(text)
                .map_err(|e| invalid("welcome.text", e))?;
        }
        if w.attachments.len() > 9 {
            return Err(invalid("welcome.attachments", "at most 9"));
        }
        for (i, a) in w.attachments.iter().enumerate() {
            serde_json::from_value::<Attachment>(a.clone())
                .map_err(|e| invalid(&format!("welcome.attachments[{i}]"), e))?;
        }
    }
    Ok(())
}

fn contact_way(input: &ChannelInput) -> ContactWayRequest {
    ContactWayRequest {
        // Always multi-member: a contact way's type cannot change later, and a channel's staff
        // may grow from one member to several.
        kind: 2,
        scene: 2,
        remark: Some(super::templates::truncate_chars(&input.name, 30)),
        skip_verify: Some(true),
        state: Some(input.code.clone()),
        user: input.staff.clone(),
    }
}

/// Creates the channel and its contact way; answers the stored channel with its QR code.
pub async fn create(
    services: &Services,
    input: ChannelInput,
    source: &str,
) -> Result<Channel, AppError> {
    validate(services, &input)?;
    let now = services.clock.now_ms();
    let mut channel = Channel {
        code: input.code.clone(),
        name: input.name.clone(),
        staff: input.staff.clone(),
        tags: input.tags.clone(),
        welcome: input.welcome.clone(),
        config_id: None,
        qr_code: None,
        source: source.into(),
    };
    // The row first, so two creates of one code cannot both make a contact way.
    let mut tx = services.store.begin().await?;
    if !contacts::insert_channel(&mut tx, &channel, now).await? {
        return Err(AppError::Conflict(format!(
            "code: channel {:?} exists",
            input.code
        )));
    }
    tx.commit().await?;
    let way = match services.wecom.add_contact_way(&contact_way(&input)).await {
        Ok(way) => way,
        Err(e) => {
            services.store.delete_channel(&input.code).await?;
            return Err(e.into());
        }
    };
    channel.config_id = Some(way.config_id);
    channel.qr_code = Some(way.qr_code);
    services
        .store
        .update_channel(&channel, services.clock.now_ms())
        .await?;
    ensure_tags_or_warn(services).await;
    tracing::info!(code = %channel.code, "channel created");
    Ok(channel)
}

/// Replaces a channel's settings and its contact way's members, state and remark.
pub async fn update(
    services: &Services,
    code: &str,
    input: ChannelInput,
) -> Result<Channel, AppError> {
    if input.code != code {
        return Err(invalid(
            "code",
            "cannot change (create a new channel instead)",
        ));
    }
    validate(services, &input)?;
    let Some(mut channel) = services.store.channel(code).await? else {
        return Err(AppError::NotFound(format!("no channel {code:?}")));
    };
    if let Some(config_id) = &channel.config_id {
        let way = contact_way(&input);
        services
            .wecom
            .update_contact_way(&UpdateContactWayRequest {
                config_id: config_id.clone(),
                remark: way.remark,
                skip_verify: way.skip_verify,
                state: way.state,
                user: Some(way.user),
            })
            .await?;
    }
    channel.name = input.name;
    channel.staff = input.staff;
    channel.tags = input.tags;
    channel.welcome = input.welcome;
    services
        .store
        .update_channel(&channel, services.clock.now_ms())
        .await?;
    ensure_tags_or_warn(services).await;
    Ok(channel)
}

/// Deletes the channel and its contact way. Its tag stays on the customers who came through it.
pub async fn delete(services: &Services, code: &str) -> Result<(), AppError> {
    let Some(channel) = services.store.channel(code).await? else {
        return Err(AppError::NotFound(format!("no channel {code:?}")));
    };
    if let Some(config_id) = &channel.config_id {
        services.wecom.delete_contact_way(config_id).await?;
    }
    services.store.delete_channel(code).await?;
    Ok(())
}

/// Every channel with its numbers, and the `unattributed` channel for customers of none.
pub async fn list(services: &Services) -> Result<Vec<ChannelView>, AppError> {
    let stats = services.store.channel_stats().await?;
    let stats_of = |code: &str| {
        stats
            .iter()
            .find(|(c, _)| c == code)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    let mut views: Vec<ChannelView> = services
        .store
        .channels()
        .await?
        .into_iter()
        .map(|c| ChannelView {
            stats: stats_of(&c.code),
            channel: c,
        })
        .collect();
    views.push(ChannelView {
        channel: unattributed(),
        stats: stats_of(UNATTRIBUTED),
    });
    Ok(views)
}

pub async fn get(services: &Services, code: &str) -> Result<ChannelView, AppError> {
    list(services)
        .await?
        .into_iter()
        .find(|v| v.channel.code == code)
        .ok_or_else(|| AppError::NotFound(format!("no channel {code:?}")))
}

/// The pseudo-channel of customers whose state matched no channel.
pub fn unattributed() -> Channel {
    Channel {
        code: UNATTRIBUTED.into(),
        name: UNATTRIBUTED_NAME.into(),
        staff: vec![],
        tags: vec![],
        welcome: None,
        config_id: None,
        qr_code: None,
        source: "builtin".into(),
    }
}

/// The channel a `State` points to, or `unattributed`.
pub async fn attribute(services: &Services, state: Option<&str>) -> Result<Channel, AppError> {
    match state.filter(|s| !s.is_empty()) {
        Some(code) => Ok(services
            .store
            .channel(code)
            .await?
            .unwrap_or_else(unattributed)),
        None => Ok(unattributed()),
    }
}

/// [`attribute`], read in `tx` (an event handler's).
pub async fn attribute_in(tx: &mut Tx, state: Option<&str>) -> Result<Channel, AppError> {
    match state.filter(|s| !s.is_empty()) {
        Some(code) => Ok(contacts::channel_in(tx, code)
            .await?
            .unwrap_or_else(unattributed)),
        None => Ok(unattributed()),
    }
}

/// Creates the channels declared in the config that don't exist yet, and updates those that
/// changed. Called at start.
pub async fn declare(services: &Services, declared: &[ChannelSettings]) -> Result<(), AppError> {
    for d in declared {
        let welcome = d
            .welcome
            .clone()
            .map(serde_json::from_value::<Welcome>)
            .transpose()
            .map_err(|e| invalid(&format!("channels.{}.welcome", d.code), e))?;
        let input = ChannelInput {
            code: d.code.clone(),
            name: d.name.clone(),
            staff: d.staff.iter().map(UserId::from).collect(),
            tags: d.tags.clone(),
            welcome,
        };
        match services.store.channel(&d.code).await? {
            None => {
                create(services, input, "config").await?;
            }
            Some(existing)
                if existing.name != input.name
                    || existing.staff != input.staff
                    || existing.tags != input.tags
                    || existing.welcome != input.welcome =>
            {
                update(services, &d.code, input).await?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

async fn ensure_tags_or_warn(services: &Services) {
    // The channel works without its tag for now; the tag job ensures it again before tagging.
    if let Err(e) = tags::ensure(services).await {
        tracing::warn!(error = %e, "could not make sure siyu's tags exist; will try again when tagging");
    }
}
