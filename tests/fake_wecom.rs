//! The fake WeCom over raw HTTP: each documented rule answered with WeCom's errcode, fault
//! injection and the call log, and the driver delivering callbacks to the real siyu.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CORP_ID, TestDb, start};
use serde_json::{Value, json};
use siyu::fake::{DriverError, Failure, FakeConfig, FakeWecom, MassCap, NewCustomer, TagEdit};
use siyu::store::inbox::EventFilter;
use siyu::wecom::event::{self, Event};

/// The fake on a random port and a raw HTTP client for it.
struct Wecom {
    fake: FakeWecom,
    base: String,
    http: reqwest::Client,
}

impl Wecom {
    async fn start() -> Wecom {
        Wecom::start_with(FakeConfig::default()).await
    }

    async fn start_with(config: FakeConfig) -> Wecom {
        let fake = FakeWecom::new(config);
        let (addr, _server) = fake
            .serve("127.0.0.1:0".parse().unwrap())
            .await
            .expect("fake serves");
        fake.add_staff("zhangsan", "张三");
        fake.add_staff("lisi", "李四");
        Wecom {
            fake,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, api: &str, query: &str) -> Value {
        let url = format!("{}/cgi-bin/{api}?{query}", self.base);
        let r = self.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "WeCom answers API errors with HTTP 200");
        r.json().await.unwrap()
    }

    async fn token_for(&self, secret: &str) -> String {
        let v = self
            .get("gettoken", &format!("corpid={CORP_ID}&corpsecret={secret}"))
            .await;
        assert_eq!(v["errcode"], 0, "{v}");
        assert_eq!(v["expires_in"], 7200);
        v["access_token"].as_str().unwrap().to_owned()
    }

    async fn token(&self) -> String {
        self.token_for("app-secret").await
    }

    async fn post_raw(&self, api: &str, token: &str, body: impl Into<reqwest::Body>) -> Value {
        let url = format!("{}/cgi-bin/{api}?access_token={token}", self.base);
        let r = self.http.post(url).body(body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn post(&self, api: &str, token: &str, body: Value) -> Value {
        self.post_raw(api, token, body.to_string()).await
    }

    /// A multipart upload with the file part named `media`, as WeCom requires.
    async fn upload(&self, api_and_query: &str, token: &str, filename: &str, data: &[u8]) -> Value {
        let boundary = "----fakewecomboundary7MA4YWxkTrZu0gW";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let url = format!("{}/cgi-bin/{api_and_query}&access_token={token}", self.base);
        let r = self
            .http
            .post(url)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

fn code(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap_or(i64::MIN)
}

// ---- tokens -----------------------------------------------------------------------------------

#[tokio::test]
async fn gettoken_and_access_token_rules() {
    let w = Wecom::start().await;
    let wrong_secret = w
        .get("gettoken", &format!("corpid={CORP_ID}&corpsecret=nope"))
        .await;
    assert_eq!(code(&wrong_secret), 40001);
    let wrong_corp = w
        .get("gettoken", "corpid=wwother&corpsecret=app-secret")
        .await;
    assert_eq!(code(&wrong_corp), 40013);
    assert_eq!(
        code(&w.get("gettoken", "corpsecret=app-secret").await),
        41002
    );
    assert_eq!(
        code(&w.get("gettoken", &format!("corpid={CORP_ID}")).await),
        41004
    );

    // Each secret gets its own tokens.
    let app = w.token().await;
    let contact = w.token_for("contact-secret").await;
    assert_ne!(app, contact);

    let list = |token: &str| format!("access_token={token}&userid=zhangsan");
    // No token, and a token in the body instead of the query: 41001.
    assert_eq!(
        code(&w.get("externalcontact/list", "userid=zhangsan").await),
        41001
    );
    let url = format!("{}/cgi-bin/externalcontact/get_corp_tag_list", w.base);
    let in_body: Value = w
        .http
        .post(url)
        .body(json!({ "access_token": app }).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code(&in_body), 41001);
    assert_eq!(
        code(&w.get("externalcontact/list", &list("not-a-token")).await),
        40014
    );
    // Valid token, member without customers: WeCom's 84061.
    assert_eq!(
        code(&w.get("externalcontact/list", &list(&app)).await),
        84061
    );

    w.fake.expire_tokens();
    assert_eq!(
        code(&w.get("externalcontact/list", &list(&app)).await),
        42001
    );
    assert_eq!(
        code(&w.get("externalcontact/list", &list(&contact)).await),
        42001
    );
    let fresh = w.token().await;
    assert_eq!(
        code(&w.get("externalcontact/list", &list(&fresh)).await),
        84061
    );

    // Tokens live 7200 s.
    w.fake.advance_clock(Duration::from_secs(7201));
    assert_eq!(
        code(&w.get("externalcontact/list", &list(&fresh)).await),
        42001
    );

    // The customer-contact token is not an app: no app messages.
    let contact = w.token_for("contact-secret").await;
    let send = json!({"touser": "zhangsan", "msgtype": "text", "agentid": 1000002, "text": {"content": "hi"}});
    assert_eq!(code(&w.post("message/send", &contact, send).await), 48002);
}

#[tokio::test]
async fn repeated_wrong_secrets_ban_gettoken_for_an_hour() {
    let w = Wecom::start().await;
    w.fake.set_bad_secret_ban_threshold(3);
    for _ in 0..3 {
        let v = w
            .get("gettoken", &format!("corpid={CORP_ID}&corpsecret=bad"))
            .await;
        assert_eq!(code(&v), 40001);
    }
    let banned = w
        .get(
            "gettoken",
            &format!("corpid={CORP_ID}&corpsecret=app-secret"),
        )
        .await;
    assert_eq!(code(&banned), 45009);
    w.fake.advance_clock(Duration::from_secs(3601));
    w.token().await;
}

// ---- request rules ----------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_and_get_on_a_post_api_are_40058() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let broken = w
        .post_raw("externalcontact/add_contact_way", &t, "{\"type\":1,")
        .await;
    assert_eq!(code(&broken), 40058);
    let wrong_type = w
        .post(
            "externalcontact/add_contact_way",
            &t,
            json!({"type": "one", "scene": 2}),
        )
        .await;
    assert_eq!(code(&wrong_type), 40058);
    let get_on_post = w
        .get(
            "externalcontact/get_corp_tag_list",
            &format!("access_token={t}"),
        )
        .await;
    assert_eq!(code(&get_on_post), 40058);
    // The GET APIs work with GET.
    let seeded = w
        .fake
        .seed_customer("zhangsan", NewCustomer::wechat("王五"));
    let got = w
        .get(
            "externalcontact/get",
            &format!("access_token={t}&external_userid={seeded}"),
        )
        .await;
    assert_eq!(code(&got), 0, "{got}");
    assert_eq!(got["external_contact"]["name"], "王五");
    assert_eq!(got["follow_user"][0]["userid"], "zhangsan");
    let listed = w
        .get(
            "externalcontact/list",
            &format!("access_token={t}&userid=zhangsan"),
        )
        .await;
    assert_eq!(listed["external_userid"], json!([seeded]));
    // An unknown customer id is 40096.
    let unknown = w
        .get(
            "externalcontact/get",
            &format!("access_token={t}&external_userid=wmnobody"),
        )
        .await;
    assert_eq!(code(&unknown), 40096);
}

#[tokio::test]
async fn contact_way_state_is_at_most_30_characters() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let add = |state: String| json!({"type": 1, "scene": 2, "user": ["zhangsan"], "state": state});
    // 30 Chinese characters are 90 bytes and still fine: the cap counts characters.
    let ok = w
        .post("externalcontact/add_contact_way", &t, add("渠".repeat(30)))
        .await;
    assert_eq!(code(&ok), 0, "{ok}");
    assert!(ok["qr_code"].as_str().is_some(), "scene 2 has a QR code");
    let too_long = w
        .post("externalcontact/add_contact_way", &t, add("s".repeat(31)))
        .await;
    assert_eq!(code(&too_long), 40058);

    let config_id = ok["config_id"].as_str().unwrap();
    let got = w
        .post(
            "externalcontact/get_contact_way",
            &t,
            json!({"config_id": config_id}),
        )
        .await;
    assert_eq!(got["contact_way"]["state"], "渠".repeat(30));
    assert_eq!(
        got["contact_way"]["skip_verify"], true,
        "skip_verify defaults to true"
    );
    let missing = w
        .post("externalcontact/add_contact_way", &t, json!({"scene": 2}))
        .await;
    assert_eq!(code(&missing), 41037);
    let unknown = w
        .post(
            "externalcontact/get_contact_way",
            &t,
            json!({"config_id": "nope"}),
        )
        .await;
    assert_eq!(code(&unknown), 41044);
    let upd = w
        .post(
            "externalcontact/update_contact_way",
            &t,
            json!({"config_id": config_id, "state": "x".repeat(31)}),
        )
        .await;
    assert_eq!(code(&upd), 40058);
    let del = w
        .post(
            "externalcontact/del_contact_way",
            &t,
            json!({"config_id": config_id}),
        )
        .await;
    assert_eq!(code(&del), 0);
}

#[tokio::test]
async fn remark_and_description_caps_count_characters() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let id = w
        .fake
        .seed_customer("zhangsan", NewCustomer::wechat("客户甲"));
    let remark = |r: String, d: String| json!({"userid": "zhangsan", "external_userid": id, "remark": r, "description": d});
    let ok = w
        .post(
            "externalcontact/remark",
            &t,
            remark("备".repeat(20), "描".repeat(150)),
        )
        .await;
    assert_eq!(code(&ok), 0, "{ok}");
    let view = w.fake.customer(&id).unwrap();
    assert_eq!(view.follow_user[0].remark, "备".repeat(20));
    let long_remark = w
        .post(
            "externalcontact/remark",
            &t,
            remark("备".repeat(21), String::new()),
        )
        .await;
    assert_eq!(code(&long_remark), 40058);
    let long_desc = w
        .post(
            "externalcontact/remark",
            &t,
            remark(String::new(), "描".repeat(151)),
        )
        .await;
    assert_eq!(code(&long_desc), 40058);
    let not_followed = w
        .post(
            "externalcontact/remark",
            &t,
            json!({"userid": "lisi", "external_userid": id, "remark": "x"}),
        )
        .await;
    assert_eq!(code(&not_followed), 84061);
}

#[tokio::test]
async fn corp_tags_duplicate_names_bad_ids_and_mark_tag_relationship() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let added = w
        .post(
            "externalcontact/add_corp_tag",
            &t,
            json!({"group_name": "会员等级", "tag": [{"name": "金卡"}, {"name": "银卡"}, {"name": "金卡"}]}),
        )
        .await;
    assert_eq!(code(&added), 0, "{added}");
    let group_id = added["tag_group"]["group_id"].as_str().unwrap().to_owned();
    let tags = added["tag_group"]["tag"].as_array().unwrap();
    assert_eq!(
        tags.len(),
        2,
        "duplicates inside one request are created once"
    );
    let gold = tags[0]["id"].as_str().unwrap().to_owned();
    let silver = tags[1]["id"].as_str().unwrap().to_owned();

    // The same name again in that group: 40071, by group_id and by group_name.
    let dup = w
        .post(
            "externalcontact/add_corp_tag",
            &t,
            json!({"group_id": group_id, "tag": [{"name": "金卡"}]}),
        )
        .await;
    assert_eq!(code(&dup), 40071);
    let dup_by_name = w
        .post(
            "externalcontact/add_corp_tag",
            &t,
            json!({"group_name": "会员等级", "tag": [{"name": "银卡"}]}),
        )
        .await;
    assert_eq!(code(&dup_by_name), 40071);
    let rename_clash = w
        .post(
            "externalcontact/edit_corp_tag",
            &t,
            json!({"id": silver, "name": "金卡"}),
        )
        .await;
    assert_eq!(code(&rename_clash), 40071);
    let bad_group = w
        .post(
            "externalcontact/add_corp_tag",
            &t,
            json!({"group_id": "etnope", "tag": [{"name": "x"}]}),
        )
        .await;
    assert_eq!(code(&bad_group), 40068);

