//! siyu's corp tags, and every write of them on a relation. siyu owns three tag groups: one
//! tag per channel (and each channel's extra tags) in the channel group, one per tier in the
//! tier group, one per value segment in the segment group. It makes sure they exist and keeps
//! their ids; when an admin renames one it follows the id, when an admin deletes one it recreates
//! it and puts it back on the customers who had it.
//!
//! One job writes them: [`SYNC_JOB`] brings a relation's siyu tags to what they should be, computed
//! from the state when the job runs (the relation's channel, the customer's tier and segment), in
//! one `mark_tag` that adds the wanted tags and removes siyu's other tier and segment tags. Any
//! number of such jobs for one relation, in any order, end in the right tags; features that change
//! what a relation should carry (an add, a tier change, a segment change, a tag put back) only
//! enqueue one.

use super::hooks::{Hooks, TierChanged};
use super::{AppError, Registrar, RelationJob, RelationsJob, Services, for_each_relation};
use crate::ids::{ExternalUserId, TagId, UserId};
use crate::jobs::{BoxFuture, JobError};
use crate::store::Tx;
use crate::store::contacts::{self, Channel, Follow, FollowStatus, SiyuTag, TagKind};
use crate::wecom::client::types::{AddTagsRequest, MarkTagRequest, NewTag, TagGroup};
use crate::wecom::client::{WecomError, code};

/// The channel of customers whose `State` matches no channel.
pub const UNATTRIBUTED: &str = "unattributed";
pub const UNATTRIBUTED_NAME: &str = "未归因";

/// Job: bring one relation's siyu tags to what they should be now.
pub const SYNC_JOB: &str = "tags.sync";
/// Job: [`SYNC_JOB`] for each of many relations (a batch of tier changes).
pub const SYNC_BATCH_JOB: &str = "tags.sync_batch";
/// Job: make sure siyu's tags exist in WeCom's tag library (after an admin edited it).
pub const LIBRARY_JOB: &str = "tags.resync";
/// The lock that keeps syncs of the tag library one at a time across replicas.
const LIBRARY_LOCK: &str = "tags.library";
/// Kinds of tag jobs queued by earlier versions (a snapshot of one change each); they run as a
/// [`SYNC_JOB`] of their relation, which is what they meant.
const LEGACY_JOBS: [&str; 3] = ["contact.tag", "tiers.retag", "tags.reapply"];

/// Tag kinds of which a relation carries exactly one: siyu takes the others off.
const EXCLUSIVE: [TagKind; 2] = [TagKind::Tier, TagKind::Segment];

pub fn register(services: &Services, r: &mut Registrar) {
    for kind in std::iter::once(SYNC_JOB).chain(LEGACY_JOBS) {
        let s = services.clone();
        r.jobs.register(kind, move |ctx| {
            let s = s.clone();
            async move {
                let job: RelationJob = ctx.payload()?;
                sync(&s, &job).await
            }
        });
    }
    let s = services.clone();
    r.jobs.register(SYNC_BATCH_JOB, move |ctx| {
        let s = s.clone();
        async move {
            let job: RelationsJob = ctx.payload()?;
            for_each_relation(&job, |relation| {
                let s = s.clone();
                async move { sync(&s, &relation).await }
            })
            .await
        }
    });
    let s = services.clone();
    r.jobs.register(LIBRARY_JOB, move |_ctx| {
        let s = s.clone();
        async move { ensure(&s).await.map(drop).map_err(JobError::from) }
    });
    for change in ["create", "update", "delete", "shuffle"] {
        let s = services.clone();
        r.events.register(
            &format!("change_external_tag.{change}"),
            move |ctx, _event, tx| {
                let s = s.clone();
                Box::pin(async move {
                    let key = format!("tagsync:{}", ctx.inbox_id);
                    s.enqueue(tx, LIBRARY_JOB, &serde_json::json!({}), &key, None)
                        .await
                        .map_err(|e| e.to_string())
                })
            },
        );
    }
}

/// A tier or segment change syncs the tags of every relation of the customer.
pub fn hooks(h: &mut Hooks) {
    h.on_tier_change("tags", on_tier_change);
    h.on_segment_change("tags", on_segment_change);
}

/// Enqueues the sync of one relation's tags in `tx`, keyed by its cause.
pub async fn enqueue_sync(
    s: &Services,
    tx: &mut Tx,
    userid: &UserId,
    external_userid: &ExternalUserId,
    key: &str,
) -> Result<(), AppError> {
    s.enqueue_for_relation(tx, SYNC_JOB, userid, external_userid, key)
        .await
}

fn on_tier_change<'a>(
    s: &'a Services,
    tx: &'a mut Tx,
    changes: &'a [TierChanged],
) -> BoxFuture<'a, Result<(), AppError>> {
    Box::pin(async move {
        let Some((relations, first)) = super::hooks::relation_batch(changes) else {
            return Ok(());
        };
        s.enqueue_for_relations(
            tx,
            SYNC_BATCH_JOB,
            &relations,
            &format!("tier-tags:{first}"),
        )
        .await
    })
}

