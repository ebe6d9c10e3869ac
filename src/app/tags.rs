//! siyu's corp tags: one per channel (and each channel's extra tags) in the channel group, one per
//! tier in the tier group. siyu makes sure they exist and keeps their ids; when an admin renames
//! one it follows the id, when an admin deletes one it recreates it and puts it back on the
//! customers who had it.

use serde::{Deserialize, Serialize};

use super::{AppError, Services};
use crate::store::contacts::{Channel, SiyuTag};
use crate::wecom::client::types::{AddTagsRequest, NewTag, TagGroup};

/// The channel of customers whose `State` matches no channel.
pub const UNATTRIBUTED: &str = "unattributed";
pub const UNATTRIBUTED_NAME: &str = "未归因";

pub const CHANNEL: &str = "channel";
pub const EXTRA: &str = "extra";
pub const TIER: &str = "tier";
pub const SEGMENT: &str = "segment";

/// Job: put a recreated tag back on one relation.
pub const RETAG_JOB: &str = "tags.reapply";

#[derive(Debug, Serialize, Deserialize)]
pub struct Reapply {
    pub userid: String,
    pub external_userid: String,
    pub old_tag_id: String,
    pub new_tag_id: String,
}

fn wanted(
    services: &Services,
    channels: &[Channel],
    tiers: &[crate::config::TierSettings],
) -> Vec<SiyuTag> {
    let s = &services.settings;
    let tag = |kind: &str, code: &str, name: &str, group: &str| SiyuTag {
        kind: kind.into(),
        code: code.into(),
        name: name.into(),
        group_name: group.into(),
        tag_id: None,
        group_id: None,
    };
    let mut out = vec![tag(
        CHANNEL,
        UNATTRIBUTED,
        UNATTRIBUTED_NAME,
        &s.tags.channel_group,
    )];
    for c in channels {
        out.push(tag(CHANNEL, &c.code, &c.name, &s.tags.channel_group));
        for extra in &c.tags {
            if !out.iter().any(|t| t.kind == EXTRA && t.code == *extra) {
                out.push(tag(EXTRA, extra, extra, &s.tags.channel_group));
            }
        }
    }
    for t in tiers {
        out.push(tag(TIER, &t.code, &t.name, &s.tags.tier_group));
    }
    for name in super::segments::SEGMENTS {
        out.push(tag(SEGMENT, name, name, &s.rfm.group_name));
    }
    out
}