    let id = w
        .fake
        .seed_customer("zhangsan", NewCustomer::wechat("客户乙"));
    let mark = |userid: &str, add: Vec<&str>| json!({"userid": userid, "external_userid": id, "add_tag": add});
    let ok = w
        .post(
            "externalcontact/mark_tag",
            &t,
            mark("zhangsan", vec![&gold]),
        )
        .await;
    assert_eq!(code(&ok), 0, "{ok}");
    assert_eq!(
        w.fake.customer(&id).unwrap().follow_user[0].tags,
        vec![gold.clone()]
    );
    // lisi does not follow this customer.
    let no_relation = w
        .post("externalcontact/mark_tag", &t, mark("lisi", vec![&gold]))
        .await;
    assert_eq!(code(&no_relation), 84061);
    let bad_tag = w
        .post(
            "externalcontact/mark_tag",
            &t,
            mark("zhangsan", vec!["etnope"]),
        )
        .await;
    assert_eq!(code(&bad_tag), 40068);

    // externalcontact/get shows the tag with its group and name.
    let got = w
        .get(
            "externalcontact/get",
            &format!("access_token={t}&external_userid={id}"),
        )
        .await;
    assert_eq!(
        got["follow_user"][0]["tags"][0],
        json!({"group_name": "会员等级", "tag_name": "金卡", "type": 1, "tag_id": gold})
    );

    // Deleting a tag takes it off customers; querying it by id shows it deleted.
    let del = w
        .post(
            "externalcontact/del_corp_tag",
            &t,
            json!({"tag_id": [gold]}),
        )
        .await;
    assert_eq!(code(&del), 0);
    assert!(w.fake.customer(&id).unwrap().follow_user[0].tags.is_empty());
    let by_id = w
        .post(
            "externalcontact/get_corp_tag_list",
            &t,
            json!({"tag_id": [gold]}),
        )
        .await;
    assert_eq!(by_id["tag_group"][0]["tag"][0]["deleted"], true);
    let all = w
        .post("externalcontact/get_corp_tag_list", &t, json!({}))
        .await;
    assert_eq!(all["tag_group"][0]["tag"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn corp_tag_library_holds_at_most_3000_tags() {
    let w = Wecom::start().await;
    let t = w.token().await;
    for g in 0..3 {
        let tags: Vec<Value> = (0..1000)
            .map(|i| json!({"name": format!("t{i}")}))
            .collect();
        let v = w
            .post(
                "externalcontact/add_corp_tag",
                &t,
                json!({"group_name": format!("g{g}"), "tag": tags}),
            )
            .await;
        assert_eq!(code(&v), 0);
    }
    let over = w
        .post(
            "externalcontact/add_corp_tag",
            &t,
            json!({"group_name": "g3", "tag": [{"name": "one too many"}]}),
        )
        .await;
    assert_eq!(code(&over), 40126);
}

#[tokio::test]
async fn join_way_links_at_most_5_groups() {
    let w = Wecom::start().await;
    let t = w.token().await;
    for i in 0..6 {
        w.fake
            .add_group_chat(&format!("wrchat{i}"), "zhangsan", &format!("群{i}"), 200);
    }
    let chats: Vec<String> = (0..6).map(|i| format!("wrchat{i}")).collect();
    let six = w
        .post(
            "externalcontact/groupchat/add_join_way",
            &t,
            json!({"scene": 2, "chat_id_list": chats}),
        )
        .await;
    assert_eq!(code(&six), 41091);
    let five = w
        .post(
            "externalcontact/groupchat/add_join_way",
            &t,
            json!({"scene": 2, "chat_id_list": &chats[..5], "state": "tier_gold", "remark": "r".repeat(40)}),
        )
        .await;
    assert_eq!(code(&five), 0, "{five}");
    let got = w
        .post(
            "externalcontact/groupchat/get_join_way",
            &t,
            json!({"config_id": five["config_id"]}),
        )
        .await;
    assert_eq!(got["join_way"]["auto_create_room"], 1, "defaults to 1");
    assert_eq!(
        got["join_way"]["remark"],
        "r".repeat(30),
        "remark is cut at 30"
    );
    let long_state = w
        .post(
            "externalcontact/groupchat/add_join_way",
            &t,
            json!({"scene": 2, "chat_id_list": ["wrchat0"], "state": "s".repeat(31)}),
        )
        .await;
    assert_eq!(code(&long_state), 40058);

    let listed = w
        .post("externalcontact/groupchat/list", &t, json!({"limit": 4}))
        .await;
    assert_eq!(listed["group_chat_list"].as_array().unwrap().len(), 4);
    assert_eq!(listed["next_cursor"], "4");
    let chat = w
        .post(
            "externalcontact/groupchat/get",
            &t,
            json!({"chat_id": "wrchat0"}),
        )
        .await;
    assert_eq!(chat["group_chat"]["owner"], "zhangsan");
    assert_eq!(chat["group_chat"]["member_list"][0]["type"], 1);
    let no_limit = w
        .post("externalcontact/groupchat/list", &t, json!({}))
        .await;
    assert_eq!(code(&no_limit), 40058);
}

#[tokio::test]
async fn a_mass_message_takes_at_most_10000_recipients() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let ids: Vec<String> = (0..10_001).map(|i| format!("wm{i:030}")).collect();
    let over = w
        .post(
            "externalcontact/add_msg_template",
            &t,
            json!({"external_userid": ids, "text": {"content": "hi"}}),
        )
        .await;
    assert_eq!(code(&over), 40058);
    // Nobody sendable: 41048.
    let nobody = w
        .post(
            "externalcontact/add_msg_template",
            &t,
            json!({"external_userid": &ids[..3], "text": {"content": "hi"}}),
        )
        .await;
    assert_eq!(code(&nobody), 41048);
}

#[tokio::test]
async fn mass_message_lifecycle_dispatch_confirm_remind_cancel() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let a = w.fake.seed_customer("zhangsan", NewCustomer::wechat("甲"));
    let b = w.fake.seed_customer("lisi", NewCustomer::wechat("乙"));
    w.fake.set_dispatch_delay(Duration::from_millis(300));
    let created = w
        .post(
            "externalcontact/add_msg_template",
            &t,
            json!({"external_userid": [a, b, "wmunknown"], "text": {"content": "双十一"}}),
        )
        .await;
    assert_eq!(code(&created), 0, "{created}");
    assert_eq!(created["fail_list"], json!(["wmunknown"]));
    let msgid = created["msgid"].as_str().unwrap().to_owned();
    let task = || {
        w.post(
            "externalcontact/get_groupmsg_task",
            &t,
            json!({"msgid": msgid}),
        )
    };
    assert_eq!(code(&task().await), 41063, "still dispatching");
    // Dispatching ends after the delay set above: wait for it rather than sleep past it.
    let dispatched = common::eventually(Duration::from_secs(5), || async {
        code(&task().await) != 41063
    })
    .await;
    assert!(dispatched, "still dispatching after 5 s");
    let tasks = task().await;
    assert_eq!(code(&tasks), 0, "{tasks}");
    assert_eq!(
        tasks["task_list"],
        json!([{"userid": "lisi", "status": 0}, {"userid": "zhangsan", "status": 0}])
    );
    let result = w
        .post(
            "externalcontact/get_groupmsg_send_result",
            &t,
            json!({"msgid": msgid, "userid": "zhangsan"}),
        )
        .await;
    assert_eq!(
        result["send_list"],
        json!([{"external_userid": a, "userid": "zhangsan", "status": 0}])
    );

    w.fake
        .driver()
        .staff_confirms_mass_message(&msgid, "zhangsan")
        .await
        .unwrap();
    let result = w
        .post(
            "externalcontact/get_groupmsg_send_result",
            &t,
            json!({"msgid": msgid, "userid": "zhangsan"}),
        )
        .await;
    assert_eq!(result["send_list"][0]["status"], 1);
    assert!(result["send_list"][0]["send_time"].is_i64());
    let list = w
        .post(
            "externalcontact/get_groupmsg_list_v2",
            &t,
            json!({"chat_type": "single", "start_time": 0, "end_time": 2_000_000_000i64}),
        )
        .await;
    assert_eq!(code(&list), 40058, "the range spans at most one month");
    let now = siyu::clock::system_now_ms() / 1000;
    let list = w
        .post(
            "externalcontact/get_groupmsg_list_v2",
            &t,
            json!({"chat_type": "single", "start_time": now - 60, "end_time": now + 60}),
        )
        .await;
    assert_eq!(list["group_msg_list"][0]["msgid"], msgid);
    assert_eq!(list["group_msg_list"][0]["create_type"], 0);

    let remind = || {
        w.post(
            "externalcontact/remind_groupmsg_send",
            &t,
            json!({"msgid": msgid}),
        )
    };
    for _ in 0..3 {
        assert_eq!(code(&remind().await), 0);
    }
    assert_eq!(code(&remind().await), 41094, "three reminders per 24 h");
    let cancel = || {
        w.post(
            "externalcontact/cancel_groupmsg_send",
            &t,
            json!({"msgid": msgid}),
        )
    };
    assert_eq!(code(&cancel().await), 0);
    assert_eq!(code(&cancel().await), 41093);
    w.fake.advance_clock(Duration::from_secs(86_401));
    // A day later the old token has expired too (7200 s).
    let t = w.token().await;
    let remind = || {
        w.post(
            "externalcontact/remind_groupmsg_send",
            &t,
            json!({"msgid": msgid}),
        )
    };
    assert_eq!(
        code(&remind().await),
        41093,
        "a cancelled message cannot be reminded"
    );
    let refused = w
        .fake
        .driver()
        .staff_confirms_mass_message(&msgid, "lisi")
        .await;
    assert!(
        matches!(refused, Err(DriverError::Refused(_))),
        "{refused:?}"
    );
    let unknown = w
        .post(
            "externalcontact/get_groupmsg_task",
            &t,
            json!({"msgid": "msgnope"}),
        )
        .await;
    assert_eq!(code(&unknown), 41047);
}

#[tokio::test]
async fn the_per_customer_cap_marks_the_second_message_of_the_day_status_3() {
    let w = Wecom::start_with(FakeConfig {
        mass_cap: MassCap::PerDay,
        ..FakeConfig::default()
    })
    .await;
    let t = w.token().await;
    let customer = w.fake.seed_customer("zhangsan", NewCustomer::wechat("丙"));
    let send = |text: &str| {
        w.post(
            "externalcontact/add_msg_template",
            &t,
            json!({"external_userid": [customer], "sender": "zhangsan", "text": {"content": text}}),
        )
    };
    let msgid_of = |v: Value| {
        assert_eq!(code(&v), 0, "{v}");
        v["msgid"].as_str().unwrap().to_owned()
    };
    let first = msgid_of(send("one").await);
    let second = msgid_of(send("two").await);
    let driver = w.fake.driver();
    driver
        .staff_confirms_mass_message(&first, "zhangsan")
        .await
        .unwrap();
    driver
        .staff_confirms_mass_message(&second, "zhangsan")
        .await
        .unwrap();
    let status = |msgid: String| {
        let w = &w;
        let t = &t;
        async move {
            let v = w
                .post(
                    "externalcontact/get_groupmsg_send_result",
                    t,
                    json!({"msgid": msgid, "userid": "zhangsan"}),
                )
                .await;
            assert_eq!(code(&v), 0, "{v}");
            v["send_list"][0]["status"].as_i64().unwrap()
        }
    };
    assert_eq!(status(first).await, 1);
    assert_eq!(status(second.clone()).await, 3, "over the receipt cap");
    let task = w
        .post(
            "externalcontact/get_groupmsg_task",
            &t,
            json!({"msgid": second}),
        )
        .await;
    assert_eq!(task["task_list"][0]["status"], 2, "the member did send");

    // The next natural day the customer can receive one again.
    w.fake.advance_clock(Duration::from_secs(86_400));
    let t = w.token().await;
    let third = w
        .post(
            "externalcontact/add_msg_template",
            &t,
            json!({"external_userid": [customer], "sender": "zhangsan", "text": {"content": "three"}}),
        )
        .await;
    let third = third["msgid"].as_str().unwrap();
    driver
        .staff_confirms_mass_message(third, "zhangsan")
        .await
        .unwrap();
    let statuses: Vec<i64> = w
        .fake
        .mass_messages()
        .iter()
        .map(|m| m.results[0].status)
        .collect();
    assert_eq!(statuses, vec![1, 3, 1]);
}

#[tokio::test]
async fn the_default_monthly_cap_allows_several_messages_a_day() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let customer = w.fake.seed_customer("zhangsan", NewCustomer::wechat("丁"));
    for text in ["one", "two"] {
        let v = w
            .post(
                "externalcontact/add_msg_template",
                &t,
                json!({"external_userid": [customer], "text": {"content": text}}),
            )
            .await;
        assert_eq!(code(&v), 0, "{v}");
        let msgid = v["msgid"].as_str().unwrap();
        w.fake
            .driver()
            .staff_confirms_mass_message(msgid, "zhangsan")
            .await
            .unwrap();
    }
    let statuses: Vec<i64> = w
        .fake
        .mass_messages()
        .iter()
        .map(|m| m.results[0].status)
        .collect();
    assert_eq!(statuses, vec![1, 1]);
}

