//! Sales staff asking siyu about a customer in the app's chat: `查 张三`, a remark, an external
//! id, or just a name. Answered from siyu's own records (no WeCom call), fast enough for the
//! passive reply within WeCom's 5 seconds.

use minijinja::context;

use super::channels::attribute;
use super::{AppError, Registrar, Services, local_time};
use crate::ids::{ExternalUserId, UserId};

/// Staff messages are answered in the callback itself (a passive reply); entering the app needs
/// nothing. Registered so the inbox marks them done rather than unhandled.
pub fn register(r: &mut Registrar) {
    for kind in ["message.text", "event.enter_agent"] {
        r.events
            .register(kind, |_ctx, _event, _tx| Box::pin(async { Ok(()) }));
    }
}

/// Most matches listed before asking to narrow down.
const LIST_MAX: i64 = 10;

/// The text answer to `content` sent by member `userid`.
pub async fn answer(s: &Services, userid: &UserId, content: &str) -> Result<String, AppError> {
    let query = content.trim();
    let query = query
        .strip_prefix('查')
        .or_else(|| query.strip_prefix("查询"))
        .map(str::trim)
        .unwrap_or(query);
    if query.is_empty() {
        return Ok(s
            .templates
            .render("staff_help.j2", context! { query => "" })?);
    }
    let visible_to = (s.settings.staff.visibility == "own").then_some(userid);
    let found = s
        .store
        .find_customers(query, visible_to, LIST_MAX + 1)
        .await?;
    match found.len() {
        0 => Ok(s
            .templates
            .render("staff_help.j2", context! { query => query })?),
        1 => detail(s, userid, &found[0].external_userid).await,
        _ => {
            let exact: Vec<_> = found
                .iter()
                .filter(|c| c.name == query || c.external_userid == query)
                .collect();
            if exact.len() == 1 {
                return detail(s, userid, &exact[0].external_userid).await;
            }
            let tiers = s.tiers().await?;
            let mut matches = Vec::new();
            for c in found.iter().take(LIST_MAX as usize) {
                let channel = attribute(s, Some(&c.channel)).await?;
                matches.push(context! { name => c.name, tier => tier_name(&tiers, &c.tier), channel => channel.name, id => c.external_userid });
            }
            // `found` stops one past the list: past it, count every match (same filter and
            // visibility) so the answer tells the true total.
            let total = if found.len() > LIST_MAX as usize {
                s.store.count_customers(query, visible_to).await?
            } else {
                found.len() as i64
            };
            Ok(s.templates.render(
                "staff_list.j2",
                context! { total => total, matches => matches },
            )?)
        }
    }
}

fn tier_name(tiers: &[crate::config::TierSettings], code: &str) -> String {
    tiers
        .iter()
        .find(|t| t.code == code)
        .map_or(code.to_string(), |t| t.name.clone())
}

async fn detail(
    s: &Services,
    userid: &UserId,
    external_userid: &ExternalUserId,
) -> Result<String, AppError> {
    let Some(customer) = s.store.customer(external_userid).await? else {
        return Ok(s
            .templates
            .render("staff_help.j2", context! { query => external_userid })?);
    };
    let follows = s.store.follows_of(external_userid).await?;
    // The asking member's own relation first, else the first one.
    let Some(follow) = follows
        .iter()
        .find(|f| f.userid == *userid)
        .or(follows.first())
    else {
        return Ok(s
            .templates
            .render("staff_help.j2", context! { query => external_userid })?);
    };
    let channel = attribute(s, Some(&follow.channel)).await?;
    let tiers = s.tiers().await?;
    let siyu_tags = s.store.siyu_tags().await?;
    let tags: Vec<String> = follow
        .tag_ids
        .iter()
        .map(|id| {
            siyu_tags
                .iter()
                .find(|t| t.tag_id.as_ref() == Some(id))
                .map_or(id.to_string(), |t| t.name.clone())
        })
        .collect();
    let last = s.store.contact_events_of(external_userid).await?.pop();
    Ok(s.templates.render(
        "staff_answer.j2",
        context! {
            name => customer.name,
            corp_name => customer.corp_name,
            tier => tier_name(&tiers, &customer.tier),
            channel => channel.name,
            tags => tags,
            remark => follow.remark,
            description => follow.description,
            added_at => local_time(&s.settings, follow.added_at),
            added_by => follow.userid,
            last_activity => last.map(|e| format!("{} {}", local_time(&s.settings, e.at), e.kind)),
        },
    )?)
}
