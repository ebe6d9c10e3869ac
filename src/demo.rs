//! `siyu demo`: siyu on a throw-away SQLite file, wired to the fake WeCom on loopback, with the
//! fake's driver playing a short scenario whose steps are printed as they happen. Both keep
//! running afterwards so an operator can look around.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Secret;
use crate::server::App;
use crate::testkit::{API_TOKEN, CallbackSecrets, local_settings};
use crate::wecom::client::types::{AddTagsRequest, ContactWayRequest, NewTag};
use crate::wecom::fake::{FakeConfig, FakeWecom, NewCustomer, TagEdit};

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

fn step_err(step: &'static str) -> impl Fn(String) -> DemoError {
    move |reason| DemoError::Step { step, reason }
}

pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let dir = std::env::temp_dir().join(format!("siyu-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| DemoError::Setup(e.to_string()))?;
    let secrets = CallbackSecrets::generate();

    let fake = FakeWecom::new(FakeConfig {
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
    fake.add_group_chat("wrDemoMembers0001", "zhangsan", "会员群", 200);
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
    let app = App::build(settings).await.map_err(|e| {
        DemoError::Setup(format!(
            "{e} (is port {} taken? try --listen 127.0.0.1:0)",
            args.listen
        ))
    })?;
    fake.set_callback_url(&format!("http://{}/wecom/callback", app.addr()));

    println!("siyu demo");
    println!(
        "  siyu        http://{}   (SQLite at {}/siyu.db)",
        app.addr(),
        dir.display()
    );
    println!("  fake WeCom  http://{fake_addr}");
    println!();
    let driver = fake.driver();
    let mut n = 0;
    let mut say = |text: String| {
        n += 1;
        println!("{n:>2}. {text}");
    };

    let group = app
        .wecom()
        .add_tags(&AddTagsRequest {
            group_name: Some("渠道".into()),
            tag: vec![
                NewTag {
                    name: "抖音".into(),
                    order: None,
                },
                NewTag {
                    name: "小红书".into(),
                    order: None,
                },
            ],
            ..Default::default()
        })
        .await
        .map_err(|e| step_err("create tags")(e.to_string()))?;
    say(format!(
        "siyu fetched an access token and created the tag group 渠道 ({}) with {} tags through WeCom's API",
        group.group_id,
        group.tag.len()
    ));
    for (state, name, staff) in [
        ("douyin", "抖音", "zhangsan"),
        ("xiaohongshu", "小红书", "lisi"),
    ] {
        let way = app
            .wecom()
            .add_contact_way(&ContactWayRequest {
                kind: 1,
                scene: 2,
                remark: Some(format!("{name} channel")),
                state: Some(state.into()),
                user: vec![staff.into()],
                ..Default::default()
            })
            .await
            .map_err(|e| step_err("create contact way")(e.to_string()))?;
        say(format!(
            "siyu created the {name} channel's QR code (state {state}): {}",
            way.qr_code
        ));
    }
    let a = driver
        .customer_adds_via_contact_way("douyin", NewCustomer::wechat("王小明"))
        .await
        .map_err(|e| step_err("add through douyin")(e.to_string()))?;
    say(format!(
        "王小明 scanned the 抖音 code and added {} → {}",
        a.userid, a.external_userid
    ));
    let b = driver
        .customer_adds_via_contact_way("xiaohongshu", NewCustomer::wechat("陈静"))
        .await
        .map_err(|e| step_err("add through xiaohongshu")(e.to_string()))?;
    say(format!(
        "陈静 scanned the 小红书 code and added {} → {}",
        b.userid, b.external_userid
    ));
    driver
        .staff_edits_customer("zhangsan", &a.external_userid, Some("小明"), &[])
        .await
        .map_err(|e| step_err("edit")(e.to_string()))?;
    say("张三 edited 王小明's remark in the WeCom client".into());
    driver
        .admin_edits_tag(TagEdit::CreateTag {
            group_id: group.group_id.clone(),
            name: "直播间".into(),
        })
        .await
        .map_err(|e| step_err("tag edit")(e.to_string()))?;
    say("an admin added the tag 直播间 in the WeCom admin console".into());
    let reply = driver
        .staff_sends_text("zhangsan", "查 王小明")
        .await
        .map_err(|e| step_err("staff text")(e.to_string()))?;
    say(format!(
        "张三 typed \"查 王小明\" to the siyu app ({})",
        if reply.is_empty() {
            "acknowledged".to_string()
        } else {
            "answered".to_string()
        }
    ));
    driver
        .customer_deletes_staff("lisi", &b.external_userid)
        .await
        .map_err(|e| step_err("churn")(e.to_string()))?;
    say("陈静 deleted 李四 (churn)".into());

    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = app
        .store()
        .list_events(&Default::default(), 100)
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    println!();
    println!(
        "siyu's inbox holds {} events, each stored once and acknowledged:",
        events.len()
    );
    for e in events.iter().rev() {
        println!("  #{:<3} {:<50} {}", e.id, e.kind, e.status);
    }
    println!();
    println!("Look around:");
    println!(
        "  curl -H 'Authorization: Bearer {API_TOKEN}' http://{}/api/v1/events",
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