fn on_segment_change<'a>(
    s: &'a Services,
    tx: &'a mut Tx,
    relations: &'a [(UserId, ExternalUserId)],
    at: i64,
) -> BoxFuture<'a, Result<(), AppError>> {
    Box::pin(async move {
        for (userid, external_userid) in relations {
            let key = format!("segment-tag:{at}:{userid}:{external_userid}");
            enqueue_sync(s, tx, userid, external_userid, &key).await?;
        }
        Ok(())
    })
}

/// siyu's tags as they bear on one relation: each wanted one (its channel's tag and extra tags,
/// the customer's tier and segment) and every other tag of an exclusive kind (to take off).
struct Plan {
    add: Vec<TagId>,
    remove: Vec<TagId>,
    /// A wanted tag siyu has no id for yet (a new channel, tier or segment).
    missing: bool,
}

async fn plan(s: &Services, follow: &Follow) -> Result<Plan, AppError> {
    let extras = match s.store.channel(&follow.channel).await? {
        Some(c) => c.tags,
        None => Vec::new(),
    };
    let customer = s.store.customer(&follow.external_userid).await?;
    let segment = s.store.segment_of(&follow.external_userid).await?;
    let mut want: Vec<(TagKind, String)> = vec![(TagKind::Channel, follow.channel.clone())];
    want.extend(extras.into_iter().map(|e| (TagKind::Extra, e)));
    if let Some(c) = customer {
        want.push((TagKind::Tier, c.tier));
    }
    if let Some((segment, _)) = segment {
        want.push((TagKind::Segment, segment));
    }
    let all = s.store.siyu_tags().await?;
    let id_of = |kind: TagKind, code: &str| {
        all.iter()
            .find(|t| t.kind == kind && t.code == code)
            .and_then(|t| t.tag_id.clone())
    };
    let add: Vec<TagId> = want.iter().filter_map(|(k, c)| id_of(*k, c)).collect();
    let remove = all
        .iter()
        .filter(|t| EXCLUSIVE.contains(&t.kind))
        .filter_map(|t| t.tag_id.clone())
        .filter(|id| !add.contains(id))
        .collect();
    Ok(Plan {
        missing: add.len() < want.len(),
        add,
        remove,
    })
}

/// The ids of the tags siyu keeps on a relation now (those it has ids for).
pub async fn wanted_ids(s: &Services, follow: &Follow) -> Result<Vec<TagId>, AppError> {
    Ok(plan(s, follow).await?.add)
}

/// The job: siyu's tags on the relation, as they should be now, in one `mark_tag`. When the
/// state changed while the call was on its way (a tier change committed meanwhile), it goes again
/// with the new state, so the last call to land is never an older state's.
pub async fn sync(s: &Services, job: &RelationJob) -> Result<(), JobError> {
    let mut ensured = false;
    for _ in 0..5 {
        let Some(follow) = s
            .store
            .follow(&job.userid, &job.external_userid)
            .await
            .map_err(AppError::from)?
        else {
            return Err(JobError::Permanent("relation not recorded".into()));
        };
        if follow.status != FollowStatus::Connected {
            // The relation ended: there is nothing to tag.
            return Ok(());
        }
        let Plan {
            add,
            remove,
            missing,
        } = plan(s, &follow).await?;
        if missing && !ensured {
            // Make sure the tag library has them, then plan again.
            ensure(s).await?;
            ensured = true;
            continue;
        }
        if add.is_empty() {
            return Err(JobError::Retry("siyu's tags are not in WeCom yet".into()));
        }
        let request = MarkTagRequest {
            userid: job.userid.clone(),
            external_userid: job.external_userid.clone(),
            add_tag: add.clone(),
            remove_tag: remove.clone(),
        };
        match s.wecom.mark_tag(&request).await {
            Ok(()) => {}
            Err(
                e @ WecomError::Api {
                    code: code::NO_RELATIONSHIP,
                    ..
                },
            ) => return Err(JobError::Permanent(e.to_string())),
            Err(WecomError::Api {
                code: code::INVALID_TAG,
                ..
            }) if !ensured => {
                // An admin deleted one of them: recreate, then go again with the new ids.
                ensure(s).await?;
                ensured = true;
                continue;
            }
            Err(e) => return Err(AppError::from(e).into()),
        }
        s.store
            .edit_follow_tags(
                &job.userid,
                &job.external_userid,
                s.clock.now_ms(),
                |tags| {
                    tags.retain(|t| !remove.contains(t));
                    for t in &add {
                        if !tags.contains(t) {
                            tags.push(t.clone());
                        }
                    }
                },
            )
            .await
            .map_err(AppError::from)?;
        // Converged when the state now asks for what was just sent.
        let Some(after) = s
            .store
            .follow(&job.userid, &job.external_userid)
            .await
            .map_err(AppError::from)?
        else {
            return Ok(());
        };
        let now_wanted = plan(s, &after).await?;
        if now_wanted.add == add {
            if missing {
                // What could be written is; the tag still missing from the library is tried
                // again later.
                return Err(JobError::Retry(
                    "a wanted tag is not in WeCom's tag library yet".into(),
                ));
            }
            return Ok(());
        }
    }
    Err(JobError::Retry(
        "the relation's state kept changing while its tags were written".into(),
    ))
}

