//! `siyu demo` from the real binary: the scenario plays through the fake WeCom and every event
//! lands in siyu's inbox; the tier groups invite the promoted, see them join, and ask their owner
//! to remove the demoted; an image in the media library goes out in a Moments post for partners
//! and a mass message for senior partners, and their results come back.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plays_its_scenario_and_exits_cleanly() {
    let workdir = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_siyu"))
            .args([
                "demo",
                "--no-wait",
                "--listen",
                "127.0.0.1:0",
                "--fake-listen",
                "127.0.0.1:0",
            ])
            .current_dir(workdir.path())
            // Info logs go to the demo's log file, not between the story's lines.
            .env("RUST_LOG", "info")
            .output(),
    )
    .await
    .expect("the demo finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for step in [
        "the operator created the channel 抖音 (douyin)",
        "王小明 scanned the 抖音 code and added zhangsan",
        "zhangsan sees: tags 抖音、短视频、普通会员",
        "remark 「王小明·抖音」 description 「普通会员｜抖音｜",
        "the customer got the welcome message 「王小明，欢迎从抖音来！",
        "陈静 scanned the 小红书 code and added lisi",
        "zhangsan sees: tags 未归因、普通会员",
        "王小明\n      等级：普通会员",
        "zhangsan sees: tags 短视频、普通会员、抖音",
        "to lisi|operator: 客户「陈静」（小红书）删除了lisi。",
        "王小明 was promoted 普通会员 → 合作伙伴",
        "zhangsan sees: tags 短视频、抖音、合作伙伴",
        "description 「合作伙伴｜抖音｜",
        "zhangsan sees: tags 未归因、高级合作伙伴",
        "the nightly evaluation changed 0 tiers (grace period)",
        "senior_partner → partner (failed keep of senior_partner for 31 days",
        "zhangsan sees: tags 未归因、合作伙伴",
        "to zhangsan: 客户「",
        "xiaohongshu  小红书      added 1  connected 0  lost 1",
        // Four group changes (two joins, two removals) join the six contact and message events.
        "siyu's inbox holds 10 events",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in\n{stdout}");
    }
    // The console's sign-in is printed, and the demo checked it against its own data.
    let console = stdout
        .lines()
        .find(|l| l.contains("/console/   user demo   password "))
        .unwrap_or_else(|| panic!("no console sign-in in\n{stdout}"));
    let password = console.rsplit(' ').next().unwrap();
    assert_eq!(password.len(), 16, "{console}");
    let shown: i64 = stdout
        .split("(checked: the sign-in works and the dashboard shows ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no console check in\n{stdout}"));
    assert!(
        shown > 0,
        "the dashboard shows the demo's customers: {shown}"
    );
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert!(
        !stderr.contains(" INFO "),
        "info logs on the terminal: {stderr}"
    );
    let log = stdout
        .lines()
        .take(6)
        .find_map(|l| l.trim().strip_prefix("logs"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(std::path::PathBuf::from)
        .expect("the first lines name the log file");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        logged.contains(" INFO "),
        "the log file has the logs: {logged}"
    );

    // The tier groups, in the order the story tells them.
    let groups_story = [
        "the operator gave the upper tiers their customer groups by PUT /api/v1/tier-groups/{tier}",
        "合作伙伴 (partner) → 「合作伙伴交流群」 (owner wangwu, admin operator): join way QR code http://",
        "高级合作伙伴 (senior_partner) → 「高级合作伙伴尊享群」",
        "王小明 was promoted 普通会员 → 合作伙伴",
        "one mass-message task per tier (add_msg_template)",
        "from zhangsan to 王小明: 「恭喜您成为合作伙伴！长按识别图中二维码",
        "+ image partner-qr.png (67 bytes): the tier's join QR code",
        "GET /api/v1/tier-groups/partner/members: 王小明 invited (invitation tasked)",
        "zhangsan confirmed both tasks in the client",
        "王小明: invitation to partner delivered",
        "GET /api/v1/tier-groups/partner/members: 王小明 joined 「合作伙伴交流群」",
        "GET /api/v1/tier-groups/senior_partner/members: 路人甲 joined 「高级合作伙伴尊享群」",
        "senior_partner → partner (failed keep of senior_partner",
        "into one app message to the groups' owner and admins",
        "to wangwu|operator:",
        "wangwu，请把以下客户移出群聊",
        "- 路人甲：高级合作伙伴→合作伙伴",
        "GET /api/v1/tier-groups/senior_partner/members: 路人甲 removal_requested",
        "路人甲, now a 合作伙伴 in none of its groups, is invited to it",
        "wangwu removed them in the client",
        "路人甲: the removal from 「高级合作伙伴尊享群」 is done",
        "王小明: the removal from 「合作伙伴交流群」 is done",
        "已请群主把客户「路人甲」移出「高级合作伙伴尊享群」",
        "Tier groups (GET /api/v1/tier-groups",
    ];
    let mut from = 0;
    for line in groups_story {
        let Some(at) = stdout[from..].find(line) else {
            panic!("missing {line:?} after byte {from} in\n{stdout}");
        };
        from += at + line.len();
    }
    assert!(
        stdout.contains("/fake/qr/"),
        "the join way's QR link is the fake's PNG: {stdout}"
    );
    assert_eq!(
        stdout.matches("to wangwu|operator:").count(),
        1,
        "the owner is asked once, and that message is not shown again: {stdout}"
    );

    // The campaigns, after the tier groups and before the churn, in the order the story tells them.
    let campaigns_story = [
        "王小明: the removal from 「合作伙伴交流群」 is done",
        "the operator pinned 王小明 and 陈静 to 高级合作伙伴 by PUT /api/v1/customers/{id}/pin",
        "路人甲 is still a 合作伙伴",
        "the operator uploaded a poster to the media library by POST /api/v1/media: id 1, kind image, 74 bytes (new-arrivals.png, image/png",
        "by POST /api/v1/campaigns/preview: 2 customers now (lisi 1, zhangsan 1), 0 left out by the cap",
        "the operator scheduled two campaigns by POST /api/v1/campaigns, 5 s ahead on the demo's clock",
        "campaign 1: moment 「合作伙伴新品朋友圈」 for partner, text and image 1, scheduled (next run 20",
        "campaign 2: message 「高级合作伙伴新品专享」 for senior_partner, text and image 1, scheduled",
        "the demo moved its clock 5 s on: both runs fell due",
        "add_moment_task from zhangsan: 「新品上市：合作伙伴专享试用装",
        "sender_list zhangsan; external_contact_list.tag_list 合作伙伴 (",
        "+ image new-arrivals.png (74 bytes): media library item 1, uploaded with media/upload_attachment (attachment_type 1)",
        "add_msg_template from lisi to 陈静: 「尊敬的高级合作伙伴：新品已到",
        "+ image new-arrivals.png (74 bytes): media library item 1, ",
        "add_msg_template from zhangsan to 王小明: 「尊敬的高级合作伙伴：新品已到",
        "+ image new-arrivals.png (74 bytes): media library item 1, ",
        "siyu polled get_moment_task_result until WeCom had made the post: moment_id mom",
        "zhangsan published the post in the client, and lisi and zhangsan confirmed their messages",
        "GET /api/v1/campaigns/1: moment done; its run: audience 1, excluded_cap 0, totals published 1; moment_id mom",
        "GET /api/v1/campaigns/2: message done; its run: audience 2, excluded_cap 0, totals delivered 2; msgid ",
        "(lisi, sent), msgid ",
        "(zhangsan, sent)",
        "陈静 deleted 李四: churn",
        // The churn notice tells only the churn: the pins' news went out before it.
        "to lisi|operator: 客户「陈静」（小红书）删除了lisi。\n",
        "to lisi: 客户「陈静」等级变化：普通会员 → 高级合作伙伴",
    ];
    let mut from = 0;
    for line in campaigns_story {
        let Some(at) = stdout[from..].find(line) else {
            panic!("missing {line:?} after byte {from} in\n{stdout}");
        };
        from += at + line.len();
    }
    assert!(
        stdout.contains("/api/v1/campaigns\n"),
        "Look around names the campaigns: {stdout}"
    );
    // The moment_id siyu learned is the one the results show.
    let moment_id = |after: &str| {
        let at = stdout.find(after).unwrap() + after.len();
        stdout[at..]
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        moment_id("until WeCom had made the post: moment_id "),
        moment_id("totals published 1; moment_id "),
        "{stdout}"
    );

    // The welcome line comes with the two adds whose channel has a welcome, and nowhere else.
    let welcome = "the customer got the welcome message";
    assert_eq!(stdout.matches(welcome).count(), 2, "{stdout}");
    for (step, next) in [
        (
            "王小明 scanned the 抖音 code",
            "陈静 scanned the 小红书 code",
        ),
        (
            "陈静 scanned the 小红书 code",
            "路人甲 scanned an old poster",
        ),
    ] {
        let from = stdout.find(step).unwrap();
        let to = stdout.find(next).unwrap();
        assert!(
            stdout[from..to].contains(welcome),
            "no welcome under {step:?}: {stdout}"
        );
    }
}
