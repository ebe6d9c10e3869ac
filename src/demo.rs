//! `siyu demo`: siyu on a throw-away SQLite file, wired to the fake WeCom on loopback, with the
//! fake's driver playing a short scenario whose steps are printed as they happen. Both keep
//! running afterwards so an operator can look around.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::clock::Clock;
use crate::config::Secret;
use crate::fake::{FakeWecom, FollowView, MassMessageView, NewCustomer, TagEdit};
use crate::server::App;
use crate::testkit::{API_TOKEN, CallbackSecrets, local_settings};
use crate::wecom::crypto::Crypto;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where siyu listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the fake WeCom listens.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub fake_listen: SocketAddr,
    /// Play the scenario and exit instead of serving until Ctrl-C.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: {0}")]
    Setup(String),
    #[error("demo step {step:?} failed: {reason}")]
    Step { step: &'static str, reason: String },
}

/// The console user the demo makes (an admin; its password is printed).
const CONSOLE_USER: &str = "demo";

/// Signs in to the console as a browser would (the form, its CSRF token and cookie, the session
/// cookie) and reads the dashboard: how many customers it shows.
async fn check_console(addr: SocketAddr, password: &str) -> Result<i64, String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let base = format!("http://{addr}/console");
    let cookie = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
    };
    let form = http
        .get(format!("{base}/login"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let login_cookie = cookie(&form, "siyu_login").ok_or("the sign-in form set no cookie")?;
    let page = form.text().await.map_err(|e| e.to_string())?;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or("the sign-in form has no CSRF field")?
        .to_string();
    let signed = http
        .post(format!("{base}/login"))
        .header(
            reqwest::header::COOKIE,
            format!("siyu_login={login_cookie}"),
        )
        .form(&[
            ("user", CONSOLE_USER),
            ("password", password),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let session = cookie(&signed, "siyu_session")
        .ok_or_else(|| format!("the sign-in answered {} and no session", signed.status()))?;
    let dashboard = http
        .get(format!("{base}/"))
        .header(reqwest::header::COOKIE, format!("siyu_session={session}"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    dashboard
        .split("<b id=\"customers-total\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "the dashboard shows no customer count".to_string())
}

/// The tier groups the operator sets: tier, the group's chat id at the fake, its name.
const TIER_GROUPS: [(&str, &str, &str); 2] = [
    ("partner", "wrDemoPartnerGroup", "合作伙伴交流群"),
    ("senior_partner", "wrDemoSeniorGroup", "高级合作伙伴尊享群"),
];
/// Who owns the tier groups, and who helps as their admin.
const GROUP_OWNER: &str = "wangwu";
const GROUP_ADMIN: &str = "operator";
/// How long the demo waits for something siyu or the fake should do by itself.
const PATIENCE: Duration = Duration::from_secs(15);

/// Asks `check` every 50 ms until it answers something; fails the step after [`PATIENCE`].
async fn until<T, Fut: Future<Output = Option<T>>>(
    name: &'static str,
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> Result<T, DemoError> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check().await {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DemoError::Step {
                step: name,
                reason: format!("{what} within {} s", PATIENCE.as_secs()),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`until`], but the demo's clock moves 250 ms on every time `check` answers nothing, so
/// what siyu put off for later (a task followed every second, then every 2, 4, 8 …) comes sooner.
async fn until_moving<T, Fut: Future<Output = Option<T>>>(
    clock: &Clock,
    name: &'static str,
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> Result<T, DemoError> {
    until(name, what, || {
        let looked = check();
        async move {
            let found = looked.await;
            if found.is_none() {
                clock.advance(250);
            }
            found
        }
    })
    .await
}

/// The image the operator puts in the media library for the campaigns: an 8×8 red square, a
/// complete PNG (signature, IHDR, IDAT, IEND, each with its CRC).
const POSTER_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x08, 0x08, 0x02, 0x00, 0x00, 0x00, 0x4b, 0x6d, 0x29,
    0xdc, 0x00, 0x00, 0x00, 0x11, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xb8, 0xa6, 0xa1, 0x81,
    0x15, 0x31, 0x0c, 0x2d, 0x09, 0x00, 0xe3, 0xec, 0x49, 0x81, 0xc4, 0x44, 0xfb, 0x61, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];
const POSTER_NAME: &str = "new-arrivals.png";
/// What the campaigns say.
const MOMENT_TEXT: &str = "新品上市：合作伙伴专享试用装，限量 100 份，评论区留言即可申请。";
const MESSAGE_TEXT: &str = "尊敬的高级合作伙伴：新品已到，专享价八折，今晚八点开抢。";
/// How far ahead of the demo's clock the campaigns are scheduled.
const CAMPAIGN_LEAD_MS: i64 = 5_000;

/// The invitation tasks (single-chat mass messages) the fake holds, oldest first.
fn invitation_tasks(fake: &FakeWecom) -> Vec<MassMessageView> {
    fake.mass_messages()
        .into_iter()
        .filter(|m| m.chat_type == "single")
        .collect()
}

/// The app messages that reached `userid` (alone or among others).
fn app_messages_to(fake: &FakeWecom, userid: &str) -> Vec<Value> {
    fake.app_messages()
        .into_iter()
        .filter(|m| {
            m["touser"]
                .as_str()
                .is_some_and(|t| t.split('|').any(|u| u == userid))
        })
        .collect()
}

/// Runs one step, naming it if it fails.
async fn step<T, E: std::fmt::Display>(
    name: &'static str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, DemoError> {
    f.await.map_err(|e| DemoError::Step {
        step: name,
        reason: e.to_string(),
    })
}

struct Demo {
    app: App,
    fake: FakeWecom,
    crypto: Crypto,
    http: reqwest::Client,
    n: usize,
    /// Welcome messages already shown, per customer.
    welcomes_shown: HashMap<String, usize>,
    /// App messages already shown by a tier-group step (the member notices show the rest).
    messages_shown: Vec<Value>,
}

impl Demo {
    fn say(&mut self, text: impl AsRef<str>) {
        self.n += 1;
        println!("{:>2}. {}", self.n, text.as_ref());
    }

    fn detail(&self, text: impl AsRef<str>) {
        for line in text.as_ref().lines() {
            println!("      {line}");
        }
    }

    async fn create_channel(&mut self, body: serde_json::Value) -> Result<(), DemoError> {
        let response = step(
            "create channel",
            self.http
                .post(format!("http://{}/api/v1/channels", self.app.addr()))
                .bearer_auth(API_TOKEN)
                .json(&body)
                .send(),
        )
        .await?;
        let status = response.status();
        let created: serde_json::Value = step("create channel", response.json()).await?;
        if status != 201 {
            return Err(DemoError::Step {
                step: "create channel",
                reason: created.to_string(),
            });
        }
        self.say(format!(
            "the operator created the channel {} ({}) by POST /api/v1/channels: its QR code is {}",
            created["name"].as_str().unwrap_or(""),
            created["code"].as_str().unwrap_or(""),
            created["qr_code"].as_str().unwrap_or("")
        ));
        Ok(())
    }

    fn api_url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.app.addr())
    }

    async fn api_get(&self, name: &'static str, path: &str) -> Result<Value, DemoError> {
        step(name, async {
            self.http
                .get(self.api_url(path))
                .bearer_auth(API_TOKEN)
                .send()
                .await?
                .error_for_status()?
                .json::<Value>()
                .await
        })
        .await
    }

    async fn api_put(
        &self,
        name: &'static str,
        path: &str,
        body: Value,
    ) -> Result<Value, DemoError> {
        let response = step(
            name,
            self.http
                .put(self.api_url(path))
                .bearer_auth(API_TOKEN)
                .json(&body)
                .send(),
        )
        .await?;
        let status = response.status();
        let answer: Value = step(name, response.json()).await?;
        if !status.is_success() {
            return Err(DemoError::Step {
                step: name,
                reason: format!("{status}: {answer}"),
            });
        }
        Ok(answer)
    }

    /// POSTs `body` to the API path; the answer, which must come with the status `want`.
    async fn api_post(
        &self,
        name: &'static str,
        path: &str,
        body: Value,
        want: u16,
    ) -> Result<Value, DemoError> {
        let response = step(
            name,
            self.http
                .post(self.api_url(path))
                .bearer_auth(API_TOKEN)
                .json(&body)
                .send(),
        )
        .await?;
        let status = response.status();
        let answer: Value = step(name, response.json()).await?;
        if status != want {
            return Err(DemoError::Step {
                step: name,
                reason: format!("{status}: {answer}"),
            });
        }
        Ok(answer)
    }

    /// `POST /api/v1/media` with the file in the multipart field `file`: the library item.
    async fn upload_media(&self, filename: &str, bytes: &[u8]) -> Result<Value, DemoError> {
        let name = "upload to the media library";
        let file = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(filename.to_owned());
        let response = step(
            name,
            self.http
                .post(self.api_url("/media"))
                .bearer_auth(API_TOKEN)
                .multipart(reqwest::multipart::Form::new().part("file", file))
                .send(),
        )
        .await?;
        let status = response.status();
        let answer: Value = step(name, response.json()).await?;
        if status != 201 {
            return Err(DemoError::Step {
                step: name,
                reason: format!("{status}: {answer}"),
            });
        }
        Ok(answer)
    }

    /// `GET /api/v1/campaigns/{id}`, once `wanted` holds for it (the demo's clock moving on
    /// meanwhile, so that siyu's follow-ups come sooner).
    async fn campaign_when(
        &self,
        name: &'static str,
        id: i64,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Value, DemoError> {
        let path = format!("/campaigns/{id}");
        let wanted = &wanted;
        until_moving(self.app.clock(), name, what, || {
            let path = path.clone();
            async move {
                let campaign = self.api_get(name, &path).await.ok()?;
                wanted(&campaign).then_some(campaign)
            }
        })
        .await
    }

    /// The name of a corp tag at the fake (its id when there is none).
    fn tag_name(&self, id: &str) -> String {
        self.fake
            .tag_library()
            .iter()
            .flat_map(|g| g.tag.iter())
            .find(|t| t.id == id)
            .map_or_else(|| id.to_string(), |t| t.name.clone())
    }

    /// A campaign run's results as `GET /api/v1/campaigns/{id}` gives them.
    fn show_campaign(&self, c: &Value) {
        let run = &c["runs"][0];
        let totals: Vec<String> = run["totals"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(status, n)| format!("{status} {n}"))
            .collect();
        let sends: Vec<String> = run["sends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|send| match send["moment_id"].as_str() {
                Some(moment_id) => format!("moment_id {moment_id}"),
                None => format!(
                    "msgid {} ({}, {})",
                    send["msgid"].as_str().unwrap_or("?"),
                    send["sender"].as_str().unwrap_or(""),
                    send["status"].as_str().unwrap_or("")
                ),
            })
            .collect();
        self.detail(format!(
            "GET /api/v1/campaigns/{}: {} {}; its run: audience {}, excluded_cap {}, totals {}; {}",
            c["id"],
            c["kind"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or(""),
            run["audience"],
            run["excluded_cap"],
            totals.join(", "),
            sends.join(", ")
        ));
    }

    /// The campaigns: the operator pins customers so that both tiers have some, puts an image in
    /// the media library, previews and schedules a Moments post for partners and a message for
    /// senior partners a few seconds ahead on the demo's clock; the demo moves its clock on, the
    /// tasks reach the fake, the members publish and confirm them, and siyu records the results.
    async fn campaigns(&mut self, seniors: [&str; 2], partner: &str) -> Result<(), DemoError> {
        for id in seniors {
            self.api_put(
                "pin",
                &format!("/customers/{id}/pin"),
                json!({"tier": "senior_partner", "reason": "新品内测名单"}),
            )
            .await?;
        }
        for id in seniors {
            self.wait_for_tier(id, "senior_partner").await?;
        }
        let names: Vec<String> = seniors.iter().map(|id| self.customer_name(id)).collect();
        self.say(format!(
            "the operator pinned {} to 高级合作伙伴 by PUT /api/v1/customers/{{id}}/pin {{\"tier\": \"senior_partner\", \"reason\": \"新品内测名单\"}}; {} is still a 合作伙伴: the campaigns below have partners and senior partners to reach",
            names.join(" and "),
            self.customer_name(partner)
        ));

        let item = self.upload_media(POSTER_NAME, POSTER_PNG).await?;
        let media = item["id"].as_i64().unwrap_or_default();
        self.say(format!(
            "the operator uploaded a poster to the media library by POST /api/v1/media: id {media}, kind {}, {} bytes ({}, {}, sha256 {}…)",
            item["kind"].as_str().unwrap_or(""),
            item["size"],
            item["filename"].as_str().unwrap_or(""),
            item["content_type"].as_str().unwrap_or(""),
            item["sha256"].as_str().unwrap_or("").get(..12).unwrap_or("")
        ));

        let clock = self.app.clock().clone();
        let at = chrono::DateTime::from_timestamp_millis(clock.now_ms() + CAMPAIGN_LEAD_MS)
            .map(|t| {
                t.with_timezone(&chrono_tz::Asia::Shanghai)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            })
            .unwrap_or_default();
        let moment = json!({"kind": "moment", "name": "合作伙伴新品朋友圈",
            "audience": {"tiers": ["partner"]},
            "content": {"text": MOMENT_TEXT, "images": [media]},
            "schedule": {"at": at}, "by": GROUP_ADMIN});
        let message = json!({"kind": "message", "name": "高级合作伙伴新品专享",
            "audience": {"tiers": ["senior_partner"]},
            "content": {"text": MESSAGE_TEXT, "images": [media]},
            "schedule": {"at": at}, "by": GROUP_ADMIN});
        let preview = self
            .api_post(
                "preview a campaign",
                "/campaigns/preview",
                message.clone(),
                200,
            )
            .await?;
        let per_member: Vec<String> = preview["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| format!("{} {}", m["userid"].as_str().unwrap_or(""), m["customers"]))
            .collect();
        self.say(format!(
            "the operator previewed the message for senior partners by POST /api/v1/campaigns/preview: {} customers now ({}), {} left out by the cap",
            preview["audience"],
            per_member.join(", "),
            preview["excluded"]["over_cap"]
        ));

        self.say(format!(
            "the operator scheduled two campaigns by POST /api/v1/campaigns, {} s ahead on the demo's clock:",
            CAMPAIGN_LEAD_MS / 1000
        ));
        let mut ids = Vec::new();
        for body in [moment, message] {
            let c = self
                .api_post("schedule a campaign", "/campaigns", body, 201)
                .await?;
            let next = c["next_run_at"]
                .as_i64()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| {
                    t.with_timezone(&chrono_tz::Asia::Shanghai)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
                })
                .unwrap_or_default();
            self.detail(format!(
                "campaign {}: {} 「{}」 for {}, text and image {media}, {} (next run {next})",
                c["id"],
                c["kind"].as_str().unwrap_or(""),
                c["name"].as_str().unwrap_or(""),
                c["audience"]["tiers"][0].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or("")
            ));
            ids.push(c["id"].as_i64().unwrap_or_default());
        }

        // The runs fall due on the demo's clock: move it rather than wait.
        clock.advance(CAMPAIGN_LEAD_MS);
        let senders_wanted = per_member.len();
        let fk = &self.fake;
        let (post, mut messages) = until(
            "campaign runs",
            "no Moments task and no message per member at WeCom",
            || async move {
                let post = fk
                    .moment_tasks()
                    .into_iter()
                    .find(|m| m.text.as_deref() == Some(MOMENT_TEXT))?;
                let messages: Vec<MassMessageView> = fk
                    .mass_messages()
                    .into_iter()
                    .filter(|m| m.text.as_deref() == Some(MESSAGE_TEXT))
                    .collect();
                (messages.len() == senders_wanted).then_some((post, messages))
            },
        )
        .await?;
        messages.sort_by(|x, y| x.sender.cmp(&y.sender));
        self.say(format!(
            "the demo moved its clock {} s on: both runs fell due; siyu computed each audience then and gave WeCom the tasks:",
            CAMPAIGN_LEAD_MS / 1000
        ));
        let senders: Vec<String> = post.senders.iter().map(|s| s.userid.clone()).collect();
        let tags: Vec<String> = post
            .tag_list
            .iter()
            .map(|id| format!("{} ({id})", self.tag_name(id)))
            .collect();
        self.detail(format!(
            "add_moment_task from {}: 「{}」",
            senders.join("、"),
            post.text.as_deref().unwrap_or("")
        ));
        self.detail(format!(
            "   sender_list {}; external_contact_list.tag_list {}: their customers with any of these tags see the post",
            senders.join(", "),
            tags.join(", ")
        ));
        for a in &post.attachments {
            let (file, size) = self.media_file(a["image"]["media_id"].as_str().unwrap_or(""));
            self.detail(format!(
                "   + image {file} ({size} bytes): media library item {media}, uploaded with media/upload_attachment (attachment_type 1)"
            ));
        }
        let mut uploaded: Vec<Value> = Vec::new();
        for m in &messages {
            let media_id = m
                .attachments
                .first()
                .map(|a| a["image"]["media_id"].clone());
            let image = if media_id.as_ref().is_some_and(|id| uploaded.contains(id)) {
                format!("media library item {media}, the same media_id (uploaded once, reused)")
            } else {
                format!("media library item {media}, uploaded with media/upload")
            };
            uploaded.extend(media_id);
            self.show_task(m, "add_msg_template ", &image);
        }

        let demo: &Demo = self;
        let c = demo
            .campaign_when(
                "moment_id",
                ids[0],
                "siyu did not learn the post's moment_id",
                |c| c["runs"][0]["sends"][0]["moment_id"].is_string(),
            )
            .await?;
        let moment_id = c["runs"][0]["sends"][0]["moment_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        self.say(format!(
            "siyu polled get_moment_task_result until WeCom had made the post: moment_id {moment_id}"
        ));

        let driver = self.fake.driver();
        for sender in &senders {
            step(
                "member publishes",
                driver.staff_publishes_moment(&moment_id, sender),
            )
            .await?;
        }
        let mut confirmed = Vec::new();
        for m in &messages {
            let sender = m.sender.clone().unwrap_or_default();
            step(
                "member confirms",
                driver.staff_confirms_mass_message(&m.msgid, &sender),
            )
            .await?;
            confirmed.push(sender);
        }
        self.say(format!(
            "{} published the post in the client, and {} confirmed their messages; siyu follows each task (every {} s at first, doubling; the demo moves its clock on while it waits) and records what came of it:",
            senders.join(" and "),
            confirmed.join(" and "),
            self.app.services().settings.groups.follow_every_secs
        ));
        let published = senders.len() as u64;
        let post = self
            .campaign_when("post results", ids[0], "the post is not published", |c| {
                c["runs"][0]["totals"]["published"].as_u64() == Some(published)
            })
            .await?;
        self.show_campaign(&post);
        let customers = preview["audience"].as_u64();
        let sent = self
            .campaign_when(
                "message results",
                ids[1],
                "the messages are not delivered",
                |c| c["runs"][0]["totals"]["delivered"].as_u64() == customers,
            )
            .await?;
        self.show_campaign(&sent);

        // The pins' news (tier changes, the invitations they made) reaches the members before the
        // story goes on, so that the next notice tells only what happens next.
        for id in seniors {
            let name = self.customer_name(id);
            let member = self
                .fake
                .customer(id)
                .and_then(|c| c.follow_user.first().map(|f| f.userid.clone()))
                .unwrap_or_default();
            let (fk, name, member) = (&self.fake, &name, &member);
            until_moving(
                &clock,
                "member notice",
                &format!("no notice of {name}'s invitation to {member}"),
                || async move {
                    app_messages_to(fk, member)
                        .iter()
                        .any(|m| {
                            m["text"]["content"].as_str().is_some_and(|t| {
                                t.contains("入群邀请") && t.contains(name.as_str())
                            })
                        })
                        .then_some(())
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The customer's row in `GET /api/v1/tier-groups/{tier}/members`, once `wanted` holds for it.
    async fn member_when(
        &self,
        name: &'static str,
        tier: &str,
        customer: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Value, DemoError> {
        let path = format!("/tier-groups/{tier}/members");
        let wanted = &wanted;
        until(
            name,
            &format!("{customer} not as expected in {path}"),
            || {
                let path = path.clone();
                async move {
                    let members = self.api_get(name, &path).await.ok()?;
                    members["members"]
                        .as_array()?
                        .iter()
                        .find(|m| m["external_userid"] == customer && wanted(m))
                        .cloned()
                }
            },
        )
        .await
    }

    /// The fake's media record of an uploaded media_id: file name and size.
    fn media_file(&self, media_id: &str) -> (String, u64) {
        let dump = self.fake.dump();
        dump["media"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["media_id"] == media_id)
            .map(|m| {
                (
                    m["filename"].as_str().unwrap_or("").to_string(),
                    m["size"].as_u64().unwrap_or(0),
                )
            })
            .unwrap_or_default()
    }

    fn customer_name(&self, external_userid: &str) -> String {
        self.fake
            .customer(external_userid)
            .map_or_else(|| external_userid.to_string(), |c| c.name)
    }

    /// Shows a mass-message task as its sender sees it in 群发助手: recipients, text, the images
    /// (each described as `image`).
    fn show_task(&self, task: &MassMessageView, lead: &str, image: &str) {
        let to: Vec<String> = task
            .results
            .iter()
            .filter_map(|r| r.external_userid.as_deref())
            .map(|id| self.customer_name(id))
            .collect();
        self.detail(format!(
            "{lead}from {} to {}: 「{}」",
            task.sender.as_deref().unwrap_or("?"),
            to.join("、"),
            task.text.as_deref().unwrap_or("")
        ));
        for a in &task.attachments {
            let media_id = a["image"]["media_id"].as_str().unwrap_or("");
            let (file, size) = self.media_file(media_id);
            self.detail(format!("   + image {file} ({size} bytes): {image}"));
        }
    }

    async fn wait_for_tier(&self, customer: &str, tier: &str) -> Result<(), DemoError> {
        for _ in 0..200 {
            let now = self
                .app
                .store()
                .customer(&customer.into())
                .await
                .ok()
                .flatten()
                .map(|c| c.tier);
            if now.as_deref() == Some(tier) {
                // Let the tag swap and the note reach WeCom too.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(DemoError::Step {
            step: "tier change",
            reason: format!("{customer} did not become {tier}"),
        })
    }

    /// Waits until siyu has tagged and noted the relation at the fake, then shows what the member
    /// sees, and the welcome message when this step is the one that sent it (the fake recorded
    /// one for the customer that was not shown yet).
    async fn show_relation(
        &mut self,
        userid: &str,
        external_userid: &str,
    ) -> Result<(), DemoError> {
        let mut seen: Option<FollowView> = None;
        for _ in 0..200 {
            seen = self
                .fake
                .customer(external_userid)
                .and_then(|c| c.follow_user.into_iter().find(|f| f.userid == userid))
                .filter(|f| !f.description.is_empty() && f.tags.len() >= 2);
            if seen.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let Some(follow) = seen else {
            return Err(DemoError::Step {
                step: "tag and note",
                reason: "not done within 5 s".into(),
            });
        };
        let library = self.fake.tag_library();
        let names: Vec<String> = follow
            .tags
            .iter()
            .filter_map(|id| {
                library
                    .iter()
                    .flat_map(|g| g.tag.iter())
                    .find(|t| &t.id == id)
                    .map(|t| t.name.clone())
            })
            .collect();
        self.detail(format!("{userid} sees: tags {}", names.join("、")));
        self.detail(format!(
            "           remark 「{}」 description 「{}」",
            follow.remark, follow.description
        ));
        // The welcome goes out first, but let every job due now finish before looking.
        for _ in 0..80 {
            let now = self.app.clock().now_ms();
            if self.app.store().jobs_idle(now).await.unwrap_or(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let welcomes: Vec<_> = self
            .fake
            .welcome_messages()
            .into_iter()
            .filter(|w| w.external_userid == external_userid)
            .collect();
        let shown = self
            .welcomes_shown
            .entry(external_userid.to_string())
            .or_default();
        let new = welcomes.get(*shown..).unwrap_or_default().to_vec();
        *shown = welcomes.len();
        for w in &new {
            self.detail(format!(
                "the customer got the welcome message 「{}」{}",
                w.text.clone().unwrap_or_default(),
                if w.attachments.is_empty() {
                    String::new()
                } else {
                    format!(" + {} attachment(s)", w.attachments.len())
                }
            ));
        }
        Ok(())
    }
}

/// Where `siyu demo` writes its log, so the story on the terminal reads cleanly (kept after the
/// demo ends; the terminal shows warnings and errors only).
pub fn log_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("siyu-demo-{}.log", std::process::id()))
}

pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let dir = std::env::temp_dir().join(format!("siyu-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| DemoError::Setup(e.to_string()))?;
    let secrets = CallbackSecrets::generate();
    let fake = FakeWecom::new(crate::fake::FakeConfig {
        corp_id: secrets.corp_id.clone(),
        agent_id: 1_000_002,
        app_secret: "demo-app-secret".into(),
        contact_secret: "demo-contact-secret".into(),
        callback_url: None,
        callback_token: secrets.token.clone(),
        encoding_aes_key: secrets.encoding_aes_key.clone(),
        mass_cap: Default::default(),
    });
    fake.add_staff("zhangsan", "张三");
    fake.add_staff("lisi", "李四");
    fake.add_staff("operator", "运营");
    fake.add_staff(GROUP_OWNER, "王五");
    let (fake_addr, _fake_server) = fake.serve(args.fake_listen).await.map_err(|e| {
        DemoError::Setup(format!(
            "fake WeCom cannot listen on {}: {e}",
            args.fake_listen
        ))
    })?;

    let mut settings = local_settings(&format!("sqlite://{}/siyu.db", dir.display()), &secrets);
    settings.server.listen = args.listen.to_string();
    settings.wecom.secret = Secret::new("demo-app-secret");
    settings.wecom.contact_secret = Secret::new("demo-contact-secret");
    settings.wecom.api_base = format!("http://{fake_addr}");
    settings.notify.operators = vec!["operator".into()];
    settings.notify.batch_secs = 2;
    // Tier groups gather invitations and removal requests as briefly, and follow tasks often.
    settings.groups.invite_batch_secs = 2;
    settings.groups.removal_batch_secs = 2;
    settings.groups.follow_every_secs = 1;
    let app = App::build(settings).await.map_err(|e| {
        DemoError::Setup(format!(
            "{e} (is port {} taken? try --listen 127.0.0.1:0)",
            args.listen
        ))
    })?;
    fake.set_callback_url(&format!("http://{}/wecom/callback", app.addr()));
    // The console's first admin, as `siyu users add` makes one; a fresh password each run.
    let console_password = crate::app::sessions::random_secret()[..16].to_string();
    crate::app::users::add(
        app.services(),
        &crate::app::users::Principal::cli(),
        CONSOLE_USER,
        crate::app::users::Role::Admin,
        &console_password,
    )
    .await
    .map_err(|e| DemoError::Setup(format!("the console's user: {e}")))?;

    println!("siyu demo");
    println!(
        "  siyu        http://{}   (SQLite at {}/siyu.db)",
        app.addr(),
        dir.display()
    );
    println!(
        "  console     http://{}/console/   (user {CONSOLE_USER}, password {console_password})",
        app.addr()
    );
    println!("  fake WeCom  http://{fake_addr}");
    println!(
        "  logs        {}   (warnings also here)",
        log_path().display()
    );
    println!();
    let mut demo = Demo {
        crypto: secrets.crypto(),
        app,
        fake: fake.clone(),
        http: reqwest::Client::new(),
        n: 0,
        welcomes_shown: HashMap::new(),
        messages_shown: Vec::new(),
    };
    let driver = fake.driver();

    demo.create_channel(
        json!({"code": "douyin", "name": "抖音", "staff": ["zhangsan"], "tags": ["短视频"],
        "welcome": {"text": "{{ name }}，欢迎从抖音来！回复「新人礼」领取优惠券。"}}),
    )
    .await?;
    demo.create_channel(json!({"code": "xiaohongshu", "name": "小红书", "staff": ["lisi"],
        "welcome": {"text": "你好{{ name }}，这是你的小红书专属福利：",
                    "attachments": [{"msgtype": "link", "link": {"title": "新人礼包", "url": "https://shop.example/gift"}}]}}))
        .await?;

    let a = step(
        "add through douyin",
        driver.customer_adds_via_contact_way("douyin", NewCustomer::wechat("王小明")),
    )
    .await?;
    demo.say(format!(
        "王小明 scanned the 抖音 code and added {} → {}",
        a.userid, a.external_userid
    ));
    demo.show_relation(&a.userid, &a.external_userid).await?;
    let b = step(
        "add through xiaohongshu",
        driver.customer_adds_via_contact_way("xiaohongshu", NewCustomer::wechat("陈静")),
    )
    .await?;
    demo.say(format!(
        "陈静 scanned the 小红书 code and added {} → {}",
        b.userid, b.external_userid
    ));
    demo.show_relation(&b.userid, &b.external_userid).await?;
    let c = step(
        "add with an unknown state",
        driver.customer_adds_staff(
            "zhangsan",
            Some("old_poster_2024"),
            NewCustomer::wechat("路人甲"),
        ),
    )
    .await?;
    demo.say("路人甲 scanned an old poster whose code no channel knows: attributed to 未归因");
    demo.show_relation(&c.userid, &c.external_userid).await?;

    let reply = step(
        "staff question",
        driver.staff_sends_text("zhangsan", "查 王小明"),
    )
    .await?;
    demo.say("张三 asked the siyu app 「查 王小明」 and got, encrypted in the reply:");
    let answer = demo
        .crypto
        .open_passive_reply(&reply)
        .ok()
        .and_then(|xml| match crate::wecom::event::parse(&xml) {
            Ok(crate::wecom::event::Event::Text { content, .. }) => Some(content),
            _ => None,
        })
        .unwrap_or_else(|| "(no answer)".into());
    demo.detail(answer);

    let douyin_tag = fake
        .tag_library()
        .iter()
        .flat_map(|g| g.tag.clone())
        .find(|t| t.name == "抖音" && !t.deleted)
        .map(|t| t.id)
        .unwrap_or_default();
    step(
        "admin deletes a tag",
        driver.admin_edits_tag(TagEdit::DeleteTag {
            id: douyin_tag.clone(),
        }),
    )
    .await?;
    demo.say(
        "an admin deleted the tag 抖音 in the WeCom console; siyu recreates it and puts it back:",
    );
    for _ in 0..200 {
        let library = fake.tag_library();
        let back = fake.customer(&a.external_userid).is_some_and(|c| {
            c.follow_user.iter().any(|f| {
                f.tags.iter().any(|id| {
                    *id != douyin_tag
                        && library
                            .iter()
                            .flat_map(|g| g.tag.iter())
                            .any(|t| &t.id == id && t.name == "抖音" && !t.deleted)
                })
            })
        });
        if back {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    demo.show_relation(&a.userid, &a.external_userid).await?;

    // The operator gives the upper tiers their customer groups (groups 王五 owns at WeCom).
    let mut join_ways: HashMap<&str, String> = HashMap::new();
    demo.say("the operator gave the upper tiers their customer groups by PUT /api/v1/tier-groups/{tier}: siyu checked each group at WeCom and made the tier a 「加入群聊」 join way");
    for (tier, chat_id, name) in TIER_GROUPS {
        fake.add_group_chat(chat_id, GROUP_OWNER, name, 500);
        fake.set_group_admins(chat_id, &[GROUP_ADMIN]);
        let set = demo
            .api_put(
                "set tier groups",
                &format!("/tier-groups/{tier}"),
                json!({"chat_ids": [chat_id],
                       "invitation": "恭喜您成为{{ tier }}！长按识别图中二维码，加入{{ tier }}专属群，新品和福利第一时间告诉您。",
                       "room_base_name": name, "auto_create_room": true}),
            )
            .await?;
        demo.detail(format!(
            "{} ({tier}) → 「{name}」 (owner {GROUP_OWNER}, admin {GROUP_ADMIN}): join way QR code {} (state {})",
            set["tier_name"].as_str().unwrap_or(""),
            set["qr_code"].as_str().unwrap_or(""),
            set["state"].as_str().unwrap_or("")
        ));
        join_ways.insert(tier, set["config_id"].as_str().unwrap_or("").to_string());
    }

    // The shop's orders drive the tiers.
    let now = demo.app.clock().now_ms();
    let at = |days_ago: i64| {
        chrono::DateTime::from_timestamp_millis(now - days_ago * 86_400_000)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    };
    let items = vec![
        json!({"kind": "order", "customer": a.external_userid, "amount": "1200.00", "at": at(3), "id": "demo-o-1"}),
        json!({"kind": "order", "customer": a.external_userid, "amount": "800.00", "at": at(1), "id": "demo-o-2"}),
        json!({"kind": "order", "customer": c.external_userid, "amount": "12000.00", "at": at(2), "id": "demo-o-3"}),
        json!({"kind": "referral", "customer": c.external_userid, "count": 10, "at": at(2), "id": "demo-r-1"}),
    ];
    let posted = step(
        "post activity",
        demo.http
            .post(format!("http://{}/api/v1/activity", demo.app.addr()))
            .bearer_auth(API_TOKEN)
            .json(&json!({ "items": items }))
            .send(),
    )
    .await?;
    demo.say(format!(
        "the shop posted 4 records to /api/v1/activity ({}): 王小明 spent 2,000 yuan; 路人甲 12,000 yuan and 10 referrals",
        posted.status()
    ));
    demo.wait_for_tier(&a.external_userid, "partner").await?;
    demo.detail("王小明 was promoted 普通会员 → 合作伙伴 (90-day spend ≥ 2,000)");
    demo.show_relation(&a.userid, &a.external_userid).await?;
    demo.wait_for_tier(&c.external_userid, "senior_partner")
        .await?;
    demo.detail("路人甲 was promoted to 高级合作伙伴 (spend ≥ 10,000 and referrals ≥ 10)");
    demo.show_relation(&c.userid, &c.external_userid).await?;

    // Promoted into tiers with groups: invited, by their member, with the tier's QR code.
    let promoted = [
        ("partner", &a.external_userid),
        ("senior_partner", &c.external_userid),
    ];
    let fk = &fake;
    let tasks = until("invitation tasks", "no task per tier", || async move {
        let tasks = invitation_tasks(fk);
        (tasks.len() >= 2).then_some(tasks)
    })
    .await?;
    demo.say("siyu gathered zhangsan's invitations for 2 s into one mass-message task per tier (add_msg_template); zhangsan finds them in 群发助手:");
    for t in &tasks {
        demo.show_task(t, "", "the tier's join QR code, uploaded with media/upload");
    }
    for (tier, id) in promoted {
        // The task is at WeCom before siyu has read its answer and marked the invitation: wait
        // for the mark, not only for the task.
        let row = demo
            .member_when("invited", tier, id, |m| {
                m["status"] == "invited" && m["invitation"]["status"] != "queued"
            })
            .await?;
        demo.detail(format!(
            "GET /api/v1/tier-groups/{tier}/members: {} invited (invitation {})",
            demo.customer_name(id),
            row["invitation"]["status"].as_str().unwrap_or("")
        ));
    }
    for t in &tasks {
        step(
            "member confirms",
            driver.staff_confirms_mass_message(&t.msgid, "zhangsan"),
        )
        .await?;
    }
    demo.say("zhangsan confirmed both tasks in the client; siyu follows each task at WeCom and records what reached whom:");
    for (tier, id) in promoted {
        let row = demo
            .member_when("delivered", tier, id, |m| {
                m["invitation"]["status"] == "delivered"
            })
            .await?;
        demo.detail(format!(
            "{}: invitation to {} {}",
            demo.customer_name(id),
            tier,
            row["invitation"]["status"].as_str().unwrap_or("")
        ));
    }
    let joined_a = step(
        "join by the QR code",
        driver.customer_joins_via_join_way(&join_ways["partner"], &a.external_userid),
    )
    .await?;
    let joined_c = step(
        "join by the QR code",
        driver.customer_joins_via_join_way(&join_ways["senior_partner"], &c.external_userid),
    )
    .await?;
    demo.say("王小明 and 路人甲 scanned the QR codes in their messages and joined; siyu reads the group on each change_external_chat:");
    for ((tier, id), chat) in promoted.into_iter().zip([&joined_a, &joined_c]) {
        demo.member_when("joined", tier, id, |m| m["status"] == "joined")
            .await?;
        let group = fake.group_chat(chat).map(|g| g.name).unwrap_or_default();
        demo.detail(format!(
            "GET /api/v1/tier-groups/{tier}/members: {} joined 「{group}」",
            demo.customer_name(id)
        ));
    }

    // Time passes with no orders: keep rules fail, and after the 30-day grace they step down.
    demo.app.clock().advance(91 * 86_400_000);
    let first = step(
        "nightly evaluation",
        crate::app::tiers::evaluate(demo.app.services(), None, true),
    )
    .await?;
    demo.say(format!(
        "the demo moved its clock 91 days on: the orders left the 90-day window; the nightly evaluation changed {} tiers (grace period)",
        first.len()
    ));
    demo.app.clock().advance(31 * 86_400_000);
    let second = step(
        "nightly evaluation",
        crate::app::tiers::evaluate(demo.app.services(), None, true),
    )
    .await?;
    demo.say("31 days later, still no orders: the grace period is over");
    for d in &second {
        let name = match demo.app.store().customer(&d.external_userid).await {
            Ok(Some(c)) => c.name,
            _ => d.external_userid.to_string(),
        };
        demo.detail(format!("{name}: {} → {} ({})", d.from, d.to, d.reason));
    }
    demo.wait_for_tier(&c.external_userid, "partner").await?;
    demo.show_relation(&c.userid, &c.external_userid).await?;

    // Demoted below their groups: the owner is asked to remove them, and sees it done.
    let demoted = [
        ("senior_partner", &c.external_userid, TIER_GROUPS[1].1),
        ("partner", &a.external_userid, TIER_GROUPS[0].1),
    ];
    let asked = until(
        "removal request",
        "no removal request to the owner",
        || async move {
            let to_owner = app_messages_to(fk, GROUP_OWNER);
            let text: String = to_owner
                .iter()
                .filter_map(|m| m["text"]["content"].as_str())
                .collect();
            (text.contains("路人甲") && text.contains("王小明")).then_some(to_owner)
        },
    )
    .await?;
    demo.say("the demotions left 王小明 and 路人甲 in groups above their new tiers: siyu gathered the removal requests for 2 s into one app message to the groups' owner and admins:");
    for m in asked {
        demo.detail(format!("to {}:", m["touser"].as_str().unwrap_or("")));
        demo.detail(
            m["text"]["content"]
                .as_str()
                .unwrap_or("")
                .lines()
                .map(|l| format!("   {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        demo.messages_shown.push(m);
    }
    for (tier, id, _) in demoted {
        demo.member_when("removal requested", tier, id, |m| {
            m["status"] == "removal_requested"
        })
        .await?;
        demo.detail(format!(
            "GET /api/v1/tier-groups/{tier}/members: {} removal_requested",
            demo.customer_name(id)
        ));
    }
    let first_tasks = tasks.len();
    let again = until(
        "invitation task",
        "no task for the demoted senior partner",
        || async move { invitation_tasks(fk).get(first_tasks).cloned() },
    )
    .await?;
    let image = |t: &MassMessageView| {
        t.attachments
            .first()
            .map(|a| a["image"]["media_id"].clone())
    };
    let first_image = tasks.iter().find(|t| t.text == again.text).and_then(image);
    demo.detail(format!(
        "路人甲, now a 合作伙伴 in none of its groups, is invited to it: a new task from zhangsan{}",
        if first_image.is_some() && first_image != image(&again) {
            " (the QR image uploaded again: the first upload is past its 3 days)"
        } else {
            ""
        }
    ));
    for (_, id, chat) in demoted {
        step("owner removes", driver.member_leaves_group(chat, id, true)).await?;
    }
    demo.say(format!("{GROUP_OWNER} removed them in the client; siyu saw them leave (change_external_chat) and marks the removals done:"));
    for (_, id, chat) in demoted {
        let path = format!("/customers/{id}");
        let demo_ref = &demo;
        let removal = until("removal done", "the removal is not done", || {
            let path = path.clone();
            async move {
                let view = demo_ref.api_get("customer view", &path).await.ok()?;
                view["groups"]["removals"]
                    .as_array()?
                    .iter()
                    .find(|r| r["chat_id"] == chat && r["status"] == "done")
                    .cloned()
            }
        })
        .await?;
        let group = fake.group_chat(chat).map(|g| g.name).unwrap_or_default();
        demo.detail(format!(
            "GET /api/v1/customers/{{id}} of {}: the removal from 「{group}」 is {}",
            demo.customer_name(id),
            removal["status"].as_str().unwrap_or("")
        ));
    }
    // The members hear of the removals asked in their next notice (shown below).
    until(
        "member notice",
        "no notice of the removals to zhangsan",
        || async move {
            app_messages_to(fk, "zhangsan")
                .iter()
                .any(|m| {
                    m["text"]["content"]
                        .as_str()
                        .is_some_and(|t| t.contains("移出"))
                })
                .then_some(())
        },
    )
    .await?;

    // Campaigns: partners and senior partners get a Moments post and a mass message.
    demo.campaigns([&a.external_userid, &b.external_userid], &c.external_userid)
        .await?;

    let to_lisi =
        |m: &serde_json::Value| m["touser"].as_str().is_some_and(|t| t.starts_with("lisi"));
    let before_churn = fake.app_messages().iter().filter(|m| to_lisi(m)).count();
    step(
        "churn",
        driver.customer_deletes_staff("lisi", &b.external_userid),
    )
    .await?;
    demo.say("陈静 deleted 李四: churn. siyu gathers such news for 2 s, then tells 李四 and the operator once:");
    for _ in 0..120 {
        if fake.app_messages().iter().filter(|m| to_lisi(m)).count() > before_churn {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let churn_news: Vec<Value> = fake
        .app_messages()
        .into_iter()
        .filter(to_lisi)
        .skip(before_churn)
        .collect();
    for m in churn_news {
        demo.detail(format!(
            "to {}: {}",
            m["touser"].as_str().unwrap_or(""),
            m["text"]["content"].as_str().unwrap_or("")
        ));
        demo.messages_shown.push(m);
    }
    demo.say("the members were told of their customers' tier changes the same way, one message per member and window:");
    for m in fake
        .app_messages()
        .iter()
        .filter(|m| !demo.messages_shown.contains(m))
    {
        demo.detail(format!(
            "to {}: {}",
            m["touser"].as_str().unwrap_or(""),
            m["text"]["content"]
                .as_str()
                .unwrap_or("")
                .replace('\n', " ")
        ));
    }

    let app = demo.app;
    let channels: serde_json::Value = step("list channels", async {
        demo.http
            .get(format!("http://{}/api/v1/channels", app.addr()))
            .bearer_auth(API_TOKEN)
            .send()
            .await?
            .json()
            .await
    })
    .await?;
    println!();
    println!("Channels (GET /api/v1/channels):");
    for c in channels["channels"].as_array().into_iter().flatten() {
        println!(
            "  {:<12} {:<8} added {}  connected {}  lost {}",
            c["code"].as_str().unwrap_or(""),
            c["name"].as_str().unwrap_or(""),
            c["stats"]["added"],
            c["stats"]["connected"],
            c["stats"]["lost"]
        );
    }
    let events = app
        .store()
        .list_events(&Default::default(), 100)
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    println!();
    println!(
        "siyu's inbox holds {} events, each stored once:",
        events.len()
    );
    for e in events.iter().rev() {
        println!("  #{:<3} {:<50} {}", e.id, e.kind, e.status);
    }
    println!();
    if let Ok(summary) = crate::app::tiers::summary(app.services()).await {
        println!();
        println!("Tiers (GET /api/v1/tiers/summary):");
        for t in summary["tiers"].as_array().into_iter().flatten() {
            println!(
                "  {:<16} {:<8} {} customers",
                t["code"].as_str().unwrap_or(""),
                t["name"].as_str().unwrap_or(""),
                t["customers"]
            );
        }
    }
    let api_get = |path: String| {
        let request = demo
            .http
            .get(format!("http://{}/api/v1{path}", app.addr()))
            .bearer_auth(API_TOKEN);
        async move { request.send().await?.json::<Value>().await }
    };
    let tier_groups = step("list tier groups", api_get("/tier-groups".into())).await?;
    println!();
    println!("Tier groups (GET /api/v1/tier-groups, GET /api/v1/tier-groups/{{tier}}/members):");
    for tg in tier_groups["tier_groups"].as_array().into_iter().flatten() {
        let tier = tg["tier"].as_str().unwrap_or("");
        let members = step(
            "list tier group members",
            api_get(format!("/tier-groups/{tier}/members")),
        )
        .await?;
        let groups: Vec<String> = tg["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                format!(
                    "「{}」 {} members, {} customers",
                    g["name"].as_str().unwrap_or(""),
                    g["members"],
                    g["customers"]
                )
            })
            .collect();
        let counts: Vec<String> = members["counts"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(status, n)| format!("{status} {n}"))
            .collect();
        println!(
            "  {:<16} {:<8} {}   {}",
            tier,
            tg["tier_name"].as_str().unwrap_or(""),
            groups.join(", "),
            if counts.is_empty() {
                "no customers".to_string()
            } else {
                counts.join(", ")
            }
        );
    }
    println!();
    let shown = check_console(app.addr(), &console_password)
        .await
        .map_err(|reason| DemoError::Step {
            step: "sign in to the console",
            reason,
        })?;
    println!("Console (a browser on this machine):");
    println!(
        "  http://{}/console/   user {CONSOLE_USER}   password {console_password}",
        app.addr()
    );
    println!("  (checked: the sign-in works and the dashboard shows {shown} customers)");
    println!();
    println!("Look around:");
    println!(
        "  curl -H 'Authorization: Bearer {API_TOKEN}' http://{}/api/v1/channels",
        app.addr()
    );
    println!(
        "  curl -H 'Authorization: Bearer {API_TOKEN}' http://{}/api/v1/events",
        app.addr()
    );
    println!(
        "  curl -H 'Authorization: Bearer {API_TOKEN}' http://{}/api/v1/tier-groups/partner/members",
        app.addr()
    );
    println!(
        "  curl -H 'Authorization: Bearer {API_TOKEN}' http://{}/api/v1/campaigns",
        app.addr()
    );
    println!("  curl http://{}/metrics", app.addr());
    println!("  curl http://{fake_addr}/fake/calls      (every API call siyu made)");
    println!("  curl http://{fake_addr}/fake/state      (what WeCom holds)");

    if args.no_wait {
        app.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    println!();
    println!("Both keep running; Ctrl-C stops them and removes the demo database.");
    app.run_until_signal().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
