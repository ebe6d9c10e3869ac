//! `siyu demo` from the real binary: the scenario plays through the fake WeCom and every event
//! lands in siyu's inbox.

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
            .env("RUST_LOG", "warn")
            .output(),
    )
    .await
    .expect("the demo finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for step in [
        "created the tag group 渠道",
        "created the 抖音 channel's QR code",
        "王小明 scanned the 抖音 code and added zhangsan",
        "陈静 scanned the 小红书 code and added lisi",
        "siyu's inbox holds 6 events",
        "change_external_contact.del_follow_user",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in\n{stdout}");
    }
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
