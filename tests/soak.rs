//! `siyu soak`: a short one of the real binary passes every check, and the checks catch what
//! they are there to catch, shown on made-up outcomes (a welcome code used twice, an acknowledged
//! callback missing from the inbox, a relation with a tag too many, a task made twice).

use std::time::{Duration, SystemTime};

use siyu::fake::{Call, FollowView, MassMessageView, SentWelcome};
use siyu::soak::checks::{self, Campaign, Relation, SentCallback, Snapshot};
use siyu::store::campaigns::{CampaignSend, CampaignSendKind, CampaignSendStatus, Run, RunStatus};
use siyu::store::contacts::{CustomerRow, Follow, FollowStatus, SiyuTag, TagKind};

/// A few seconds of load, one replica killed every two, on SQLite (or on the PostgreSQL server
/// `DATABASE_URL` names, with two replicas): the last line says every check passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_passes_every_check() {
    let mut args = vec![
        "soak",
        "--seconds",
        "6",
        "--kill-every",
        "2",
        "--seed",
        "7",
        "--drain-secs",
        "40",
    ];
    let pg = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"));
    if let Some(url) = &pg {
        args.extend(["--replicas", "2", "--database-url", url.as_str()]);
    }
    let workdir = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_siyu"))
        .args(&args)
        .current_dir(workdir.path())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the soak finishes within 90 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("soak: ") && last.ends_with(" checks passed, 0 failed"),
        "last line {last:?}\n{stdout}\n{stderr}"
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let passed: usize = last
        .trim_start_matches("soak: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(passed >= 10, "{last}");
    assert!(
        stdout.contains("kills: ") && !stdout.contains("kills: 0 "),
        "a replica was killed: {stdout}"
    );
    assert!(stdout.contains("faults injected: errcode"), "{stdout}");
}

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + ms)
}

fn welcome_call(code: &str, ms: u64, errcode: i64) -> Call {
    Call {
        method: "POST".into(),
        path: checks::WELCOME_PATH.into(),
        query: String::new(),
        body: format!(r#"{{"welcome_code":"{code}","text":{{"content":"欢迎"}}}}"#),
        at: at(ms),
        errcode: Some(errcode),
        http_status: 200,
        fault: None,
    }
}

fn welcome(code: &str) -> SentWelcome {
    SentWelcome {
        welcome_code: code.into(),
        external_userid: "wmA".into(),
        userid: "zhangsan".into(),
        text: Some("欢迎".into()),
        attachments: vec![],
        sent_at: 0,
    }
}

fn outcome_of<'a>(outcomes: &'a [checks::Outcome], name: &str) -> &'a checks::Outcome {
    outcomes
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no check named {name:?}"))
}

#[test]
fn a_welcome_code_used_twice_is_reported_with_the_code() {
    let used_once = Snapshot {
        calls: vec![welcome_call("CODE-A", 0, 0), welcome_call("CODE-B", 5, 0)],
        welcomes: vec![welcome("CODE-A"), welcome("CODE-B")],
        ..Snapshot::default()
    };
    assert!(checks::welcome_codes_used_once(&used_once).passed());
    let twice = Snapshot {
        calls: vec![
            welcome_call("CODE-A", 0, 0),
            welcome_call("CODE-A", 2_000, 0),
        ],
        welcomes: vec![welcome("CODE-A"), welcome("CODE-A")],
        ..Snapshot::default()
    };
    let outcomes = checks::run_all(&twice);
    let o = outcome_of(&outcomes, "welcome codes used once");
    assert!(!o.passed());
    assert!(
        o.line()
            .starts_with("check welcome codes used once: FAILED"),
        "{}",
        o.line()
    );
    assert!(
        o.line().contains("welcome code CODE-A: accepted 2 times"),
        "{}",
        o.line()
    );
    assert!(
        o.line().contains("CODE-A: 2 welcomes delivered"),
        "{}",
        o.line()
    );
}

#[test]
fn an_acknowledged_callback_missing_from_the_inbox_is_reported() {
    let s = Snapshot {
        callbacks: vec![SentCallback {
            key: "0123456789abcdef0123".into(),
            kind: "change_external_contact.add_external_contact".into(),
            xml: "<xml/>".into(),
            first_sent: at(0),
            acknowledged: 1,
        }],
        ..Snapshot::default()
    };
    let o = checks::callbacks_stored_and_handled_once(&s);
    assert_eq!(o.problems.len(), 1, "{:?}", o.problems);
    assert!(
        o.problems[0].contains("0123456789abcdef acknowledged 1 time(s) but not in the inbox"),
        "{}",
        o.problems[0]
    );
}

fn tag(kind: TagKind, code: &str, id: &str) -> SiyuTag {
    SiyuTag {
        kind,
        code: code.into(),
        name: code.into(),
        group_name: "g".into(),
        tag_id: Some(id.into()),
        group_id: None,
    }
}

