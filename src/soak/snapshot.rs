//! Takes the [`Snapshot`] the checks read: the fake's call log and state, what the balancer
//! carried, and siyu's database (read directly, as an engineer would with `psql`, plus the
//! tiers in force from the API).

use std::collections::{HashMap, HashSet};

use minijinja::context;

use super::SoakError;
use super::checks::{Campaign, Relation, SentCallback, Snapshot, TierGroups};
use super::drive::Ctx;
use super::proxy::Balancer;
use crate::app::templates::{Templates, truncate_chars};
use crate::config::Settings;
use crate::ids::ExternalUserId;
use crate::store::Store;
use crate::store::contacts::{Channel, CustomerFilter, CustomerRow};
use crate::store::jobs::{JobFilter, JobRecord};

fn store_err(e: impl std::fmt::Display) -> SoakError {
    SoakError::Collect(e.to_string())
}

/// Every job, newest first, a page at a time.
async fn all_jobs(store: &Store) -> Result<Vec<JobRecord>, SoakError> {
    let mut jobs = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .jobs_page(&JobFilter {
                before,
                limit: 500,
                ..JobFilter::default()
            })
            .await
            .map_err(store_err)?;
        let last = page.last().map(|j| j.id);
        let done = page.len() < 500;
        jobs.extend(page);
        if done || last.is_none() {
            return Ok(jobs);
        }
        before = last;
    }
}