// ---- moments and media ------------------------------------------------------------------------

#[tokio::test]
async fn the_eleventh_moment_task_in_a_minute_is_45009() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let task = json!({"text": {"content": "新品上市"}});
    for _ in 0..10 {
        assert_eq!(
            code(
                &w.post("externalcontact/add_moment_task", &t, task.clone())
                    .await
            ),
            0
        );
    }
    let eleventh = w
        .post("externalcontact/add_moment_task", &t, task.clone())
        .await;
    assert_eq!(code(&eleventh), 45009);
    w.fake.advance_clock(Duration::from_secs(61));
    assert_eq!(
        code(&w.post("externalcontact/add_moment_task", &t, task).await),
        0
    );
}

#[tokio::test]
async fn moment_job_reports_started_then_done_and_members_publish() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let media = w
        .upload(
            "media/upload_attachment?media_type=image&attachment_type=1",
            &t,
            "m.jpg",
            b"jpeg jpeg jpeg",
        )
        .await;
    assert_eq!(code(&media), 0, "{media}");
    assert!(
        media["created_at"].is_i64(),
        "upload_attachment's created_at is a number"
    );
    let job = w
        .post(
            "externalcontact/add_moment_task",
            &t,
            json!({
                "text": {"content": "新品"},
                "attachments": [{"msgtype": "image", "image": {"media_id": media["media_id"]}}],
                "visible_range": {"sender_list": {"user_list": ["zhangsan", "ghost"]}},
            }),
        )
        .await;
    let jobid = job["jobid"].as_str().unwrap().to_owned();
    let poll_query = format!("access_token={t}&jobid={jobid}");
    let poll = || w.get("externalcontact/get_moment_task_result", &poll_query);
    let first = poll().await;
    assert_eq!(first["status"], 1);
    let done = poll().await;
    assert_eq!(done["status"], 3);
    assert_eq!(done["type"], "add_moment_task");
    assert_eq!(
        done["result"]["invalid_sender_list"]["user_list"],
        json!(["ghost"])
    );
    let moment_id = done["result"]["moment_id"].as_str().unwrap().to_owned();

    let driver = w.fake.driver();
    driver
        .staff_publishes_moment(&moment_id, "zhangsan")
        .await
        .unwrap();
    let tasks = w
        .post(
            "externalcontact/get_moment_task",
            &t,
            json!({"moment_id": moment_id}),
        )
        .await;
    assert_eq!(
        tasks["task_list"],
        json!([{"userid": "zhangsan", "publish_status": 1}])
    );
    assert_eq!(
        code(
            &w.post(
                "externalcontact/cancel_moment_task",
                &t,
                json!({"moment_id": moment_id})
            )
            .await
        ),
        0
    );
    let unknown = w
        .get(
            "externalcontact/get_moment_task_result",
            &format!("access_token={t}&jobid=nope"),
        )
        .await;
    assert_eq!(code(&unknown), 40088);
    assert_eq!(
        code(
            &w.post("externalcontact/add_moment_task", &t, json!({}))
                .await
        ),
        41089,
        "text and attachments both empty"
    );
}

#[tokio::test]
async fn media_ids_belong_to_their_upload_api_and_expire_after_3_days() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let upload = w
        .upload("media/upload?type=image", &t, "a.png", b"png png png")
        .await;
    assert_eq!(code(&upload), 0, "{upload}");
    assert!(
        upload["created_at"].is_string(),
        "media/upload's created_at is a string"
    );
    let upload_id = upload["media_id"].as_str().unwrap().to_owned();
    let attachment = w
        .upload(
            "media/upload_attachment?media_type=image&attachment_type=1",
            &t,
            "b.png",
            b"png png png",
        )
        .await;
    let attachment_id = attachment["media_id"].as_str().unwrap().to_owned();

    // A media/upload id in a moment, an upload_attachment id in a mass message: 40007.
    let moment = w
        .post(
            "externalcontact/add_moment_task",
            &t,
            json!({"attachments": [{"msgtype": "image", "image": {"media_id": upload_id}}]}),
        )
        .await;
    assert_eq!(code(&moment), 40007);
    let customer = w.fake.seed_customer("zhangsan", NewCustomer::wechat("戊"));
    let mass = |media_id: &str| json!({"external_userid": [customer], "attachments": [{"msgtype": "image", "image": {"media_id": media_id}}]});
    let wrong = w
        .post("externalcontact/add_msg_template", &t, mass(&attachment_id))
        .await;
    assert_eq!(code(&wrong), 40007);
    let right = w
        .post("externalcontact/add_msg_template", &t, mass(&upload_id))
        .await;
    assert_eq!(code(&right), 0, "{right}");

    w.fake.advance_clock(Duration::from_secs(3 * 86_400 + 1));
    let t = w.token().await;
    let mass = |media_id: &str| json!({"external_userid": [customer], "attachments": [{"msgtype": "image", "image": {"media_id": media_id}}]});
    let expired = w
        .post("externalcontact/add_msg_template", &t, mass(&upload_id))
        .await;
    assert_eq!(code(&expired), 40007);

    let tiny = w
        .upload("media/upload?type=image", &t, "t.png", b"12345")
        .await;
    assert_eq!(code(&tiny), 40006, "files must be larger than 5 bytes");
    let bad_type = w
        .upload("media/upload?type=pdf", &t, "t.pdf", b"123456")
        .await;
    assert_eq!(code(&bad_type), 40005);
    let file_moment = w
        .upload(
            "media/upload_attachment?media_type=file&attachment_type=1",
            &t,
            "f.txt",
            b"123456",
        )
        .await;
    assert_eq!(code(&file_moment), 41072);
}

#[tokio::test]
async fn app_messages_are_recorded_with_invalid_users_reported() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let send = json!({"touser": "zhangsan|Ghost", "msgtype": "text", "agentid": 1000002, "text": {"content": "请移出群成员"}});
    let v = w.post("message/send", &t, send.clone()).await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(v["invaliduser"], "ghost", "lower-cased");
    assert_eq!(w.fake.app_messages(), vec![send]);
    let all_invalid =
        json!({"touser": "ghost", "msgtype": "text", "agentid": 1000002, "text": {"content": "x"}});
    assert_eq!(code(&w.post("message/send", &t, all_invalid).await), 81013);
    let other_app =
        json!({"touser": "zhangsan", "msgtype": "text", "agentid": 7, "text": {"content": "x"}});
    assert_eq!(code(&w.post("message/send", &t, other_app).await), 301002);
    let long = json!({"touser": "zhangsan", "msgtype": "text", "agentid": 1000002, "text": {"content": "长".repeat(683)}});
    assert_eq!(
        code(&w.post("message/send", &t, long).await),
        45002,
        "2048 bytes at most"
    );

    // One member gets at most 30 a minute; the excess is dropped without an error.
    for n in 0..31 {
        let v = w
            .post(
                "message/send",
                &t,
                json!({"touser": "lisi", "msgtype": "text", "agentid": 1000002, "text": {"content": format!("n{n}")}}),
            )
            .await;
        assert_eq!(code(&v), 0);
    }
    let to_lisi = w
        .fake
        .app_messages()
        .iter()
        .filter(|m| m["touser"] == "lisi")
        .count();
    assert_eq!(to_lisi, 30);
    // With duplicate check on, the same JSON again is accepted and not delivered twice.
    let dup = json!({"touser": "zhangsan", "msgtype": "text", "agentid": 1000002, "text": {"content": "once"}, "enable_duplicate_check": 1});
    assert_eq!(code(&w.post("message/send", &t, dup.clone()).await), 0);
    assert_eq!(code(&w.post("message/send", &t, dup.clone()).await), 0);
    assert_eq!(
        w.fake.app_messages().iter().filter(|m| **m == dup).count(),
        1
    );
}

// ---- faults and the call log ------------------------------------------------------------------

#[tokio::test]
async fn injected_faults_and_the_call_log() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let path = "/cgi-bin/externalcontact/get_corp_tag_list";
    let list = || w.post("externalcontact/get_corp_tag_list", &t, json!({}));

    w.fake.fail_next(path, 2, Failure::Errcode(-1));
    assert_eq!(code(&list().await), -1);
    assert_eq!(code(&list().await), -1);
    assert_eq!(code(&list().await), 0, "only the next 2 calls fail");

    w.fake.fail_next(path, 1, Failure::Http(500));
    let url = format!("{}{path}?access_token={t}", w.base);
    let r = w.http.post(&url).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 500);

    w.fake.set_error_rate(path, 1.0, Failure::Errcode(45033));
    assert_eq!(code(&list().await), 45033);
    w.fake.clear_faults();
    assert_eq!(code(&list().await), 0);

    w.fake.set_latency(path, Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(code(&list().await), 0);
    assert!(started.elapsed() >= Duration::from_millis(300));
    w.fake.clear_faults();

    let calls = w.fake.calls_to(path);
    let errcodes: Vec<Option<i64>> = calls.iter().map(|c| c.errcode).collect();
    assert_eq!(
        errcodes,
        vec![
            Some(-1),
            Some(-1),
            Some(0),
            None,
            Some(45033),
            Some(0),
            Some(0)
        ]
    );
    assert_eq!(calls[3].http_status, 500);
    assert!(calls.iter().all(|c| c.query == "access_token=REDACTED"));
    assert!(calls.iter().all(|c| c.method == "POST" && c.body == "{}"));
    let all = w.fake.calls();
    assert!(
        all.iter().all(|c| !c.query.contains(&t)),
        "the token never appears"
    );
    assert_eq!(all[0].path, "/cgi-bin/gettoken");
    assert_eq!(
        all[0].query,
        format!("corpid={CORP_ID}&corpsecret=REDACTED")
    );
}

#[tokio::test]
async fn a_timeout_still_makes_the_change() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let tag = w
        .post(
            "externalcontact/add_corp_tag",
            &t,
            json!({"group_name": "渠道", "tag": [{"name": "抖音"}]}),
        )
        .await;
    assert_eq!(code(&tag), 0, "{tag}");
    let tag_id = tag["tag_group"]["tag"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let customer = w.fake.seed_customer("zhangsan", NewCustomer::wechat("己"));
    w.fake.set_timeout_hold(Duration::from_secs(2));
    w.fake
        .fail_next("externalcontact/mark_tag", 1, Failure::Timeout);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = format!(
        "{}/cgi-bin/externalcontact/mark_tag?access_token={t}",
        w.base
    );
    let body = json!({"userid": "zhangsan", "external_userid": customer, "add_tag": [tag_id]});
    let outcome = client.post(&url).body(body.to_string()).send().await;
    assert!(
        outcome.is_err_and(|e| e.is_timeout()),
        "the caller times out"
    );
    assert_eq!(
        w.fake.customer(&customer).unwrap().follow_user[0].tags,
        vec![tag_id],
        "yet the tag was put on"
    );
}

