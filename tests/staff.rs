//! A member asking the siyu app about customers: the list answer tells the true number of
//! matches and shows the first ten.

mod common;

use common::world::world;

/// Verifies and decrypts a passive reply as WeCom does; returns its Content.
fn open_reply(body: &str) -> String {
    let xml = common::crypto()
        .open_passive_reply(body)
        .expect("the reply verifies and decrypts");
    match siyu::wecom::event::parse(&xml).unwrap() {
        siyu::wecom::event::Event::Text { content, .. } => content,
        other => panic!("not a text reply: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_matches_answer_the_true_total_and_list_the_first_ten() {
    let w = world().await;
    w.channels().await;
    // 13 customers of zhangsan's (抖音) and 2 of lisi's (小红书) match 「王」.
    for i in 1..=13 {
        w.add("douyin", &format!("王客户{i:02}")).await;
    }
    for i in 1..=2 {
        w.add("xiaohongshu", &format!("王顾客{i}")).await;
    }
    w.add("douyin", "李四海").await;
    let driver = w.fake.driver();

    let list = open_reply(&driver.staff_sends_text("zhangsan", "查 王").await.unwrap());
    assert!(
        list.contains("找到 13 位客户（显示前 10 位）"),
        "zhangsan sees his 13, not lisi's: {list}"
    );
    let listed: Vec<&str> = list.lines().filter(|l| l.contains("｜")).collect();
    assert_eq!(listed.len(), 10, "{list}");
    assert!(
        listed[0].starts_with("1. 王客户01") && listed[9].starts_with("10. 王客户10"),
        "the first ten by name: {list}"
    );
    assert!(
        !list.contains("王顾客") && !list.contains("李四海"),
        "{list}"
    );

    // Ten or fewer: the count is the list, with nothing left out.
    let list = open_reply(&driver.staff_sends_text("lisi", "查 王").await.unwrap());
    assert!(list.contains("找到 2 位客户："), "{list}");
    assert!(!list.contains("显示前"), "{list}");
    w.app.shutdown().await;
}