fn relation(tags_at_wecom: &[&str]) -> Relation {
    Relation {
        follow: Follow {
            userid: "zhangsan".into(),
            external_userid: "wmA".into(),
            channel: "douyin".into(),
            state: None,
            add_way: 1,
            added_at: 0,
            remark: String::new(),
            description: String::new(),
            tag_ids: vec![],
            status: FollowStatus::Connected,
            ended_at: None,
            siyu_remark: None,
        },
        customer: CustomerRow {
            external_userid: "wmA".into(),
            name: "王小明".into(),
            tier: "member".into(),
            segment: None,
            channel: "douyin".into(),
            first_added_at: 0,
        },
        at_wecom: Some(FollowView {
            userid: "zhangsan".into(),
            remark: "王小明·抖音".into(),
            description: "d".into(),
            remark_corp_name: String::new(),
            remark_mobiles: vec![],
            remark_pic_mediaid: None,
            tags: tags_at_wecom.iter().map(|t| t.to_string()).collect(),
            add_way: 1,
            oper_userid: "wmA".into(),
            state: None,
            createtime: 0,
            lost: false,
            deleted: false,
        }),
        expected_note: ("王小明·抖音".into(), "d".into()),
    }
}

#[test]
fn a_relation_with_a_siyu_tag_it_should_not_have_is_reported_by_name() {
    let siyu_tags = vec![
        tag(TagKind::Channel, "douyin", "etDouyin"),
        tag(TagKind::Tier, "member", "etMember"),
        tag(TagKind::Tier, "partner", "etPartner"),
    ];
    let right = Snapshot {
        relations: vec![relation(&["etDouyin", "etMember", "etSomeAdminTag"])],
        siyu_tags: siyu_tags.clone(),
        ..Snapshot::default()
    };
    assert!(
        checks::relation_tags(&right).passed(),
        "{:?}",
        checks::relation_tags(&right)
    );
    assert!(checks::relation_notes(&right).passed());
    let stale = Snapshot {
        relations: vec![relation(&["etDouyin", "etMember", "etPartner"])],
        siyu_tags,
        ..Snapshot::default()
    };
    let o = checks::relation_tags(&stale);
    assert_eq!(o.problems.len(), 1, "{:?}", o.problems);
    assert!(
        o.problems[0].starts_with("zhangsan/wmA (channel douyin, tier member"),
        "{}",
        o.problems[0]
    );
}

#[test]
fn a_campaign_task_made_twice_is_reported() {
    let text = "soak test campaign";
    let task = |msgid: &str| MassMessageView {
        msgid: msgid.into(),
        chat_type: "single".into(),
        sender: Some("zhangsan".into()),
        create_time: 0,
        text: Some(text.into()),
        attachments: vec![],
        fail_list: vec![],
        tasks: vec![],
        results: vec![],
        cancelled: false,
        reminders: vec![],
        dispatched_at_ms: 0,
    };
    let campaign = campaign(text, CampaignSendStatus::Tasked, Some("msg1"));
    let once = Snapshot {
        campaigns: vec![campaign.clone()],
        mass_messages: vec![task("msg1")],
        ..Snapshot::default()
    };
    assert!(
        checks::campaign_tasks_once(&once).passed(),
        "{:?}",
        checks::campaign_tasks_once(&once)
    );
    let twice = Snapshot {
        campaigns: vec![campaign],
        mass_messages: vec![task("msg1"), task("msg2")],
        ..Snapshot::default()
    };
    let o = checks::campaign_tasks_once(&twice);
    assert_eq!(o.problems.len(), 1, "{:?}", o.problems);
    assert!(
        o.problems[0].contains(
            "WeCom has 2 single add_msg_template task(s) from zhangsan, siyu's sends say 1"
        ),
        "{}",
        o.problems[0]
    );
}

/// A message campaign of one run with one send from zhangsan to wmA.
fn campaign(text: &str, status: CampaignSendStatus, msgid: Option<&str>) -> Campaign {
    Campaign {
        id: 1,
        kind: "message".into(),
        text: text.into(),
        runs: vec![(
            Run {
                id: 1,
                campaign_id: 1,
                due_at: 0,
                status: RunStatus::Sending,
                audience: 1,
                excluded_cap: 0,
                started_at: Some(0),
                finished_at: None,
                error: None,
            },
            vec![CampaignSend {
                id: 1,
                run_id: 1,
                kind: CampaignSendKind::Template,
                sender: "zhangsan".into(),
                chunk: 0,
                status,
                msgid: msgid.map(Into::into),
                jobid: None,
                moment_id: None,
                recipients: 1,
                error: None,
                created_at: 0,
                tasked_at: Some(0),
                reminded_at: None,
                finished_at: None,
            }],
        )],
        targets: [(1, vec!["wmA".to_owned()])].into(),
    }
}

#[test]
fn a_failed_send_is_reported_unless_every_recipient_has_left_its_sender() {
    let failed = campaign("left", CampaignSendStatus::Failed, None);
    let still_a_customer = Snapshot {
        campaigns: vec![failed.clone()],
        relations: vec![relation(&[])],
        ..Snapshot::default()
    };
    let o = checks::campaign_tasks_once(&still_a_customer);
    assert_eq!(o.problems.len(), 1, "{:?}", o.problems);
    assert!(o.problems[0].contains("failed"), "{}", o.problems[0]);
    let mut gone = relation(&[]);
    gone.at_wecom = None;
    let left = Snapshot {
        campaigns: vec![failed],
        relations: vec![gone],
        ..Snapshot::default()
    };
    let o = checks::campaign_tasks_once(&left);
    assert!(o.passed(), "{:?}", o.problems);
}