#[tokio::test]
async fn admin_endpoints_over_http() {
    let w = Wecom::start().await;
    let admin = |path: &str| format!("{}/fake/{path}", w.base);
    let r = w
        .http
        .post(admin("faults"))
        .json(&json!({"path": "/cgi-bin/gettoken", "times": 1, "errcode": 45009}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let limited = w
        .get(
            "gettoken",
            &format!("corpid={CORP_ID}&corpsecret=app-secret"),
        )
        .await;
    assert_eq!(code(&limited), 45009);
    let t = w.token().await;

    w.http
        .post(admin("faults"))
        .json(&json!({"path": "externalcontact/get_corp_tag_list", "http_status": 503}))
        .send()
        .await
        .unwrap();
    w.http.delete(admin("faults")).send().await.unwrap();
    assert_eq!(
        code(
            &w.post("externalcontact/get_corp_tag_list", &t, json!({}))
                .await
        ),
        0
    );

    w.http.post(admin("expire-tokens")).send().await.unwrap();
    assert_eq!(
        code(
            &w.post("externalcontact/get_corp_tag_list", &t, json!({}))
                .await
        ),
        42001
    );

    let r = w
        .http
        .post(admin("staff"))
        .json(&json!({"userid": "wangwu", "name": "王五"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = w
        .http
        .post(admin("callback-url"))
        .json(&json!({"url": "http://127.0.0.1:1/wecom/callback"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let state: Value = w
        .http
        .get(admin("state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        state["staff"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["userid"] == "wangwu")
    );
    assert_eq!(state["callback_url"], "http://127.0.0.1:1/wecom/callback");
    let calls: Value = w
        .http
        .get(admin("calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(calls.as_array().unwrap().len() >= 4);
    let bad = w
        .http
        .post(admin("faults"))
        .json(&json!({"path": "x", "errcode": 1, "timeout": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

// ---- callbacks: a sink that decrypts what the driver sends ------------------------------------

/// Decrypted callbacks, in arrival order.
type Sink = Arc<Mutex<Vec<String>>>;

/// A bare callback endpoint that decrypts and keeps every callback, answering 200.
async fn callback_sink(w: &Wecom) -> Sink {
    use axum::extract::{Query, State};
    use std::collections::HashMap;
    let got: Sink = Arc::default();
    let crypto = common::crypto();
    async fn receive(
        State((crypto, got)): State<(Arc<siyu::wecom::crypto::Crypto>, Sink)>,
        Query(q): Query<HashMap<String, String>>,
        body: String,
    ) -> axum::http::StatusCode {
        let envelope = siyu::wecom::crypto::parse_envelope(&body).unwrap();
        crypto
            .verify_signature(
                &q["msg_signature"],
                &q["timestamp"],
                &q["nonce"],
                &envelope.encrypt,
            )
            .unwrap();
        let xml = crypto.decrypt_checked(&envelope.encrypt).unwrap();
        got.lock().unwrap().push(xml);
        axum::http::StatusCode::OK
    }
    let router = axum::Router::new()
        .route("/wecom/callback", axum::routing::post(receive))
        .with_state((crypto, got.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    w.fake
        .set_callback_url(&format!("http://{addr}/wecom/callback"));
    got
}

#[tokio::test]
async fn welcome_codes_are_single_use_and_live_20_seconds() {
    let w = Wecom::start().await;
    let sink = callback_sink(&w).await;
    let t = w.token().await;
    let driver = w.fake.driver();
    let added = driver
        .customer_adds_staff("zhangsan", Some("spring_expo"), NewCustomer::wechat("庚"))
        .await
        .unwrap();
    let code_ = added.welcome_code.clone().unwrap();
    let welcome = |code: &str| json!({"welcome_code": code, "text": {"content": "欢迎"}});
    let first = w
        .post("externalcontact/send_welcome_msg", &t, welcome(&code_))
        .await;
    assert_eq!(code(&first), 0, "{first}");
    let again = w
        .post("externalcontact/send_welcome_msg", &t, welcome(&code_))
        .await;
    assert_eq!(code(&again), 41051);
    let sent = w.fake.welcome_messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].external_userid, added.external_userid);
    assert_eq!(sent[0].userid, "zhangsan");
    assert_eq!(sent[0].text.as_deref(), Some("欢迎"));

    // Past its lifetime (20 s, on the fake's clock) the code is 41050.
    let late = driver
        .customer_adds_staff("lisi", None, NewCustomer::wechat("辛"))
        .await
        .unwrap();
    w.fake.advance_clock(Duration::from_secs(21));
    let expired = w
        .post(
            "externalcontact/send_welcome_msg",
            &t,
            welcome(late.welcome_code.as_deref().unwrap()),
        )
        .await;
    assert_eq!(code(&expired), 41050);
    let missing = w
        .post(
            "externalcontact/send_welcome_msg",
            &t,
            json!({"text": {"content": "x"}}),
        )
        .await;
    assert_eq!(code(&missing), 41049);

    // The callback carried State and WelcomeCode, shaped as callback.md §3.1.
    let xmls = sink.lock().unwrap().clone();
    assert_eq!(xmls.len(), 2);
    assert!(xmls[0].starts_with(&format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>"
    )));
    assert!(xmls[0].ends_with(&format!(
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event>\
         <ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID>\
         <ExternalUserID><![CDATA[{}]]></ExternalUserID><State><![CDATA[spring_expo]]></State>\
         <WelcomeCode><![CDATA[{code_}]]></WelcomeCode></xml>",
        added.external_userid
    )));
    let Event::ExternalContact {
        state,
        welcome_code,
        ..
    } = event::parse(&xmls[1]).unwrap()
    else {
        panic!("not a contact event: {}", xmls[1]);
    };
    assert_eq!(state, None, "no state without a channel");
    assert_eq!(welcome_code, late.welcome_code);
}

#[tokio::test]
async fn api_writes_never_trigger_callbacks() {
    let w = Wecom::start().await;
    let sink = callback_sink(&w).await;
    let t = w.token().await;
    let customer = w.fake.seed_customer("zhangsan", NewCustomer::wechat("壬"));
    let tag = w
        .post(
            "externalcontact/add_corp_tag",
            &t,
            json!({"group_name": "g", "tag": [{"name": "a"}]}),
        )
        .await;
    assert_eq!(code(&tag), 0, "{tag}");
    let tag_id = tag["tag_group"]["tag"][0]["id"].clone();
    let answer = w
        .post(
            "externalcontact/edit_corp_tag",
            &t,
            json!({"id": tag_id, "name": "b"}),
        )
        .await;
    assert_eq!(code(&answer), 0, "{answer}");
    let answer = w
        .post(
            "externalcontact/mark_tag",
            &t,
            json!({"userid": "zhangsan", "external_userid": customer, "add_tag": [tag_id]}),
        )
        .await;
    assert_eq!(code(&answer), 0, "{answer}");
    let answer = w
        .post(
            "externalcontact/remark",
            &t,
            json!({"userid": "zhangsan", "external_userid": customer, "remark": "VIP"}),
        )
        .await;
    assert_eq!(code(&answer), 0, "{answer}");
    let answer = w
        .post(
            "externalcontact/del_corp_tag",
            &t,
            json!({"tag_id": [tag_id]}),
        )
        .await;
    assert_eq!(code(&answer), 0, "{answer}");
    // A barrier: one callback the driver delivers (and awaits) after the writes. Had a write
    // posted a callback, it would be in the sink too.
    w.fake
        .driver()
        .staff_sends_text("zhangsan", "barrier")
        .await
        .unwrap();
    let got = sink.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("barrier"), "{got:?}");
}

#[tokio::test]
async fn the_driver_reports_a_callback_nobody_accepted() {
    let w = Wecom::start().await;
    let driver = w.fake.driver();
    let none = driver
        .customer_adds_staff("zhangsan", None, NewCustomer::wechat("癸"))
        .await;
    assert!(matches!(none, Err(DriverError::NoCallbackUrl)), "{none:?}");
    // A closed port: three refused tries.
    w.fake.set_callback_url("http://127.0.0.1:1/wecom/callback");
    let refused = driver
        .customer_adds_staff("zhangsan", None, NewCustomer::wechat("癸"))
        .await;
    assert!(
        matches!(refused, Err(DriverError::NotDelivered(_))),
        "{refused:?}"
    );
    // The add happened in WeCom all the same.
    assert_eq!(w.fake.customers().len(), 2);
}

// ---- the driver against the real siyu ---------------------------------------------------------

async fn kinds(app: &siyu::App) -> Vec<String> {
    let mut events = app
        .store()
        .list_events(&EventFilter::default(), 1000)
        .await
        .unwrap();
    events.sort_by_key(|e| e.id);
    events.into_iter().map(|e| e.kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_callbacks_land_in_siyus_inbox_and_change_the_fakes_state() {
    let db = TestDb::new().await;
    let app = start(db.settings()).await;
    let w = Wecom::start().await;
    w.fake
        .set_callback_url(&format!("http://{}/wecom/callback", app.addr()));
    let t = w.token().await;
    let driver = w.fake.driver();

    // A customer scans a channel QR code.
    let way = w
        .post(
            "externalcontact/add_contact_way",
            &t,
            json!({"type": 2, "scene": 2, "user": ["zhangsan", "lisi"], "state": "douyin"}),
        )
        .await;
    let config_id = way["config_id"].as_str().unwrap().to_owned();
    let first = driver
        .customer_adds_via_contact_way(&config_id, NewCustomer::wechat("小红"))
        .await
        .unwrap();
    let second = driver
        .customer_adds_via_contact_way("douyin", NewCustomer::wechat("小明"))
        .await
        .unwrap();
    assert_eq!(first.userid, "zhangsan");
    assert_eq!(second.userid, "lisi", "the way's members take turns");
    let customer = first.external_userid.clone();
    let follow = &w.fake.customer(&customer).unwrap().follow_user[0];
    assert_eq!(
        (follow.add_way, follow.state.as_deref()),
        (1, Some("douyin"))
    );
    let got = w
        .get(
            "externalcontact/get",
            &format!("access_token={t}&external_userid={customer}"),
        )
        .await;
    assert_eq!(got["follow_user"][0]["state"], "douyin");
    assert_eq!(got["follow_user"][0]["oper_userid"], customer.as_str());

    // The member edits the customer; the customer deletes the member; the member deletes them.
    driver
        .staff_edits_customer("zhangsan", &customer, Some("老客户"), &[])
        .await
        .unwrap();
    assert_eq!(
        w.fake.customer(&customer).unwrap().follow_user[0].remark,
        "老客户"
    );
    driver
        .customer_deletes_staff("zhangsan", &customer)
        .await
        .unwrap();
    assert!(w.fake.customer(&customer).unwrap().follow_user[0].lost);
    let other = second.external_userid.clone();
    driver
        .staff_deletes_customer("lisi", &other, true)
        .await
        .unwrap();
    assert!(w.fake.customer(&other).unwrap().follow_user[0].deleted);
    let gone = w
        .post(
            "externalcontact/mark_tag",
            &t,
            json!({"userid": "lisi", "external_userid": other, "add_tag": ["x"]}),
        )
        .await;
    assert_eq!(code(&gone), 84061, "the member deleted the customer");
    driver
        .transfer_fails("lisi", &customer, "customer_refused")
        .await
        .unwrap();

    // Customers join a tier group; the full one overflows into an auto-created room.
    w.fake.add_group_chat("wrgold1", "zhangsan", "金卡群", 2);
    let join = w
        .post(
            "externalcontact/groupchat/add_join_way",
            &t,
            json!({"scene": 2, "chat_id_list": ["wrgold1"], "room_base_name": "金卡群", "room_base_id": 2, "state": "tier_gold"}),
        )
        .await;
    let join_id = join["config_id"].as_str().unwrap().to_owned();
    let version_before = w.fake.group_chat("wrgold1").unwrap().member_version;
    let joined = driver
        .customer_joins_via_join_way(&join_id, &customer)
        .await
        .unwrap();
    assert_eq!(joined, "wrgold1");
    let gold = w.fake.group_chat("wrgold1").unwrap();
    assert_ne!(gold.member_version, version_before, "member_version bumped");
    assert_eq!(gold.member_list[1].join_scene, 3);
    assert_eq!(gold.member_list[1].state.as_deref(), Some("tier_gold"));
    let overflow = driver
        .customer_joins_via_join_way(&join_id, &other)
        .await
        .unwrap();
    assert_ne!(overflow, "wrgold1", "the full group overflowed");
    let room = w.fake.group_chat(&overflow).unwrap();
    assert_eq!(room.name, "金卡群2");
    assert_eq!(room.owner, "zhangsan");
    assert_eq!(room.member_list.len(), 2);
    driver
        .member_leaves_group("wrgold1", &customer, true)
        .await
        .unwrap();
    assert_eq!(w.fake.group_chat("wrgold1").unwrap().member_list.len(), 1);

    // An admin edits the tag library.
    let tags = w
        .post(
            "externalcontact/add_corp_tag",
            &t,
            json!({"group_name": "等级", "tag": [{"name": "金卡"}]}),
        )
        .await;
    let group_id = tags["tag_group"]["group_id"].as_str().unwrap().to_owned();
    driver
        .admin_edits_tag(TagEdit::CreateTag {
            group_id: group_id.clone(),
            name: "钻石".into(),
        })
        .await
        .unwrap();
    let diamond = w
        .fake
        .tag_library()
        .iter()
        .flat_map(|g| g.tag.clone())
        .find(|t| t.name == "钻石")
        .unwrap();
    driver
        .admin_edits_tag(TagEdit::RenameTag {
            id: diamond.id.clone(),
            name: "黑钻".into(),
        })
        .await
        .unwrap();
    driver
        .admin_edits_tag(TagEdit::DeleteTag { id: diamond.id })
        .await
        .unwrap();
    driver
        .admin_edits_tag(TagEdit::DeleteGroup { id: group_id })
        .await
        .unwrap();
    assert!(w.fake.tag_library().iter().all(|g| g.deleted));

    // A member writes to the app.
    let answer = driver
        .staff_sends_text("zhangsan", "查询 小红")
        .await
        .unwrap();
    assert!(
        answer.is_empty() || answer.contains("<Encrypt>"),
        "{answer}"
    );

    assert_eq!(
        kinds(&app).await,
        vec![
            "change_external_contact.add_external_contact",
            "change_external_contact.add_external_contact",
            "change_external_contact.edit_external_contact",
            "change_external_contact.del_follow_user",
            "change_external_contact.del_external_contact",
            "change_external_contact.transfer_fail",
            "change_external_chat.update",
            "change_external_chat.create",
            "change_external_chat.update",
            "change_external_chat.update",
            "change_external_tag.create",
            "change_external_tag.update",
            "change_external_tag.delete",
            "change_external_tag.delete",
            "message.text",
        ]
    );
    app.shutdown().await;
}

/// The element names and order of callback.md §3, after the common header.
fn body_after_event(xml: &str) -> &str {
    let start = xml.find("</Event>").expect("an event") + "</Event>".len();
    &xml[start..]
}

#[tokio::test]
async fn callbacks_have_the_shapes_of_callback_md() {
    let w = Wecom::start().await;
    let sink = callback_sink(&w).await;
    let t = w.token().await;
    let driver = w.fake.driver();
    let customer = w.fake.seed_customer("zhangsan", NewCustomer::wechat("子"));

    driver
        .staff_deletes_customer("zhangsan", &customer, true)
        .await
        .unwrap();
    driver
        .transfer_fails("lisi", &customer, "customer_limit_exceed")
        .await
        .unwrap();
    w.fake.add_group_chat("wrfull", "zhangsan", "满群", 1);
    let join = w
        .post(
            "externalcontact/groupchat/add_join_way",
            &t,
            json!({"scene": 2, "chat_id_list": ["wrfull"], "room_base_name": "溢出群", "room_base_id": 7}),
        )
        .await;
    let join_id = join["config_id"].as_str().unwrap().to_owned();
    let chat = driver
        .customer_joins_via_join_way(&join_id, &customer)
        .await
        .unwrap();
    let joined_version = w.fake.group_chat(&chat).unwrap().member_version;
    driver
        .member_leaves_group(&chat, &customer, false)
        .await
        .unwrap();
    let left_version = w.fake.group_chat(&chat).unwrap().member_version;
    let group = w
        .post(
            "externalcontact/add_corp_tag",
            &t,
            json!({"group_name": "g", "tag": [{"name": "a"}]}),
        )
        .await;
    let group_id = group["tag_group"]["group_id"].as_str().unwrap().to_owned();
    driver
        .admin_edits_tag(TagEdit::RenameTag {
            id: group_id.clone(),
            name: "h".into(),
        })
        .await
        .unwrap();

    let xmls = sink.lock().unwrap().clone();
    assert_eq!(xmls.len(), 6, "{xmls:#?}");
    assert_eq!(
        body_after_event(&xmls[0]),
        format!(
            "<ChangeType><![CDATA[del_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID>\
             <ExternalUserID><![CDATA[{customer}]]></ExternalUserID><Source><![CDATA[DELETE_BY_TRANSFER]]></Source></xml>"
        )
    );
    assert_eq!(
        body_after_event(&xmls[1]),
        format!(
            "<ChangeType><![CDATA[transfer_fail]]></ChangeType><FailReason><![CDATA[customer_limit_exceed]]></FailReason>\
             <UserID><![CDATA[lisi]]></UserID><ExternalUserID><![CDATA[{customer}]]></ExternalUserID></xml>"
        )
    );
    assert_eq!(
        body_after_event(&xmls[2]),
        format!(
            "<ChatId><![CDATA[{chat}]]></ChatId><ChangeType><![CDATA[create]]></ChangeType></xml>"
        )
    );
    assert!(
        body_after_event(&xmls[3]).starts_with(&format!(
            "<ChatId><![CDATA[{chat}]]></ChatId><ChangeType><![CDATA[update]]></ChangeType>\
             <UpdateDetail><![CDATA[add_member]]></UpdateDetail><JoinScene>3</JoinScene><QuitScene>0</QuitScene>\
             <MemChangeCnt>1</MemChangeCnt><MemChangeList><Item>{customer}</Item></MemChangeList><LastMemVer>"
        )),
        "{}",
        xmls[3]
    );
    assert_eq!(w.fake.group_chat(&chat).unwrap().name, "溢出群7");
    // The versions chain: the leave's LastMemVer is the join's CurMemVer.
    let Event::ExternalChat {
        cur_mem_ver: join_cur,
        ..
    } = event::parse(&xmls[3]).unwrap()
    else {
        panic!("{}", xmls[3]);
    };
    let Event::ExternalChat {
        update_detail,
        quit_scene,
        last_mem_ver,
        cur_mem_ver,
        mem_change_list,
        ..
    } = event::parse(&xmls[4]).unwrap()
    else {
        panic!("{}", xmls[4]);
    };
    assert_eq!(join_cur.as_deref(), Some(joined_version.as_str()));
    assert_eq!(update_detail.as_deref(), Some("del_member"));
    assert_eq!(quit_scene, Some(0));
    assert_eq!(last_mem_ver, join_cur);
    assert_eq!(cur_mem_ver.as_deref(), Some(left_version.as_str()));
    assert_eq!(mem_change_list, vec![customer.clone()]);
    assert_eq!(
        body_after_event(&xmls[5]),
        format!(
            "<Id><![CDATA[{group_id}]]></Id><TagType><![CDATA[tag_group]]></TagType><ChangeType><![CDATA[update]]></ChangeType></xml>"
        )
    );
    // Every callback is addressed to the corp from "sys".
    for xml in &xmls {
        assert!(xml.starts_with(&format!(
            "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>"
        )));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_over_the_corps_calls_per_minute_or_hour_is_45009_and_blocked_for_the_window() {
    let w = Wecom::start().await;
    w.fake.set_api_caps(siyu::fake::ApiCaps {
        per_minute: 3,
        per_hour: 5,
    });
    let t = w.token().await;
    let list = || w.post("externalcontact/get_corp_tag_list", &t, json!({}));
    for _ in 0..3 {
        assert_eq!(code(&list().await), 0);
    }
    assert_eq!(code(&list().await), 45009, "the fourth call in a minute");
    // Another API has its own count.
    let other = w
        .post("externalcontact/groupchat/list", &t, json!({"limit": 10}))
        .await;
    assert_eq!(code(&other), 0, "{other}");
    // Blocked for the minute, then allowed again until the hour's 5 calls are used.
    w.fake.advance_clock(Duration::from_secs(30));
    assert_eq!(
        code(&list().await),
        45009,
        "still inside the blocked minute"
    );
    w.fake.advance_clock(Duration::from_secs(31));
    assert_eq!(code(&list().await), 0);
    assert_eq!(code(&list().await), 0);
    assert_eq!(code(&list().await), 45009, "the hour's sixth call");
    w.fake.advance_clock(Duration::from_secs(30 * 60));
    assert_eq!(code(&list().await), 45009, "blocked for the hour");
    w.fake.advance_clock(Duration::from_secs(31 * 60));
    assert_eq!(code(&list().await), 0);
}

// ---- customer groups as the client changes them -------------------------------------------

/// CRC-32 as PNG computes it (ISO-HDLC, reflected 0xEDB88320).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The chunk types of a PNG in order, having checked its signature and every chunk's CRC.
fn png_chunks(png: &[u8]) -> Vec<String> {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG signature");
    let mut rest = &png[8..];
    let mut kinds = Vec::new();
    while !rest.is_empty() {
        assert!(rest.len() >= 12, "a truncated chunk");
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(rest.len() >= 12 + len, "a truncated chunk");
        let kind_and_data = &rest[4..8 + len];
        let kind = String::from_utf8_lossy(&kind_and_data[..4]).into_owned();
        let crc = u32::from_be_bytes(rest[8 + len..12 + len].try_into().unwrap());
        assert_eq!(crc32(kind_and_data), crc, "CRC of {kind}");
        if kind == "IHDR" {
            assert_eq!(len, 13, "IHDR holds 13 bytes");
        }
        kinds.push(kind);
        rest = &rest[12 + len..];
    }
    kinds
}

#[tokio::test]
async fn a_join_ways_qr_code_is_a_png_at_the_fakes_address() {
    let w = Wecom::start().await;
    let t = w.token().await;
    w.fake.add_group_chat("wrqr", "zhangsan", "扫码群", 200);
    let add = |scene: i64| {
        w.post(
            "externalcontact/groupchat/add_join_way",
            &t,
            json!({"scene": scene, "chat_id_list": ["wrqr"]}),
        )
    };
    let get = |config_id: String| {
        w.post(
            "externalcontact/groupchat/get_join_way",
            &t,
            json!({"config_id": config_id}),
        )
    };
    let http = &w.http;
    let fetch = |url: String| async move { http.get(url).send().await.unwrap() };
    let qr_way = add(2).await;
    let config_id = qr_way["config_id"].as_str().unwrap().to_owned();
    let way = get(config_id.clone()).await;
    let url = way["join_way"]["qr_code"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("{}/fake/qr/{config_id}.png", w.base));

    let image = fetch(url.clone()).await;
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/png");
    let png = image.bytes().await.unwrap();
    assert_eq!(png_chunks(&png), ["IHDR", "IDAT", "IEND"]);

    // siyu downloads the code and uploads it for a mass message, as it would WeCom's.
    let upload = w
        .upload("media/upload?type=image", &t, "qr.png", &png)
        .await;
    assert_eq!(code(&upload), 0, "{upload}");
    let customer = w.fake.seed_customer("zhangsan", NewCustomer::wechat("卯"));
    let mass = w
        .post(
            "externalcontact/add_msg_template",
            &t,
            json!({
                "chat_type": "single", "sender": "zhangsan", "external_userid": [customer],
                "attachments": [{"msgtype": "image", "image": {"media_id": upload["media_id"]}}],
            }),
        )
        .await;
    assert_eq!(code(&mass), 0, "{mass}");

    // No image for an unknown way, a mini-program way (scene 1) or a deleted one.
    let unknown = fetch(format!("{}/fake/qr/nope.png", w.base)).await;
    assert_eq!(unknown.status(), 404);
    let plugin = add(1).await;
    let plugin_id = plugin["config_id"].as_str().unwrap().to_owned();
    assert!(get(plugin_id.clone()).await["join_way"]["qr_code"].is_null());
    let plugin_qr = fetch(format!("{}/fake/qr/{plugin_id}.png", w.base)).await;
    assert_eq!(plugin_qr.status(), 404);
    let deleted = w
        .post(
            "externalcontact/groupchat/del_join_way",
            &t,
            json!({"config_id": config_id}),
        )
        .await;
    assert_eq!(code(&deleted), 0, "{deleted}");
    assert_eq!(fetch(url).await.status(), 404);
}

#[tokio::test]
async fn a_fake_never_served_by_itself_keeps_wecoms_qr_url() {
    // The router served by someone else: the fake does not know where it is reachable.
    let fake = FakeWecom::new(FakeConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = fake.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let w = Wecom {
        fake,
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    };
    w.fake.add_staff("zhangsan", "张三");
    w.fake.add_group_chat("wrunit", "zhangsan", "群", 200);
    let t = w.token().await;
    let added = w
        .post(
            "externalcontact/groupchat/add_join_way",
            &t,
            json!({"scene": 2, "chat_id_list": ["wrunit"]}),
        )
        .await;
    let config_id = added["config_id"].as_str().unwrap();
    let qr = w.fake.join_way(config_id).unwrap().qr_code.unwrap();
    assert!(qr.starts_with("https://wework.qpic.cn/"), "{qr}");
}

#[tokio::test]
async fn owners_admins_names_and_notices_change_in_the_client() {
    let w = Wecom::start().await;
    let sink = callback_sink(&w).await;
    let t = w.token().await;
    w.fake.add_staff("wangwu", "王五");
    w.fake.add_group_chat("wrvip", "zhangsan", "VIP群", 200);
    w.fake.set_group_admins("wrvip", &["lisi"]);
    let get = || {
        w.post(
            "externalcontact/groupchat/get",
            &t,
            json!({"chat_id": "wrvip"}),
        )
    };
    let owned_by = |owner: &'static str| {
        w.post(
            "externalcontact/groupchat/list",
            &t,
            json!({"limit": 100, "owner_filter": {"userid_list": [owner]}}),
        )
    };
    let members = |chat: &Value| -> Vec<String> {
        chat["group_chat"]["member_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["userid"].as_str().unwrap().to_owned())
            .collect()
    };
    let chat = get().await;
    assert_eq!(
        chat["group_chat"]["admin_list"],
        json!([{"userid": "lisi"}])
    );
    assert_eq!(members(&chat), ["zhangsan", "lisi"], "an admin is a member");
    let version = chat["group_chat"]["member_version"].clone();

    let driver = w.fake.driver();
    driver.owner_changes("wrvip", "lisi").await.unwrap();
    let chat = get().await;
    assert_eq!(chat["group_chat"]["owner"], "lisi");
    assert_eq!(
        chat["group_chat"]["admin_list"],
        json!([]),
        "the owner is no admin"
    );
    assert_eq!(members(&chat), ["zhangsan", "lisi"], "the old owner stays");
    assert_eq!(
        chat["group_chat"]["member_version"], version,
        "nobody joined or left"
    );
    assert_eq!(
        owned_by("lisi").await["group_chat_list"],
        json!([{"chat_id": "wrvip", "status": 0}])
    );
    assert_eq!(owned_by("zhangsan").await["group_chat_list"], json!([]));

    let ghost = driver.owner_changes("wrvip", "ghost").await;
    assert!(matches!(ghost, Err(DriverError::NotFound(_))), "{ghost:?}");
    // A new owner who was not in the group joins it.
    driver.owner_changes("wrvip", "wangwu").await.unwrap();
    let chat = get().await;
    assert_eq!(chat["group_chat"]["owner"], "wangwu");
    assert_eq!(members(&chat), ["zhangsan", "lisi", "wangwu"]);

    driver.group_renamed("wrvip", "钻石VIP群").await.unwrap();
    driver
        .group_notice_changed("wrvip", "每周五抽奖")
        .await
        .unwrap();
    let chat = get().await;
    assert_eq!(chat["group_chat"]["name"], "钻石VIP群");
    assert_eq!(chat["group_chat"]["notice"], "每周五抽奖");

    let xmls = sink.lock().unwrap().clone();
    let details = [
        "change_owner",
        "change_owner",
        "change_name",
        "change_notice",
    ];
    assert_eq!(xmls.len(), details.len(), "{xmls:#?}");
    for (xml, detail) in xmls.iter().zip(details) {
        assert_eq!(
            body_after_event(xml),
            format!(
                "<ChatId><![CDATA[wrvip]]></ChatId><ChangeType><![CDATA[update]]></ChangeType>\
                 <UpdateDetail><![CDATA[{detail}]]></UpdateDetail></xml>"
            )
        );
        let Event::ExternalChat { update_detail, .. } = event::parse(xml).unwrap() else {
            panic!("{xml}");
        };
        assert_eq!(update_detail.as_deref(), Some(detail));
    }
}

#[tokio::test]
async fn a_dismissed_group_is_gone_from_the_api_and_from_its_join_ways() {
    let w = Wecom::start().await;
    let sink = callback_sink(&w).await;
    let t = w.token().await;
    w.fake.add_group_chat("wrgone", "zhangsan", "解散群", 200);
    w.fake.add_group_chat("wrstay", "zhangsan", "留下群", 200);
    let add_way = |chats: Value| {
        w.post(
            "externalcontact/groupchat/add_join_way",
            &t,
            json!({"scene": 2, "chat_id_list": chats, "auto_create_room": 0}),
        )
    };
    let both = add_way(json!(["wrgone", "wrstay"])).await["config_id"].clone();
    let alone = add_way(json!(["wrgone"])).await["config_id"].clone();
    let driver = w.fake.driver();
    driver.group_dismissed("wrgone").await.unwrap();

    let gone = w
        .post(
            "externalcontact/groupchat/get",
            &t,
            json!({"chat_id": "wrgone"}),
        )
        .await;
    assert_eq!(code(&gone), 49008, "{gone}");
    let listed = w
        .post("externalcontact/groupchat/list", &t, json!({"limit": 100}))
        .await;
    assert_eq!(
        listed["group_chat_list"],
        json!([{"chat_id": "wrstay", "status": 0}])
    );
    let chats_of = |config_id: Value| {
        let (w, t) = (&w, &t);
        async move {
            let way = w
                .post(
                    "externalcontact/groupchat/get_join_way",
                    t,
                    json!({"config_id": config_id}),
                )
                .await;
            assert_eq!(code(&way), 0, "{way}");
            way["join_way"]["chat_id_list"].clone()
        }
    };
    assert_eq!(chats_of(both).await, json!(["wrstay"]));
    assert_eq!(chats_of(alone.clone()).await, json!([]), "the way stays");
    assert!(w.fake.group_chat("wrgone").is_none());
    let live: Vec<String> = w
        .fake
        .group_chats()
        .into_iter()
        .map(|c| c.chat_id)
        .collect();
    assert_eq!(live, ["wrstay"]);

    // Nothing to join through the emptied way, nothing to dismiss twice, nothing to link.
    let customer = w.fake.seed_customer("zhangsan", NewCustomer::wechat("辰"));
    let joined = driver
        .customer_joins_via_join_way(alone.as_str().unwrap(), &customer)
        .await;
    assert!(joined.is_err(), "{joined:?}");
    let again = driver.group_dismissed("wrgone").await;
    assert!(matches!(again, Err(DriverError::NotFound(_))), "{again:?}");
    assert_eq!(code(&add_way(json!(["wrgone"])).await), 49008);

    let xmls = sink.lock().unwrap().clone();
    assert_eq!(xmls.len(), 1, "{xmls:#?}");
    assert_eq!(
        body_after_event(&xmls[0]),
        "<ChatId><![CDATA[wrgone]]></ChatId><ChangeType><![CDATA[dismiss]]></ChangeType></xml>"
    );
}

#[tokio::test]
async fn the_owner_adds_a_customer_to_the_group_directly() {
    let w = Wecom::start().await;
    let sink = callback_sink(&w).await;
    let t = w.token().await;
    w.fake.add_group_chat("wrdirect", "zhangsan", "直拉群", 200);
    let customer = w.fake.seed_customer("zhangsan", NewCustomer::wechat("巳"));
    let strangers = w.fake.seed_customer("lisi", NewCustomer::wechat("午"));
    let before = w.fake.group_chat("wrdirect").unwrap().member_version;
    let driver = w.fake.driver();
    driver
        .owner_adds_customer("wrdirect", &customer)
        .await
        .unwrap();

    let chat = w
        .post(
            "externalcontact/groupchat/get",
            &t,
            json!({"chat_id": "wrdirect", "need_name": 1}),
        )
        .await;
    let member = &chat["group_chat"]["member_list"][1];
    assert_eq!(member["userid"], customer.as_str());
    assert_eq!(member["type"], 2);
    assert_eq!(member["join_scene"], 1, "invited directly");
    assert_eq!(member["invitor"], json!({"userid": "zhangsan"}));
    assert_eq!(member["name"], "巳");
    assert!(member["state"].is_null(), "no join way, no state: {member}");
    let after = chat["group_chat"]["member_version"].as_str().unwrap();
    assert_ne!(after, before, "member_version bumped");

    // Only the owner's own customers, and only once.
    let stranger = driver.owner_adds_customer("wrdirect", &strangers).await;
    assert!(
        matches!(stranger, Err(DriverError::NotFound(_))),
        "{stranger:?}"
    );
    let twice = driver.owner_adds_customer("wrdirect", &customer).await;
    assert!(matches!(twice, Err(DriverError::Refused(_))), "{twice:?}");

    let xmls = sink.lock().unwrap().clone();
    assert_eq!(xmls.len(), 1, "{xmls:#?}");
    assert!(
        body_after_event(&xmls[0]).starts_with(&format!(
            "<ChatId><![CDATA[wrdirect]]></ChatId><ChangeType><![CDATA[update]]></ChangeType>\
             <UpdateDetail><![CDATA[add_member]]></UpdateDetail><JoinScene>0</JoinScene><QuitScene>0</QuitScene>\
             <MemChangeCnt>1</MemChangeCnt><MemChangeList><Item>{customer}</Item></MemChangeList><LastMemVer>"
        )),
        "{}",
        xmls[0]
    );
    let Event::ExternalChat {
        last_mem_ver,
        cur_mem_ver,
        ..
    } = event::parse(&xmls[0]).unwrap()
    else {
        panic!("{}", xmls[0]);
    };
    assert_eq!(last_mem_ver.as_deref(), Some(before.as_str()));
    assert_eq!(cur_mem_ver.as_deref(), Some(after));
}

#[tokio::test]
async fn a_silent_driver_changes_the_fake_but_its_callbacks_are_lost() {
    let w = Wecom::start().await;
    let t = w.token().await;
    w.fake.add_group_chat("wrlost", "zhangsan", "丢失群", 200);
    let customer = w.fake.seed_customer("zhangsan", NewCustomer::wechat("未"));
    let silent = w.fake.driver().silent();
    // No callback URL yet: a lost callback needs none.
    silent
        .owner_adds_customer("wrlost", &customer)
        .await
        .unwrap();
    let sink = callback_sink(&w).await;
    silent.group_renamed("wrlost", "找回群").await.unwrap();
    let added = silent
        .customer_adds_staff("lisi", Some("lost_state"), NewCustomer::wechat("申"))
        .await
        .unwrap();
    // A barrier: one callback the ordinary driver delivers (and awaits) after the silent ones.
    w.fake
        .driver()
        .staff_sends_text("zhangsan", "barrier")
        .await
        .unwrap();
    let got = sink.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("barrier"), "{got:?}");

    // Everything happened: a reconciliation reading the API finds it.
    let chat = w
        .post(
            "externalcontact/groupchat/get",
            &t,
            json!({"chat_id": "wrlost"}),
        )
        .await;
    assert_eq!(chat["group_chat"]["name"], "找回群");
    assert_eq!(
        chat["group_chat"]["member_list"][1]["userid"],
        customer.as_str()
    );
    let follow = w
        .get(
            "externalcontact/get",
            &format!("access_token={t}&external_userid={}", added.external_userid),
        )
        .await;
    assert_eq!(follow["follow_user"][0]["state"], "lost_state", "{follow}");
}

// ---- mass messages with an image, and what the send results say ----------------------------

#[tokio::test]
async fn a_single_mass_messages_image_is_a_media_upload_id_under_3_days_old() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let a = w.fake.seed_customer("zhangsan", NewCustomer::wechat("酉"));
    let b = w.fake.seed_customer("zhangsan", NewCustomer::wechat("戌"));
    let uploaded = w
        .upload(
            "media/upload?type=image",
            &t,
            "poster.png",
            b"\x89PNG poster",
        )
        .await;
    assert_eq!(code(&uploaded), 0, "{uploaded}");
    let upload_id = uploaded["media_id"].as_str().unwrap().to_owned();
    let send = |token: String, media_id: String| {
        let body = json!({
            "chat_type": "single", "sender": "zhangsan", "external_userid": [a, b],
            "text": {"content": "会员日"},
            "attachments": [{"msgtype": "image", "image": {"media_id": media_id}}],
        });
        let w = &w;
        async move {
            code(
                &w.post("externalcontact/add_msg_template", &token, body)
                    .await,
            )
        }
    };
    for attachment_type in [1, 2] {
        let attachment = w
            .upload(
                &format!(
                    "media/upload_attachment?media_type=image&attachment_type={attachment_type}"
                ),
                &t,
                "poster.png",
                b"\x89PNG poster",
            )
            .await;
        let id = attachment["media_id"].as_str().unwrap().to_owned();
        assert_eq!(
            send(t.clone(), id).await,
            40007,
            "an upload_attachment id (type {attachment_type})"
        );
    }
    assert_eq!(send(t.clone(), "3nope".into()).await, 40007);
    assert_eq!(send(t.clone(), upload_id.clone()).await, 0);

    // Still good a minute before its 3 days are up, refused a minute after.
    w.fake.advance_clock(Duration::from_secs(3 * 86_400 - 60));
    let t = w.token().await;
    assert_eq!(send(t.clone(), upload_id.clone()).await, 0);
    w.fake.advance_clock(Duration::from_secs(120));
    let t = w.token().await;
    assert_eq!(send(t, upload_id).await, 40007);
}

#[tokio::test]
async fn send_results_report_sent_not_a_friend_and_over_the_cap() {
    let w = Wecom::start_with(FakeConfig {
        mass_cap: MassCap::PerDay,
        ..FakeConfig::default()
    })
    .await;
    let t = w.token().await;
    let sent = w.fake.seed_customer("zhangsan", NewCustomer::wechat("亥"));
    let left = w
        .fake
        .seed_customer("zhangsan", NewCustomer::wechat("甲子"));
    let capped = w
        .fake
        .seed_customer("zhangsan", NewCustomer::wechat("乙丑"));
    let driver = w.fake.driver();
    let mass = |to: Vec<&String>| {
        let body = json!({
            "chat_type": "single", "sender": "zhangsan", "external_userid": to,
            "text": {"content": "新品"},
        });
        let (w, t) = (&w, &t);
        async move {
            let v = w.post("externalcontact/add_msg_template", t, body).await;
            assert_eq!(code(&v), 0, "{v}");
            v["msgid"].as_str().unwrap().to_owned()
        }
    };
    // `capped` already had today's one message.
    let earlier = mass(vec![&capped]).await;
    driver
        .staff_confirms_mass_message(&earlier, "zhangsan")
        .await
        .unwrap();

    let msgid = mass(vec![&sent, &left, &capped]).await;
    let task = || {
        w.post(
            "externalcontact/get_groupmsg_task",
            &t,
            json!({"msgid": msgid}),
        )
    };
    let results = || async {
        let v = w
            .post(
                "externalcontact/get_groupmsg_send_result",
                &t,
                json!({"msgid": msgid, "userid": "zhangsan"}),
            )
            .await;
        assert_eq!(code(&v), 0, "{v}");
        v["send_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["external_userid"].as_str().unwrap().to_owned(),
                    r["status"].as_i64().unwrap(),
                    r["send_time"].is_i64(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        task().await["task_list"],
        json!([{"userid": "zhangsan", "status": 0}]),
        "not sent until the member confirms"
    );
    assert!(results().await.iter().all(|(_, status, _)| *status == 0));

    // Before the member confirms, one customer deletes them (the callback is lost: no sink).
    driver
        .silent()
        .customer_deletes_staff("zhangsan", &left)
        .await
        .unwrap();
    driver
        .staff_confirms_mass_message(&msgid, "zhangsan")
        .await
        .unwrap();
    let task = task().await;
    assert_eq!(task["task_list"][0]["status"], 2);
    assert!(task["task_list"][0]["send_time"].is_i64());
    assert_eq!(
        results().await,
        vec![(sent, 1, true), (left, 2, false), (capped, 3, false),]
    );
}

// ---- group mass messages, the moment list, and the client's moment reads --------------------

#[tokio::test]
async fn a_group_mass_message_goes_to_the_senders_own_groups_and_each_is_sent_on_confirm() {
    let w = Wecom::start().await;
    let t = w.token().await;
    w.fake.add_group_chat("wrOwnA", "zhangsan", "会员一群", 500);
    w.fake.add_group_chat("wrOwnB", "zhangsan", "会员二群", 500);
    w.fake.add_group_chat("wrLisi", "lisi", "李四的群", 500);
    let created = w
        .post(
            "externalcontact/add_msg_template",
            &t,
            json!({
                "chat_type": "group", "sender": "zhangsan",
                "chat_id_list": ["wrOwnA", "wrLisi", "wrOwnB", "wrnope"],
                "text": {"content": "群发"},
            }),
        )
        .await;
    assert_eq!(code(&created), 0, "{created}");
    assert_eq!(
        created["fail_list"],
        json!(["wrLisi", "wrnope"]),
        "groups the sender does not own are not sendable"
    );
    let msgid = created["msgid"].as_str().unwrap().to_owned();
    let tasks = w
        .post(
            "externalcontact/get_groupmsg_task",
            &t,
            json!({"msgid": msgid}),
        )
        .await;
    assert_eq!(
        tasks["task_list"],
        json!([{"userid": "zhangsan", "status": 0}]),
        "{tasks}"
    );
    let results = || async {
        let v = w
            .post(
                "externalcontact/get_groupmsg_send_result",
                &t,
                json!({"msgid": msgid, "userid": "zhangsan"}),
            )
            .await;
        assert_eq!(code(&v), 0, "{v}");
        v["send_list"].as_array().unwrap().clone()
    };
    assert!(
        results().await.is_empty(),
        "unsent group rows are not returned"
    );
    w.fake
        .driver()
        .staff_confirms_mass_message(&msgid, "zhangsan")
        .await
        .unwrap();
    let sent = results().await;
    let rows: Vec<(&str, &str, i64, bool)> = sent
        .iter()
        .map(|r| {
            (
                r["chat_id"].as_str().unwrap(),
                r["userid"].as_str().unwrap(),
                r["status"].as_i64().unwrap(),
                r["send_time"].is_i64() && r.get("external_userid").is_none(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("wrOwnA", "zhangsan", 1, true),
            ("wrOwnB", "zhangsan", 1, true)
        ]
    );
    let now = siyu::clock::system_now_ms() / 1000;
    let list = w
        .post(
            "externalcontact/get_groupmsg_list_v2",
            &t,
            json!({"chat_type": "group", "start_time": now - 60, "end_time": now + 60}),
        )
        .await;
    assert_eq!(list["group_msg_list"][0]["msgid"], msgid, "{list}");

    // Without a sender, or to groups none of which the sender owns.
    let no_sender = w
        .post(
            "externalcontact/add_msg_template",
            &t,
            json!({"chat_type": "group", "chat_id_list": ["wrOwnA"], "text": {"content": "x"}}),
        )
        .await;
    assert_eq!(code(&no_sender), 40058);
    let not_owned = w
        .post(
            "externalcontact/add_msg_template",
            &t,
            json!({"chat_type": "group", "sender": "lisi", "chat_id_list": ["wrOwnA"], "text": {"content": "x"}}),
        )
        .await;
    assert_eq!(code(&not_owned), 41048);
}

/// Polls a moment job until it is done (status 3) and answers its result.
async fn moment_done(w: &Wecom, t: &str, jobid: &str) -> Value {
    let query = format!("access_token={t}&jobid={jobid}");
    for _ in 0..10 {
        let v = w
            .get("externalcontact/get_moment_task_result", &query)
            .await;
        assert_eq!(code(&v), 0, "{v}");
        if v["status"] == 3 {
            return v["result"].clone();
        }
    }
    panic!("moment job {jobid} not done after 10 polls");
}

async fn add_moment(w: &Wecom, t: &str, body: Value) -> String {
    let v = w.post("externalcontact/add_moment_task", t, body).await;
    assert_eq!(code(&v), 0, "{v}");
    v["jobid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn moment_tasks_report_unknown_tags_and_senders_and_tags_pick_the_senders() {
    let w = Wecom::start().await;
    let t = w.token().await;
    w.fake.add_staff("wangwu", "王五");
    let added = w
        .post(
            "externalcontact/add_corp_tag",
            &t,
            json!({"group_name": "兴趣", "tag": [{"name": "咖啡"}, {"name": "茶"}]}),
        )
        .await;
    assert_eq!(code(&added), 0, "{added}");
    let coffee = added["tag_group"]["tag"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tea = added["tag_group"]["tag"][1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let customer = w.fake.seed_customer("lisi", NewCustomer::wechat("咖啡客"));
    let marked = w
        .post(
            "externalcontact/mark_tag",
            &t,
            json!({"userid": "lisi", "external_userid": customer, "add_tag": [coffee]}),
        )
        .await;
    assert_eq!(code(&marked), 0, "{marked}");
    // A deleted tag is no longer in the library either.
    let deleted = w
        .post("externalcontact/del_corp_tag", &t, json!({"tag_id": [tea]}))
        .await;
    assert_eq!(code(&deleted), 0, "{deleted}");

    let jobid = add_moment(
        &w,
        &t,
        json!({
            "text": {"content": "咖啡节"},
            "visible_range": {
                "sender_list": {"user_list": ["zhangsan", "ghost", "lisi"]},
                "external_contact_list": {"tag_list": [coffee, "etnope", tea]},
            },
        }),
    )
    .await;
    let result = moment_done(&w, &t, &jobid).await;
    assert_eq!(result["errcode"], 0);
    assert_eq!(result["invalid_sender_list"]["user_list"], json!(["ghost"]));
    assert_eq!(
        result["invalid_external_contact_list"]["tag_list"],
        json!(["etnope", tea]),
        "{result}"
    );
    let moment_id = result["moment_id"].as_str().unwrap().to_owned();
    let tasks = w
        .post(
            "externalcontact/get_moment_task",
            &t,
            json!({"moment_id": moment_id}),
        )
        .await;
    assert_eq!(
        tasks["task_list"],
        json!([
            {"userid": "zhangsan", "publish_status": 0},
            {"userid": "lisi", "publish_status": 0}
        ]),
        "the valid senders of sender_list"
    );

    // Tags only: the task goes to the followers of customers with the tag.
    let jobid = add_moment(
        &w,
        &t,
        json!({
            "text": {"content": "只给咖啡客"},
            "visible_range": {"external_contact_list": {"tag_list": [coffee]}},
        }),
    )
    .await;
    let result = moment_done(&w, &t, &jobid).await;
    assert_eq!(
        result["invalid_external_contact_list"]["tag_list"],
        json!([])
    );
    let tasks = w
        .post(
            "externalcontact/get_moment_task",
            &t,
            json!({"moment_id": result["moment_id"]}),
        )
        .await;
    assert_eq!(
        tasks["task_list"],
        json!([{"userid": "lisi", "publish_status": 0}])
    );
}

#[tokio::test]
async fn the_moment_list_shows_done_moments_with_their_content_in_an_exclusive_range() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let upload = |media_type: &'static str, name: &'static str| {
        let (w, t) = (&w, &t);
        async move {
            let v = w
                .upload(
                    &format!("media/upload_attachment?media_type={media_type}&attachment_type=1"),
                    t,
                    name,
                    b"some media bytes",
                )
                .await;
            assert_eq!(code(&v), 0, "{v}");
            v["media_id"].as_str().unwrap().to_owned()
        }
    };
    let image = upload("image", "a.jpg").await;
    let video = upload("video", "v.mp4").await;
    let cover = upload("image", "cover.jpg").await;
    let added = w
        .post(
            "externalcontact/add_corp_tag",
            &t,
            json!({"group_name": "等级", "tag": [{"name": "金卡"}]}),
        )
        .await;
    let gold = added["tag_group"]["tag"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let with_image = add_moment(
        &w,
        &t,
        json!({
            "text": {"content": "新品"},
            "attachments": [{"msgtype": "image", "image": {"media_id": image}}],
            "visible_range": {"external_contact_list": {"tag_list": [gold]}},
        }),
    )
    .await;
    let with_video = add_moment(
        &w,
        &t,
        json!({"attachments": [{"msgtype": "video", "video": {"media_id": video}}]}),
    )
    .await;
    let with_link = add_moment(
        &w,
        &t,
        json!({
            "text": {"content": "看看"},
            "attachments": [{"msgtype": "link", "link": {"title": "活动", "url": "https://example.com/a", "media_id": cover}}],
        }),
    )
    .await;
    let now = siyu::clock::system_now_ms() / 1000;
    let list = |body: Value| {
        let (w, t) = (&w, &t);
        async move {
            let v = w.post("externalcontact/get_moment_list", t, body).await;
            assert_eq!(code(&v), 0, "{v}");
            v
        }
    };
    let around = json!({"start_time": now - 60, "end_time": now + 60});
    assert_eq!(
        list(around.clone()).await["moment_list"],
        json!([]),
        "no job is done yet"
    );
    // One poll sees the job started: the moment does not exist yet.
    let first = w
        .get(
            "externalcontact/get_moment_task_result",
            &format!("access_token={t}&jobid={with_image}"),
        )
        .await;
    assert_eq!(first["status"], 1);
    assert_eq!(list(around.clone()).await["moment_list"], json!([]));
    let image_moment = moment_done(&w, &t, &with_image).await["moment_id"].clone();
    let video_moment = moment_done(&w, &t, &with_video).await["moment_id"].clone();
    let link_moment = moment_done(&w, &t, &with_link).await["moment_id"].clone();
    // A cancelled moment is still listed: published posts stay.
    let cancelled = w
        .post(
            "externalcontact/cancel_moment_task",
            &t,
            json!({"moment_id": video_moment}),
        )
        .await;
    assert_eq!(code(&cancelled), 0);

    let all = list(around.clone()).await;
    let moments = all["moment_list"].as_array().unwrap();
    assert_eq!(moments.len(), 3, "{all}");
    assert_eq!(all["next_cursor"], "");
    let created = moments[0]["create_time"].as_i64().unwrap();
    assert_eq!(
        moments[0],
        json!({
            "moment_id": image_moment, "create_time": created, "create_type": 0,
            "visible_type": 0, "text": {"content": "新品"}, "image": [{"media_id": image}],
        })
    );
    assert_eq!(moments[1]["moment_id"], video_moment);
    assert_eq!(moments[1]["visible_type"], 1);
    assert_eq!(moments[1]["video"]["media_id"], video);
    assert!(moments[1].get("text").is_none());
    assert_eq!(moments[2]["moment_id"], link_moment);
    assert_eq!(
        moments[2]["link"],
        json!({"title": "活动", "url": "https://example.com/a"})
    );
    assert!(
        moments.iter().all(|m| m.get("creator").is_none()),
        "API-created moments have no creator"
    );

    // Exclusive range: a moment created at start_time or end_time is outside it.
    let at_start = list(json!({"start_time": created, "end_time": created + 60})).await;
    assert!(
        !at_start["moment_list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["moment_id"] == image_moment),
        "{at_start}"
    );
    let at_end = list(json!({"start_time": created - 60, "end_time": created})).await;
    assert_eq!(at_end["moment_list"], json!([]));
    // Personal moments or one member's only: the fake has none.
    let personal =
        list(json!({"start_time": now - 60, "end_time": now + 60, "filter_type": 1})).await;
    assert_eq!(personal["moment_list"], json!([]));
    let by_creator =
        list(json!({"start_time": now - 60, "end_time": now + 60, "creator": "zhangsan"})).await;
    assert_eq!(by_creator["moment_list"], json!([]));
    let corp = list(json!({"start_time": now - 60, "end_time": now + 60, "filter_type": 0})).await;
    assert_eq!(corp["moment_list"].as_array().unwrap().len(), 3);

    // Pages.
    let first_page = list(json!({"start_time": now - 60, "end_time": now + 60, "limit": 2})).await;
    assert_eq!(first_page["moment_list"].as_array().unwrap().len(), 2);
    let cursor = first_page["next_cursor"].as_str().unwrap().to_owned();
    assert!(!cursor.is_empty());
    let second_page =
        list(json!({"start_time": now - 60, "end_time": now + 60, "limit": 2, "cursor": cursor}))
            .await;
    assert_eq!(second_page["moment_list"][0]["moment_id"], link_moment);
    assert_eq!(second_page["next_cursor"], "");

    // start_time and end_time are required, at most 30 days apart.
    for body in [
        json!({"start_time": now - 60}),
        json!({"end_time": now}),
        json!({"start_time": now - 30 * 86_400 - 1, "end_time": now}),
        json!({"start_time": now, "end_time": now - 1}),
    ] {
        let v = w
            .post("externalcontact/get_moment_list", &t, body.clone())
            .await;
        assert_eq!(code(&v), 40058, "{body}: {v}");
    }
    let thirty_days = list(json!({"start_time": now + 1 - 30 * 86_400, "end_time": now + 1})).await;
    assert_eq!(thirty_days["moment_list"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn the_moment_list_pages_20_at_most() {
    let w = Wecom::start().await;
    let t = w.token().await;
    let start = siyu::clock::system_now_ms() / 1000 - 1;
    let mut t = t;
    for i in 0..21 {
        if i > 0 && i % 10 == 0 {
            // 10 moment tasks a minute.
            w.fake.advance_clock(Duration::from_secs(61));
            t = w.token().await;
        }
        let jobid = add_moment(&w, &t, json!({"text": {"content": format!("第{i}条")}})).await;
        moment_done(&w, &t, &jobid).await;
    }
    let end = start + 600;
    let page = w
        .post(
            "externalcontact/get_moment_list",
            &t,
            json!({"start_time": start, "end_time": end, "limit": 100}),
        )
        .await;
    assert_eq!(code(&page), 0, "{page}");
    assert_eq!(
        page["moment_list"].as_array().unwrap().len(),
        20,
        "over 20 is 20"
    );
    let rest = w
        .post(
            "externalcontact/get_moment_list",
            &t,
            json!({"start_time": start, "end_time": end, "cursor": page["next_cursor"]}),
        )
        .await;
    assert_eq!(rest["moment_list"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["moment_list"][0]["text"]["content"], "第20条");
}

fn client_for(w: &Wecom) -> siyu::wecom::client::WecomClient {
    let settings = siyu::config::WecomSettings {
        corp_id: CORP_ID.into(),
        agent_id: 1_000_002,
        secret: siyu::config::Secret::new("app-secret"),
        contact_secret: siyu::config::Secret::new("contact-secret"),
        api_base: w.base.clone(),
        ..siyu::config::WecomSettings::default()
    };
    siyu::wecom::client::WecomClient::new(&settings, None, siyu::clock::Clock::default()).unwrap()
}

#[tokio::test]
async fn the_client_reads_moment_outcomes_lists_and_tasks() {
    use siyu::wecom::client::WecomError;
    use siyu::wecom::client::types::{
        MomentCustomers, MomentLink, MomentRequest, MomentSenders, MomentTask, MomentTaskResult,
        MomentVisibleRange, Text,
    };

    let w = Wecom::start().await;
    let t = w.token().await;
    let client = client_for(&w);
    let added = w
        .post(
            "externalcontact/add_corp_tag",
            &t,
            json!({"group_name": "等级", "tag": [{"name": "银卡"}]}),
        )
        .await;
    let silver = added["tag_group"]["tag"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cover = w
        .upload(
            "media/upload_attachment?media_type=image&attachment_type=1",
            &t,
            "cover.jpg",
            b"cover image bytes",
        )
        .await;
    let request = MomentRequest {
        visible_range: Some(MomentVisibleRange {
            sender_list: Some(MomentSenders {
                user_list: vec!["zhangsan".into(), "ghost".into()],
            }),
            external_contact_list: Some(MomentCustomers {
                tag_list: vec![silver.as_str().into(), "etnope".into()],
            }),
        }),
        text: Some(Text {
            content: "会员日".into(),
        }),
        attachments: vec![json!({
            "msgtype": "link",
            "link": {"title": "会员日", "url": "https://example.com/d", "media_id": cover["media_id"]},
        })],
    };
    let jobid = client.add_moment(&request).await.unwrap();
    let mut outcome = None;
    for _ in 0..10 {
        let r = client.moment_result(&jobid).await.unwrap();
        if r.status == 3 {
            outcome = Some(r.result);
            break;
        }
    }
    let outcome = outcome.expect("the job is done within 10 polls");
    assert_eq!(outcome.errcode, 0);
    let invalid_users: Vec<&str> = outcome
        .invalid_sender_list
        .user_list
        .iter()
        .map(|u| u.as_str())
        .collect();
    assert_eq!(invalid_users, vec!["ghost"]);
    let invalid_tags: Vec<&str> = outcome
        .invalid_external_contact_list
        .tag_list
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(invalid_tags, vec!["etnope"]);

    let now = siyu::clock::system_now_ms() / 1000;
    let list = client.list_moments(now - 60, now + 60, "").await.unwrap();
    assert_eq!(list.next_cursor, "");
    let [moment] = list.moment_list.as_slice() else {
        panic!("one moment: {list:?}");
    };
    assert_eq!(moment.moment_id, outcome.moment_id);
    assert_eq!(moment.creator.as_str(), "", "API-created");
    assert_eq!(moment.create_type, 0);
    assert_eq!(moment.visible_type, 0, "a tag filter");
    assert_eq!(
        moment.text.as_ref().map(|t| t.content.as_str()),
        Some("会员日")
    );
    assert_eq!(
        moment.link,
        Some(MomentLink {
            title: "会员日".into(),
            url: "https://example.com/d".into()
        })
    );
    assert!(moment.image.is_empty() && moment.video.is_none());
    let too_long = client.list_moments(now - 31 * 86_400, now, "").await;
    assert!(
        matches!(too_long, Err(WecomError::Invalid(_))),
        "{too_long:?}"
    );

    w.fake
        .driver()
        .staff_publishes_moment(&outcome.moment_id, "zhangsan")
        .await
        .unwrap();
    let tasks = client.moment_tasks(&outcome.moment_id, "").await.unwrap();
    assert_eq!(
        tasks.task_list,
        vec![MomentTask {
            userid: "zhangsan".into(),
            publish_status: 1
        }]
    );
    assert_eq!(tasks.next_cursor, "");
    assert!(client.moment_tasks("momnope", "").await.is_err());

    // An answer without the invalid lists still decodes.
    let older: MomentTaskResult = serde_json::from_value(json!({
        "errcode": 0, "errmsg": "ok", "status": 3, "type": "add_moment_task",
        "result": {"errcode": 0, "errmsg": "ok", "moment_id": "momold"},
    }))
    .unwrap();
    assert_eq!(older.result.moment_id, "momold");
    assert!(older.result.invalid_sender_list.user_list.is_empty());
    assert!(
        older
            .result
            .invalid_external_contact_list
            .tag_list
            .is_empty()
    );
}
