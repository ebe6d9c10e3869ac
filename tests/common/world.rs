//! A siyu wired to a fake WeCom, for the tests of what siyu does with WeCom.

use std::time::Duration;

use serde_json::json;
use siyu::App;
use siyu::config::{Secret, Settings};
use siyu::fake::{FakeConfig, FakeWecom};

use super::{TestDb, eventually, wait_idle};

pub struct World {
    pub fake: FakeWecom,
    pub app: App,
    pub db: TestDb,
    pub http: reqwest::Client,
}

pub fn fake() -> FakeWecom {
    let s = super::secrets();
    let fake = FakeWecom::new(FakeConfig {
        corp_id: s.corp_id,
        agent_id: 1_000_002,
        app_secret: "app-secret".into(),
        contact_secret: "contact-secret".into(),
        callback_url: None,
        callback_token: s.token,
        encoding_aes_key: s.encoding_aes_key,
        mass_cap: Default::default(),
    });
    fake.add_staff("zhangsan", "张三");
    fake.add_staff("lisi", "李四");
    fake
}

pub fn settings(db: &TestDb, fake_addr: std::net::SocketAddr) -> Settings {
    let mut s = db.settings();
    s.wecom.api_base = format!("http://{fake_addr}");
    s.wecom.secret = Secret::new("app-secret");
    s.wecom.contact_secret = Secret::new("contact-secret");
    s.wecom.agent_id = 1_000_002;
    s.wecom.retry_base_ms = 20;
    s.wecom.frequency_window_secs = 1;
    s.jobs.backoff_base_ms = 100;
    s.notify.batch_secs = 1;
    s.groups.invite_batch_secs = 1;
    s.groups.removal_batch_secs = 1;
    s.groups.follow_every_secs = 1;
    s.notify.operators = vec!["boss".into()];
    s
}

pub async fn world() -> World {
    world_with(|_| {}).await
}

/// A world whose settings `change` adjusts first.
pub async fn world_with(change: impl FnOnce(&mut Settings)) -> World {
    let db = TestDb::new().await;
    let fake = fake();
    let (addr, _server) = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut settings = settings(&db, addr);
    change(&mut settings);
    let app = super::start(settings).await;
    fake.set_callback_url(&format!("http://{}/wecom/callback", app.addr()));
    World {
        fake,
        app,
        db,
        http: reqwest::Client::new(),
    }
}

impl World {
    pub fn api(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.app.addr())
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.api(path))
            .bearer_auth(siyu::testkit::API_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .http
            .put(self.api(path))
            .bearer_auth(siyu::testkit::API_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(self.api(path))
            .bearer_auth(siyu::testkit::API_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn channels(&self) {
        let (status, body) = self
            .post(
                "/channels",
                json!({"code": "douyin", "name": "抖音", "staff": ["zhangsan"], "tags": ["短视频"],
                       "welcome": {"text": "{{ name }}，欢迎从抖音来！"}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = self
            .post(
                "/channels",
                json!({"code": "xiaohongshu", "name": "小红书", "staff": ["lisi"],
                       "welcome": {"text": "你好{{ name }}", "attachments": [
                           {"msgtype": "link", "link": {"title": "新人礼", "url": "https://shop.example/gift"}}]}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// The tag name for an id, from the fake's library.
    pub fn tag_names(&self, ids: &[String]) -> Vec<String> {
        let library = self.fake.tag_library();
        let mut names: Vec<String> = ids
            .iter()
            .filter_map(|id| {
                library
                    .iter()
                    .flat_map(|g| g.tag.iter())
                    .find(|t| &t.id == id)
                    .map(|t| t.name.clone())
            })
            .collect();
        names.sort();
        names
    }

    /// A customer adds through one of the channels of [`World::channels`], and siyu has tagged
    /// (channel, its extra tags, tier) and noted them at the fake.
    pub async fn add(&self, channel: &str, name: &str) -> siyu::fake::AddedCustomer {
        let added = self
            .fake
            .driver()
            .customer_adds_via_contact_way(channel, siyu::fake::NewCustomer::wechat(name))
            .await
            .unwrap();
        let tags = if channel == "douyin" { 3 } else { 2 };
        assert!(
            self.settled(&added.userid, &added.external_userid, tags)
                .await,
            "{name} was not tagged and noted"
        );
        added
    }

    /// Waits until the relation at the fake has a note and `tags` tags, and the jobs that wrote
    /// them have recorded their outcome (a call lands at the fake before its job is marked done).
    pub async fn settled(&self, userid: &str, external_userid: &str, tags: usize) -> bool {
        eventually(Duration::from_secs(10), || async {
            self.fake.customer(external_userid).is_some_and(|c| {
                c.follow_user.iter().any(|f| {
                    f.userid == userid && !f.description.is_empty() && f.tags.len() >= tags
                })
            })
        })
        .await
            && wait_idle(&self.app, Duration::from_secs(10)).await
    }

    pub fn follow(&self, userid: &str, external_userid: &str) -> siyu::fake::FollowView {
        self.fake
            .customer(external_userid)
            .unwrap()
            .follow_user
            .into_iter()
            .find(|f| f.userid == userid)
            .unwrap()
    }
}

impl World {
    /// Where the fake listens (siyu's `wecom.api_base`).
    pub fn fake_addr(&self) -> std::net::SocketAddr {
        self.app
            .services()
            .settings
            .wecom
            .api_base
            .trim_start_matches("http://")
            .parse()
            .unwrap()
    }
}