/// Makes sure every tag siyu needs exists in WeCom, recording ids; recreates deleted ones and
/// enqueues putting them back. Returns the tags as they now stand.
pub async fn ensure(services: &Services) -> Result<Vec<SiyuTag>, AppError> {
    let _one_at_a_time = services.tag_sync.lock().await;
    let channels = services.store.channels().await?;
    let mut library = services.wecom.tag_library().await?.tag_group;
    let stored = services.store.siyu_tags().await?;
    let now = services.clock.now_ms();
    let mut result = Vec::new();
    for mut want in wanted(services, &channels, &services.tiers().await?) {
        let known = stored
            .iter()
            .find(|t| t.kind == want.kind && t.code == want.code);
        let known_id = known.and_then(|t| t.tag_id.clone());
        if let Some(id) = &known_id
            && let Some((group, tag)) = find_by_id(&library, id)
        {
            // Still there, perhaps renamed by an admin: follow the id, keep its current name.
            want.tag_id = Some(tag.id.clone());
            want.group_id = Some(group.group_id.clone());
            want.name = tag.name.clone();
            want.group_name = group.group_name.clone();
        } else if let Some((group, tag)) = find_by_name(&library, &want.group_name, &want.name) {
            want.tag_id = Some(tag.id.clone());
            want.group_id = Some(group.group_id.clone());
        } else {
            let group_id = library
                .iter()
                .find(|g| !g.deleted && g.group_name == want.group_name)
                .map(|g| g.group_id.clone());
            let request = AddTagsRequest {
                group_name: group_id.is_none().then(|| want.group_name.clone()),
                group_id,
                tag: vec![NewTag {
                    name: want.name.clone(),
                    order: None,
                }],
                ..Default::default()
            };
            let created = match services.wecom.add_tags(&request).await {
                Ok(created) => created,
                // Another replica created it a moment ago: adopt theirs.
                Err(e) if e.errcode() == Some(crate::wecom::client::code::DUPLICATE_TAG_NAME) => {
                    library = services.wecom.tag_library().await?.tag_group;
                    let Some((group, tag)) = find_by_name(&library, &want.group_name, &want.name)
                    else {
                        return Err(e.into());
                    };
                    TagGroup {
                        tag: vec![tag.clone()],
                        ..group.clone()
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let tag = created
                .tag
                .iter()
                .find(|t| t.name == want.name)
                .cloned()
                .unwrap_or_default();
            want.tag_id = Some(tag.id.clone()).filter(|id| !id.is_empty());
            want.group_id = Some(created.group_id.clone());
            merge(&mut library, created);
            tracing::info!(kind = %want.kind, code = %want.code, "created corp tag");
            if let (Some(old), Some(new)) = (&known_id, &want.tag_id) {
                enqueue_reapply(services, old, new).await?;
            }
        }
        services.store.save_siyu_tag(&want, now).await?;
        result.push(want);
    }
    Ok(result)
}

fn find_by_id<'a>(
    library: &'a [TagGroup],
    id: &str,
) -> Option<(&'a TagGroup, &'a crate::wecom::client::types::Tag)> {
    library.iter().filter(|g| !g.deleted).find_map(|g| {
        g.tag
            .iter()
            .find(|t| t.id == id && !t.deleted)
            .map(|t| (g, t))
    })
}

fn find_by_name<'a>(
    library: &'a [TagGroup],
    group: &str,
    name: &str,
) -> Option<(&'a TagGroup, &'a crate::wecom::client::types::Tag)> {
    library
        .iter()
        .filter(|g| !g.deleted && g.group_name == group)
        .find_map(|g| {
            g.tag
                .iter()
                .find(|t| t.name == name && !t.deleted)
                .map(|t| (g, t))
        })
}

fn merge(library: &mut Vec<TagGroup>, created: TagGroup) {
    match library.iter_mut().find(|g| g.group_id == created.group_id) {
        Some(g) => {
            for t in created.tag {
                if !g.tag.iter().any(|x| x.id == t.id) {
                    g.tag.push(t);
                }
            }
        }
        None => library.push(created),
    }
}

/// One job per relation that carried the deleted tag, paced by the client's limiter.
async fn enqueue_reapply(services: &Services, old: &str, new: &str) -> Result<(), AppError> {
    let follows = services.store.follows_with_tag(old).await?;
    let mut tx = services.store.begin().await?;
    for f in &follows {
        let payload = Reapply {
            userid: f.userid.clone(),
            external_userid: f.external_userid.clone(),
            old_tag_id: old.into(),
            new_tag_id: new.into(),
        };
        let key = format!("reapply:{new}:{}:{}", f.userid, f.external_userid);
        crate::jobs::enqueue(
            &mut tx,
            &services.settings.jobs,
            &services.clock,
            RETAG_JOB,
            &payload,
            &key,
            None,
        )
        .await?;
    }
    tx.commit().await?;
    tracing::info!(
        old,
        new,
        relations = follows.len(),
        "putting a recreated tag back"
    );
    Ok(())
}

/// The job: mark the new tag on the relation and record it in place of the old one.
pub async fn reapply(services: &Services, r: &Reapply) -> Result<(), AppError> {
    services
        .wecom
        .mark_tag(&crate::wecom::client::types::MarkTagRequest {
            userid: r.userid.clone(),
            external_userid: r.external_userid.clone(),
            add_tag: vec![r.new_tag_id.clone()],
            remove_tag: vec![],
        })
        .await?;
    services
        .store
        .replace_follow_tag(
            &r.userid,
            &r.external_userid,
            &r.old_tag_id,
            &r.new_tag_id,
            services.clock.now_ms(),
        )
        .await?;
    Ok(())
}

/// The tag id siyu uses for `kind`/`code`, if it has one.
pub async fn tag_id(
    services: &Services,
    kind: &str,
    code: &str,
) -> Result<Option<String>, AppError> {
    Ok(services
        .store
        .siyu_tags()
        .await?
        .into_iter()
        .find(|t| t.kind == kind && t.code == code)
        .and_then(|t| t.tag_id))
}
