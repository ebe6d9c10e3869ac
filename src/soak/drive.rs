//! The load: what customers, members, admins, the shop and the operator do while the soak runs,
//! each an actor with its own pace and its own seeded choices. Customers add members through
//! the channels and delete them; members edit customers (taking siyu's tags off), confirm mass
//! messages and publish Moments; an admin edits the tag library in the console; the shop posts
//! activity that promotes and demotes; customers join and leave the tier groups and owners remove
//! those siyu asks them to; the operator schedules campaigns. Everything WeCom-side goes through
//! the fake's driver (so its callbacks reach the balancer); everything siyu-side through siyu's
//! API on a random replica that is up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::replicas::Backends;
use crate::fake::{DriverError, FakeWecom, NewCustomer, TagEdit};

/// The members of staff in the soak's corp.
pub const STAFF: [&str; 3] = ["zhangsan", "lisi", "wangwu"];
/// Told of churn and of group changes (`notify.operators`).
pub const OPERATOR: &str = "boss";
/// A `State` no channel has: those customers land in the unattributed channel.
const UNKNOWN_STATE: &str = "poster-2019";
/// The tiers that have groups, and the groups each starts with (chat id, owner).
pub const TIER_GROUPS: [(&str, &str, &str); 2] = [
    ("partner", "wrSoakPartner1", "lisi"),
    ("senior_partner", "wrSoakSenior1", "wangwu"),
];

/// The channels the operator creates before the load: code, name, staff, extra tags, welcome.
pub fn channels() -> Vec<Value> {
    vec![
        json!({"code": "douyin", "name": "抖音", "staff": ["zhangsan", "lisi"], "tags": ["短视频"],
               "welcome": {"text": "{{ name }}，欢迎从抖音来！"}}),
        json!({"code": "xiaohongshu", "name": "小红书", "staff": ["lisi"],
               "welcome": {"text": "你好{{ name }}", "attachments": [
                   {"msgtype": "link", "link": {"title": "新人礼", "url": "https://shop.example/gift"}}]}}),
        json!({"code": "offline", "name": "门店", "staff": ["wangwu"], "tags": ["线下"]}),
    ]
}

/// What the actors did, for the figures.
#[derive(Debug, Default)]
pub struct Counters {
    pub adds: AtomicU64,
    /// Adds whose callback no replica acknowledged in WeCom's three tries.
    pub adds_undelivered: AtomicU64,
    pub edits: AtomicU64,
    pub tags_taken_off: AtomicU64,
    pub customers_left: AtomicU64,
    pub customers_deleted: AtomicU64,
    pub tag_renames: AtomicU64,
    pub tag_deletes: AtomicU64,
    pub tag_creates: AtomicU64,
    pub activity_batches: AtomicU64,
    pub activity_items: AtomicU64,
    pub joins: AtomicU64,
    pub misplaced_joins: AtomicU64,
    pub leaves: AtomicU64,
    pub removals_done: AtomicU64,
    pub campaigns: AtomicU64,
    pub confirmations: AtomicU64,
    pub publications: AtomicU64,
    /// Callbacks of other actions that no replica acknowledged.
    pub undelivered: AtomicU64,
    /// API requests that got no answer (their replica was killed) or an unexpected one.
    pub api_failures: AtomicU64,
    /// Replicas killed with SIGKILL (and started again).
    pub kills: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// siyu's API on a random replica that is up.
#[derive(Clone)]
pub struct Api {
    backends: Arc<Backends>,
    http: reqwest::Client,
    token: String,
}

/// A request that may be sent again when its replica died under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Safe,
    Never,
}

impl Api {
    pub fn new(backends: Arc<Backends>, token: &str) -> Api {
        Api {
            backends,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
            token: token.to_owned(),
        }
    }