/// Every tag siyu needs in WeCom's library, by kind and code.
fn needed(
    services: &Services,
    channels: &[Channel],
    tiers: &[crate::config::TierSettings],
) -> Vec<SiyuTag> {
    let s = &services.settings;
    let tag = |kind: TagKind, code: &str, name: &str, group: &str| SiyuTag {
        kind,
        code: code.into(),
        name: name.into(),
        group_name: group.into(),
        tag_id: None,
        group_id: None,
    };
    let mut out = vec![tag(
        TagKind::Channel,
        UNATTRIBUTED,
        UNATTRIBUTED_NAME,
        &s.tags.channel_group,
    )];
    for c in channels {
        out.push(tag(
            TagKind::Channel,
            &c.code,
            &c.name,
            &s.tags.channel_group,
        ));
        for extra in &c.tags {
            if !out
                .iter()
                .any(|t| t.kind == TagKind::Extra && t.code == *extra)
            {
                out.push(tag(TagKind::Extra, extra, extra, &s.tags.channel_group));
            }
        }
    }
    for t in tiers {
        out.push(tag(TagKind::Tier, &t.code, &t.name, &s.tags.tier_group));
    }
    for name in super::segments::SEGMENTS {
        out.push(tag(TagKind::Segment, name, name, &s.rfm.group_name));
    }
    out
}

/// Makes sure every tag siyu needs exists in WeCom, recording ids; recreates deleted ones and
/// enqueues putting them back. Returns the tags as they now stand.
///
/// One sync at a time, in this process and across replicas: two would both find a tag missing
/// and both create it. The second finds what the first made when its turn comes.
pub async fn ensure(services: &Services) -> Result<Vec<SiyuTag>, AppError> {
    let _in_this_process = services.tag_sync.lock().await;
    let across_replicas = services.store.corp_lock(LIBRARY_LOCK).await?;
    let synced = ensure_alone(services).await;
    if let Some(lock) = across_replicas
        && let Err(e) = lock.release().await
    {
        // The lock goes with the transaction however it ends.
        tracing::warn!(error = %e, "could not release the tag library lock cleanly");
    }
    synced
}

/// [`ensure`], with the library to itself.
async fn ensure_alone(services: &Services) -> Result<Vec<SiyuTag>, AppError> {
    let channels = services.store.channels().await?;
    let mut library = services.wecom.tag_library().await?.tag_group;
    let stored = services.store.siyu_tags().await?;
    let now = services.clock.now_ms();
    let mut result = Vec::new();
    for mut want in needed(services, &channels, &services.tiers().await?) {
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
        }
        // Another tag stands in for the one siyu knew (made here, adopted from another replica,
        // or typed again by an admin): the customers who had the old one get the new one.
        if let (Some(old), Some(new)) = (&known_id, &want.tag_id)
            && old != new
        {
            enqueue_reapply(services, old, new).await?;
        }
        services.store.save_siyu_tag(&want, now).await?;
        result.push(want);
    }
    Ok(result)
}

fn find_by_id<'a>(
    library: &'a [TagGroup],
    id: &TagId,
) -> Option<(&'a TagGroup, &'a crate::wecom::client::types::Tag)> {
    library.iter().filter(|g| !g.deleted).find_map(|g| {
        g.tag
            .iter()
            .find(|t| t.id == *id && !t.deleted)
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

/// A deleted tag was recreated under a new id: the relations that had it forget the old id and
/// get their tags synced (which puts the new one on), paced by the client's limiter.
async fn enqueue_reapply(services: &Services, old: &TagId, new: &TagId) -> Result<(), AppError> {
    let now = services.clock.now_ms();
    let mut tx = services.store.begin().await?;
    let had = contacts::drop_tag_from_follows(&mut tx, old, now).await?;
    for (userid, external_userid) in &had {
        let key = format!("reapply:{new}:{userid}:{external_userid}");
        enqueue_sync(services, &mut tx, userid, external_userid, &key).await?;
    }
    tx.commit().await?;
    tracing::info!(
        %old,
        %new,
        relations = had.len(),
        "putting a recreated tag back"
    );
    Ok(())
}