/// Every customer siyu holds.
async fn all_customers(store: &Store) -> Result<Vec<CustomerRow>, SoakError> {
    let mut out = Vec::new();
    let mut after: Option<ExternalUserId> = None;
    loop {
        let page = store
            .search_customers(&CustomerFilter::default(), after.as_ref(), 1000)
            .await
            .map_err(store_err)?;
        let done = page.len() < 1000;
        after = page.last().map(|c| c.external_userid.clone());
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// The note the templates make of a relation as siyu holds it (what the note job renders).
fn expected_note(
    templates: &Templates,
    settings: &Settings,
    tiers: &[(String, String)],
    channels: &[Channel],
    customer: &CustomerRow,
    follow: &crate::store::contacts::Follow,
) -> (String, String) {
    let channel = channels
        .iter()
        .find(|c| c.code == follow.channel)
        .map_or(crate::app::tags::UNATTRIBUTED_NAME, |c| c.name.as_str());
    let tier = tiers
        .iter()
        .find(|(code, _)| *code == customer.tier)
        .map_or(customer.tier.as_str(), |(_, name)| name.as_str());
    let ctx = context! {
        name => customer.name,
        channel => channel,
        tier => tier,
        staff => follow.userid,
        added_at => crate::app::local_time(settings, follow.added_at),
    };
    let render = |name: &str, max: usize| {
        templates
            .render(name, &ctx)
            .map(|t| truncate_chars(&t, max))
            .unwrap_or_else(|e| format!("<{name}: {e}>"))
    };
    (
        render("note_remark.j2", 20),
        render("note_description.j2", 150),
    )
}

/// The tiers in force, lowest first, as the API lists them.
async fn tiers(ctx: &Ctx) -> Result<Vec<(String, String)>, SoakError> {
    let body = ctx.api.get("/tiers").await.map_err(SoakError::Collect)?;
    Ok(body["tiers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t["code"].as_str()?.to_owned(),
                t["name"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

pub async fn take(
    store: &Store,
    ctx: &Ctx,
    balancer: &Balancer,
    calls_per_minute: u32,
) -> Result<Snapshot, SoakError> {
    let fake = &ctx.fake;
    let now_ms = crate::clock::system_now_ms();
    let callbacks = balancer
        .traffic()
        .callbacks
        .iter()
        .map(|(key, d)| SentCallback {
            key: key.clone(),
            kind: d.kind.clone(),
            xml: d.xml.clone(),
            first_sent: d.first_sent,
            acknowledged: d.acknowledged,
        })
        .collect();
    let tiers = tiers(ctx).await?;
    let channels = store.channels().await.map_err(store_err)?;
    let customers = all_customers(store).await?;
    let ids: Vec<ExternalUserId> = customers
        .iter()
        .map(|c| c.external_userid.clone())
        .collect();
    let follows = store
        .follows_of_customers(&ids, None)
        .await
        .map_err(store_err)?;
    let at_wecom: HashMap<String, crate::fake::CustomerView> = fake
        .customers()
        .into_iter()
        .map(|c| (c.external_userid.clone(), c))
        .collect();
    let templates = Templates::load("").map_err(store_err)?;
    let settings = Settings::default();
    let by_id: HashMap<&ExternalUserId, &CustomerRow> =
        customers.iter().map(|c| (&c.external_userid, c)).collect();
    let relations = follows
        .into_iter()
        .filter_map(|follow| {
            let customer = (*by_id.get(&follow.external_userid)?).clone();
            let at = at_wecom
                .get(follow.external_userid.as_str())
                .and_then(|c| {
                    c.follow_user
                        .iter()
                        .find(|f| f.userid == follow.userid.as_str())
                })
                .cloned();
            let expected_note =
                expected_note(&templates, &settings, &tiers, &channels, &customer, &follow);
            Some(Relation {
                follow,
                customer,
                at_wecom: at,
                expected_note,
            })
        })
        .collect();

    let mut campaigns = Vec::new();
    for row in store.campaigns(None).await.map_err(store_err)? {
        let content: serde_json::Value = serde_json::from_str(&row.content).unwrap_or_default();
        let mut runs = Vec::new();
        let mut targets = HashMap::new();
        for run in store.runs_of(row.id).await.map_err(store_err)? {
            let sends = store.sends_of_run(run.id).await.map_err(store_err)?;
            for send in &sends {
                let recipients = store.recipients_of(send.id).await.map_err(store_err)?;
                targets.insert(send.id, recipients.into_iter().map(|r| r.target).collect());
            }
            runs.push((run, sends));
        }
        campaigns.push(Campaign {
            id: row.id,
            kind: row.kind,
            text: content["text"].as_str().unwrap_or_default().to_owned(),
            runs,
            targets,
        });
    }

    let mut tier_groups = Vec::new();
    let mut invite_sends = HashMap::new();
    for tg in store.tier_groups().await.map_err(store_err)? {
        let chats: Vec<String> = store
            .group_chats(Some(&tg.tier))
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|c| c.chat_id.to_string())
            .collect();
        let members = store.members_of_tier(&tg.tier).await.map_err(store_err)?;
        let at_wecom = chats.iter().filter_map(|c| fake.group_chat(c)).collect();
        let open_removals = store
            .open_removals(None, Some(&tg.tier))
            .await
            .map_err(store_err)?;
        let invitations: HashMap<String, _> = store
            .latest_invitations_to(&tg.tier)
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|(id, i)| (id.to_string(), i))
            .collect();
        for send_id in invitations.values().filter_map(|i| i.send_id) {
            if let std::collections::hash_map::Entry::Vacant(slot) = invite_sends.entry(send_id)
                && let Some(send) = store.invite_send(send_id).await.map_err(store_err)?
            {
                slot.insert(send);
            }
        }
        let chat_set: HashSet<&str> = chats.iter().map(String::as_str).collect();
        let mut left_before = HashSet::new();
        for (id, _) in store.customers_of_tier(&tg.tier).await.map_err(store_err)? {
            let left = store
                .memberships_of(&id)
                .await
                .map_err(store_err)?
                .iter()
                .any(|m| m.left_at.is_some() && chat_set.contains(m.chat_id.as_str()));
            if left {
                left_before.insert(id.to_string());
            }
        }
        tier_groups.push(TierGroups {
            tier: tg.tier,
            chats,
            members,
            at_wecom,
            open_removals,
            invitations,
            left_before,
        });
    }

    Ok(Snapshot {
        now_ms,
        calls: fake.calls(),
        callbacks,
        inbox: store.inbox_entries().await.map_err(store_err)?,
        welcomes: fake.welcome_messages(),
        jobs: all_jobs(store).await?,
        channels,
        relations,
        siyu_tags: store.siyu_tags().await.map_err(store_err)?,
        library: fake.tag_library(),
        renames: ctx.renames(),
        tiers,
        campaigns,
        mass_messages: fake.mass_messages(),
        moments: fake.moment_tasks(),
        tier_groups,
        invite_sends,
        poll_kinds: super::POLL_KINDS.iter().map(|k| (*k).to_owned()).collect(),
        calls_per_minute,
    })
}