    /// The status and JSON body; `Err` when no replica answered (after retries, if allowed).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<(u16, Value), String> {
        let tries = if retry == Retry::Safe { 5 } else { 1 };
        let mut last = String::new();
        for _ in 0..tries {
            let Some(backend) = self.backends.pick(Duration::from_secs(10)).await else {
                last = "no replica is up".into();
                continue;
            };
            match self.once(backend, method.clone(), path, body).await {
                Ok(answer) => return Ok(answer),
                Err(e) => last = format!("{backend}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last)
    }

    async fn once(
        &self,
        backend: SocketAddr,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut request = self
            .http
            .request(method, format!("http://{backend}/api/v1{path}"))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let answer = request.send().await?;
        let status = answer.status().as_u16();
        let body = answer.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        match self
            .call(reqwest::Method::GET, path, None, Retry::Safe)
            .await?
        {
            (200, body) => Ok(body),
            (status, body) => Err(format!("GET {path}: {status} {body}")),
        }
    }
}

/// What the actors share.
pub struct Ctx {
    pub fake: FakeWecom,
    pub api: Api,
    pub counters: Counters,
    /// Tag id → the name an admin gave it in the console (siyu follows the id).
    pub renames: Mutex<HashMap<String, String>>,
    /// Tier → its join way's config_id.
    pub join_ways: HashMap<String, String>,
    /// Ids of the shop's records and texts of campaigns are unique to the run.
    pub run_id: String,
    serial: AtomicU64,
}

impl Ctx {
    pub fn new(fake: FakeWecom, api: Api, join_ways: HashMap<String, String>, seed: u64) -> Ctx {
        Ctx {
            fake,
            api,
            counters: Counters::default(),
            renames: Mutex::default(),
            join_ways,
            run_id: format!("{seed:x}"),
            serial: AtomicU64::new(0),
        }
    }

    fn next(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }

    pub fn renames(&self) -> HashMap<String, String> {
        self.renames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn renamed(&self, id: &str, name: Option<String>) {
        let mut renames = self.renames.lock().unwrap_or_else(|p| p.into_inner());
        match name {
            Some(name) => renames.insert(id.to_owned(), name),
            None => renames.remove(id),
        };
    }

    /// An action's callback that no replica acknowledged still happened at WeCom.
    fn outcome(&self, result: Result<(), DriverError>) {
        if let Err(DriverError::NotDelivered(_)) = result {
            bump(&self.counters.undelivered);
        }
    }
}

/// How often each actor acts, for an add rate of `rate` per second.
#[derive(Debug, Clone, Copy)]
pub struct Paces {
    pub add: Duration,
    pub relation: Duration,
    pub console: Duration,
    pub shop: Duration,
    pub groups: Duration,
    pub campaign: Duration,
    pub staff: Duration,
}

impl Paces {
    pub fn for_rate(rate: f64) -> Paces {
        let rate = rate.max(0.05);
        let every = |adds: f64| Duration::from_secs_f64(adds / rate);
        Paces {
            add: every(1.0),
            relation: every(3.0),
            console: Duration::from_secs(10),
            shop: every(2.0),
            groups: every(2.0),
            campaign: Duration::from_secs(12),
            staff: Duration::from_millis(1500),
        }
    }
}

/// Sleeps about `base` (±50 %); false once the load is to stop.
async fn pause(rng: &mut StdRng, base: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    let ms = base.as_millis().max(2) as u64;
    let d = Duration::from_millis(rng.gen_range(ms / 2..=ms + ms / 2));
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// Starts every actor; they run until `stop` turns true.
pub fn start(ctx: &Arc<Ctx>, paces: Paces, seed: u64, stop: &watch::Receiver<bool>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let rng = |n: u64| StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(n));
    set.spawn(adds(ctx.clone(), rng(1), paces.add, stop.clone()));
    set.spawn(relations(ctx.clone(), rng(2), paces.relation, stop.clone()));
    set.spawn(console(ctx.clone(), rng(3), paces.console, stop.clone()));
    set.spawn(shop(ctx.clone(), rng(4), paces.shop, stop.clone()));
    set.spawn(groups(ctx.clone(), rng(5), paces.groups, stop.clone()));
    set.spawn(campaigns(ctx.clone(), rng(6), paces.campaign, stop.clone()));
    set.spawn(staff(ctx.clone(), rng(7), paces.staff, stop.clone()));
    set
}

const SURNAMES: [&str; 8] = ["王", "李", "张", "刘", "陈", "杨", "赵", "黄"];
const GIVEN: [&str; 8] = ["小明", "静", "雷", "梅梅", "芳", "伟", "娜", "强"];

/// Customers add members; each add is its own task (its callback may take WeCom's three tries),
/// so the rate holds while a replica is down. At most a few are in flight.
async fn adds(ctx: Arc<Ctx>, mut rng: StdRng, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut in_flight = JoinSet::new();
    while pause(&mut rng, every, &mut stop).await {
        while in_flight.len() >= 16 {
            in_flight.join_next().await;
        }
        let name = format!(
            "{}{}{}",
            SURNAMES.choose(&mut rng).unwrap_or(&"王"),
            GIVEN.choose(&mut rng).unwrap_or(&"明"),
            ctx.next()
        );
        let pick = rng.gen_range(0..100);
        let again = if pick >= 94 {
            // A known customer adds a member they do not follow yet.
            ctx.fake.customers().choose(&mut rng).and_then(|c| {
                let member = STAFF
                    .iter()
                    .find(|s| !c.follow_user.iter().any(|f| f.userid == **s))?;
                Some((c.external_userid.clone(), *member))
            })
        } else {
            None
        };
        let state = ["douyin", "xiaohongshu"].choose(&mut rng).copied();
        let member = *STAFF.choose(&mut rng).unwrap_or(&STAFF[0]);
        let ctx = ctx.clone();
        in_flight.spawn(async move {
            let driver = ctx.fake.driver();
            let result = match (pick, again) {
                (_, Some((id, member))) => driver
                    .customer_adds_staff(member, state, NewCustomer::existing(&id))
                    .await
                    .map(drop),
                (0..45, _) => driver
                    .customer_adds_via_contact_way("douyin", NewCustomer::wechat(&name))
                    .await
                    .map(drop),
                (45..75, _) => driver
                    .customer_adds_via_contact_way("xiaohongshu", NewCustomer::wechat(&name))
                    .await
                    .map(drop),
                (75..88, _) => driver
                    .customer_adds_via_contact_way("offline", NewCustomer::wecom(&name, "某公司"))
                    .await
                    .map(drop),
                _ => driver
                    .customer_adds_staff(member, Some(UNKNOWN_STATE), NewCustomer::wechat(&name))
                    .await
                    .map(drop),
            };
            match result {
                Ok(()) => bump(&ctx.counters.adds),
                Err(DriverError::NotDelivered(_)) => {
                    bump(&ctx.counters.adds);
                    bump(&ctx.counters.adds_undelivered);
                }
                Err(e) => tracing::debug!(error = %e, "an add did not happen"),
            }
        });
    }
    while in_flight.join_next().await.is_some() {}
}

/// The fake's tag groups siyu owns (their default names).
fn siyu_groups() -> [&'static str; 3] {
    ["渠道", "等级", "价值分层"]
}

/// Members edit customers (taking one of siyu's tags off, or not), customers delete members,
/// members delete customers.
async fn relations(
    ctx: Arc<Ctx>,
    mut rng: StdRng,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    while pause(&mut rng, every, &mut stop).await {
        let customers = ctx.fake.customers();
        let live: Vec<(String, String, Vec<String>)> = customers
            .iter()
            .flat_map(|c| {
                c.follow_user
                    .iter()
                    .filter(|f| f.sendable())
                    .map(|f| (f.userid.clone(), c.external_userid.clone(), f.tags.clone()))
            })
            .collect();
        let Some((userid, external_userid, tags)) = live.choose(&mut rng).cloned() else {
            continue;
        };
        let driver = ctx.fake.driver();
        let pick = rng.gen_range(0..100);
        let result = if pick < 55 {
            let library = ctx.fake.tag_library();
            let siyus: Vec<&String> = tags
                .iter()
                .filter(|t| {
                    library.iter().any(|g| {
                        !g.deleted
                            && siyu_groups().contains(&g.group_name.as_str())
                            && g.tag.iter().any(|x| &x.id == *t)
                    })
                })
                .collect();
            let off: Vec<&str> = siyus
                .choose(&mut rng)
                .map(|t| vec![t.as_str()])
                .unwrap_or_default();
            if !off.is_empty() {
                bump(&ctx.counters.tags_taken_off);
            }
            bump(&ctx.counters.edits);
            driver
                .staff_edits_customer(&userid, &external_userid, None, &off)
                .await
        } else if pick < 75 {
            bump(&ctx.counters.customers_left);
            driver
                .customer_deletes_staff(&userid, &external_userid)
                .await
        } else if pick < 85 {
            bump(&ctx.counters.customers_deleted);
            driver
                .staff_deletes_customer(&userid, &external_userid, false)
                .await
        } else {
            bump(&ctx.counters.edits);
            driver
                .staff_edits_customer(&userid, &external_userid, None, &[])
                .await
        };
        ctx.outcome(result);
    }
}

/// An admin edits the tag library in the console: renames one of siyu's channel tags (siyu
/// follows the id), deletes one of siyu's tags (siyu makes it again and puts it back), or adds
/// a tag of their own to siyu's channel group (siyu leaves it alone).
async fn console(ctx: Arc<Ctx>, mut rng: StdRng, every: Duration, mut stop: watch::Receiver<bool>) {
    while pause(&mut rng, every, &mut stop).await {
        let library = ctx.fake.tag_library();
        let live_in = |group: &str| -> Vec<(String, String, String)> {
            library
                .iter()
                .filter(|g| !g.deleted && g.group_name == group)
                .flat_map(|g| {
                    g.tag
                        .iter()
                        .filter(|t| !t.deleted)
                        .map(|t| (g.group_id.clone(), t.id.clone(), t.name.clone()))
                })
                .collect()
        };
        let channel_tags: Vec<_> = live_in("渠道")
            .into_iter()
            .filter(|(_, _, name)| !name.starts_with("活动"))
            .collect();
        let driver = ctx.fake.driver();
        let pick = rng.gen_range(0..100);
        if pick < 40 {
            let Some((_, id, name)) = channel_tags.choose(&mut rng).cloned() else {
                continue;
            };
            let base: String = name.split('·').next().unwrap_or(&name).to_owned();
            let new_name = format!("{base}·{}", ctx.next());
            bump(&ctx.counters.tag_renames);
            let result = driver
                .admin_edits_tag(TagEdit::RenameTag {
                    id: id.clone(),
                    name: new_name.clone(),
                })
                .await;
            ctx.renamed(&id, Some(new_name));
            ctx.outcome(result);
        } else if pick < 75 {
            let mut candidates = channel_tags;
            candidates.extend(live_in("等级"));
            let Some((_, id, _)) = candidates.choose(&mut rng).cloned() else {
                continue;
            };
            bump(&ctx.counters.tag_deletes);
            let result = driver
                .admin_edits_tag(TagEdit::DeleteTag { id: id.clone() })
                .await;
            ctx.renamed(&id, None);
            ctx.outcome(result);
        } else {
            let Some(group_id) = library
                .iter()
                .find(|g| !g.deleted && g.group_name == "渠道")
                .map(|g| g.group_id.clone())
            else {
                continue;
            };
            bump(&ctx.counters.tag_creates);
            let result = driver
                .admin_edits_tag(TagEdit::CreateTag {
                    group_id,
                    name: format!("活动{}", ctx.next()),
                })
                .await;
            ctx.outcome(result);
        }
    }
}

/// The shop posts activity for customers: orders that promote, refunds that demote.
async fn shop(ctx: Arc<Ctx>, mut rng: StdRng, every: Duration, mut stop: watch::Receiver<bool>) {
    while pause(&mut rng, every, &mut stop).await {
        let customers = ctx.fake.customers();
        if customers.is_empty() {
            continue;
        }
        let at = chrono::Utc::now().to_rfc3339();
        let mut items = Vec::new();
        for _ in 0..rng.gen_range(1..=4) {
            let Some(c) = customers.choose(&mut rng) else {
                break;
            };
            let who = &c.external_userid;
            let item = |kind: &str, amount: &str, count: u32| {
                json!({"kind": kind, "customer": who, "amount": amount, "count": count, "at": at,
                       "id": format!("soak-{}-{}", ctx.run_id, ctx.next())})
            };
            match rng.gen_range(0..100) {
                0..40 => items.push(item("order", "2500.00", 1)),
                40..55 => {
                    items.push(item("order", "10000.00", 1));
                    items.push(item("referral", "0", 10));
                }
                55..85 => items.push(item("refund", "2500.00", 1)),
                _ => items.push(item("refund", "10000.00", 1)),
            }
        }
        let n = items.len() as u64;
        let body = json!({ "items": items });
        match ctx
            .api
            .call(reqwest::Method::POST, "/activity", Some(&body), Retry::Safe)
            .await
        {
            Ok((200, _)) => {
                bump(&ctx.counters.activity_batches);
                ctx.counters.activity_items.fetch_add(n, Ordering::Relaxed);
            }
            Ok((status, answer)) => {
                tracing::warn!(status, %answer, "the shop's activity was refused");
                bump(&ctx.counters.api_failures);
            }
            Err(e) => {
                tracing::debug!(error = %e, "the shop's activity got no answer");
                bump(&ctx.counters.api_failures);
            }
        }
    }
}

/// siyu's members of a tier with this status (one page is enough for the soak's sizes).
async fn members_with(ctx: &Ctx, tier: &str, status: &str) -> Vec<Value> {
    let path = format!("/tier-groups/{tier}/members?status={status}&limit=1000");
    match ctx.api.get(&path).await {
        Ok(body) => body["members"].as_array().cloned().unwrap_or_default(),
        Err(e) => {
            tracing::debug!(error = %e, "tier members not read");
            Vec::new()
        }
    }
}

/// Customers invited to a tier's group scan its QR code; now and then one scans a code someone
/// forwarded them (not their tier's); owners remove the customers siyu asks them to; now and
/// then a customer leaves by themselves.
async fn groups(ctx: Arc<Ctx>, mut rng: StdRng, every: Duration, mut stop: watch::Receiver<bool>) {
    while pause(&mut rng, every, &mut stop).await {
        let Some((tier, config_id)) = ctx
            .join_ways
            .iter()
            .collect::<Vec<_>>()
            .choose(&mut rng)
            .map(|(t, c)| ((*t).clone(), (*c).clone()))
        else {
            continue;
        };
        let driver = ctx.fake.driver();
        let id_of = |m: &Value| m["external_userid"].as_str().unwrap_or_default().to_owned();
        match rng.gen_range(0..100) {
            0..50 => {
                let invited = members_with(&ctx, &tier, "invited").await;
                if let Some(m) = invited.choose(&mut rng) {
                    bump(&ctx.counters.joins);
                    let result = driver
                        .customer_joins_via_join_way(&config_id, &id_of(m))
                        .await;
                    ctx.outcome(result.map(drop));
                }
            }
            50..62 => {
                let customers = ctx.fake.customers();
                if let Some(c) = customers.choose(&mut rng) {
                    bump(&ctx.counters.misplaced_joins);
                    let result = driver
                        .customer_joins_via_join_way(&config_id, &c.external_userid)
                        .await;
                    ctx.outcome(result.map(drop));
                }
            }
            62..88 => {
                let asked = members_with(&ctx, &tier, "removal_requested").await;
                if let Some(m) = asked.choose(&mut rng) {
                    for chat in m["chat_ids"].as_array().into_iter().flatten() {
                        let chat = chat.as_str().unwrap_or_default();
                        bump(&ctx.counters.removals_done);
                        let result = driver.member_leaves_group(chat, &id_of(m), true).await;
                        ctx.outcome(result);
                    }
                }
            }
            _ => {
                let chats = ctx.fake.group_chats();
                let members: Vec<(String, String)> = chats
                    .iter()
                    .flat_map(|c| {
                        c.member_list
                            .iter()
                            .filter(|m| m.kind == 2)
                            .map(|m| (c.chat_id.clone(), m.userid.clone()))
                    })
                    .collect();
                if let Some((chat, member)) = members.choose(&mut rng) {
                    bump(&ctx.counters.leaves);
                    let result = driver.member_leaves_group(chat, member, false).await;
                    ctx.outcome(result);
                }
            }
        }
    }
}

/// The text of the soak's campaign number `n`: unique, so the checks find its tasks at WeCom.
pub fn campaign_text(run_id: &str, n: u64) -> String {
    format!("soak {run_id} campaign {n}: 本周专享，点击查看")
}

/// The operator schedules campaigns a couple of seconds ahead: mass messages and Moments for the
/// tiers with groups, now and then a group message to their groups.
async fn campaigns(
    ctx: Arc<Ctx>,
    mut rng: StdRng,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut n = 0u64;
    while pause(&mut rng, every, &mut stop).await {
        n += 1;
        let kind = match n % 5 {
            0 => "group_message",
            1 | 3 => "message",
            _ => "moment",
        };
        let tiers: Vec<&str> = match rng.gen_range(0..3) {
            0 => vec!["partner"],
            1 => vec!["senior_partner"],
            _ => vec!["partner", "senior_partner"],
        };
        let at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
        let body = json!({"kind": kind, "name": format!("soak {n}"), "audience": {"tiers": tiers},
                          "content": {"text": campaign_text(&ctx.run_id, n)},
                          "schedule": {"at": at}, "by": "soak"});
        // Never sent twice: a campaign whose answer was lost may exist; the checks read siyu's.
        match ctx
            .api
            .call(
                reqwest::Method::POST,
                "/campaigns",
                Some(&body),
                Retry::Never,
            )
            .await
        {
            Ok((201, _)) => bump(&ctx.counters.campaigns),
            Ok((status, answer)) => {
                tracing::warn!(status, %answer, "a campaign was refused");
                bump(&ctx.counters.api_failures);
            }
            Err(e) => {
                tracing::debug!(error = %e, "a campaign got no answer");
                bump(&ctx.counters.api_failures);
            }
        }
    }
}

/// Members confirm the mass-message tasks siyu gave them and publish the Moments, most of them
/// at once, some a little later.
async fn staff(ctx: Arc<Ctx>, mut rng: StdRng, every: Duration, mut stop: watch::Receiver<bool>) {
    while pause(&mut rng, every, &mut stop).await {
        confirm_tasks(&ctx, Some(&mut rng)).await;
    }
}

/// Members confirm and publish what waits for them; with `rng`, each with a chance of waiting
/// for another round; without, everything (the end of the run, before the drain).
pub async fn confirm_tasks(ctx: &Ctx, mut rng: Option<&mut StdRng>) {
    let driver = ctx.fake.driver();
    let now = |rng: &mut Option<&mut StdRng>| rng.as_mut().is_none_or(|r| r.gen_bool(0.7));
    for m in ctx.fake.mass_messages().iter().filter(|m| !m.cancelled) {
        for task in m.tasks.iter().filter(|t| t.status == 0) {
            if now(&mut rng)
                && driver
                    .staff_confirms_mass_message(&m.msgid, &task.userid)
                    .await
                    .is_ok()
            {
                bump(&ctx.counters.confirmations);
            }
        }
    }
    for m in ctx.fake.moment_tasks().iter().filter(|m| !m.cancelled) {
        for sender in m.senders.iter().filter(|s| s.publish_status == 0) {
            if now(&mut rng)
                && driver
                    .staff_publishes_moment(&m.moment_id, &sender.userid)
                    .await
                    .is_ok()
            {
                bump(&ctx.counters.publications);
            }
        }
    }
}
