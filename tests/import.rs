//! `siyu import activity`: CSV read as one stream (quoted fields may span lines), and a resume
//! checkpoint keyed on the file's content.

mod common;

use common::world::{World, world};
use serde_json::json;
use sha2::{Digest, Sha256};
use siyu::app::import::{checkpoint_path, import_activity, rejects_path};

/// How many of `items` the API stores anew (0 when the import stored them already).
async fn stored_again(w: &World, items: serde_json::Value) -> u64 {
    let (status, body) = w.post("/activity", json!({ "items": items })).await;
    assert_eq!(status, 200, "{body}");
    body["stored"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quoted_field_spanning_lines_is_one_record() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("orders.csv");
    std::fs::write(
        &csv,
        "kind,customer,amount,count,at,id\n\
         order,shop-1,10.00,,2026-11-20T10:00:00+08:00,\"multi\nline, with a comma\"\n\
         order,shop-1,20.00,,2026-11-20T10:00:00+08:00,m-2\n\
         order,shop-1,1.234,,2026-11-20T10:00:00+08:00,m-3\n",
    )
    .unwrap();
    let s = import_activity(w.app.services(), &csv, false)
        .await
        .unwrap();
    assert_eq!((s.lines, s.stored, s.rejected), (3, 2, 1), "{s:?}");
    let rejects = std::fs::read_to_string(rejects_path(&csv)).unwrap();
    assert!(
        rejects.contains("\"line\":5") && rejects.contains("two decimals"),
        "the bad record starts on line 5 of the file: {rejects}"
    );
    // The id kept its line break and its comma: the same record through the API is a duplicate.
    let item = json!([{"kind": "order", "customer": "shop-1", "amount": "10.00",
        "at": "2026-11-20T10:00:00+08:00", "id": "multi\nline, with a comma"}]);
    assert_eq!(stored_again(&w, item).await, 0);
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_resumes_only_the_content_it_was_written_for() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("orders.csv");
    let header = "kind,customer,amount,count,at,id\n";
    let rows = |tag: &str| {
        [
            format!("order,shop-1,1.00,,2026-11-20T10:00:00+08:00,{tag}-1\n"),
            format!("order,shop-1,2.00,,2026-11-20T10:00:00+08:00,{tag}-2\n"),
            format!("order,shop-1,3.00,,2026-11-20T10:00:00+08:00,{tag}-3\n"),
            format!("order,shop-1,4.005,,2026-11-20T10:00:00+08:00,{tag}-4\n"),
        ]
    };
    let text = |tag: &str| header.to_string() + &rows(tag).concat();
    let (a, b) = (text("a"), text("b"));
    assert_eq!(a.len(), b.len(), "same size, other content");

    // A run over `a` stopped after committing its first two records.
    let checkpoint = json!({
        "offset": header.len() + rows("a")[0].len() + rows("a")[1].len(),
        "size": a.len(),
        "sha256": hex::encode(Sha256::digest(a.as_bytes())),
        "line": 4,
        "summary": {"lines": 2, "stored": 2, "duplicates": 0, "rejected": 0},
    });
    std::fs::write(&csv, &a).unwrap();
    std::fs::write(checkpoint_path(&csv), checkpoint.to_string()).unwrap();
    let s = import_activity(w.app.services(), &csv, false)
        .await
        .unwrap();
    assert!(s.resumed, "the same content resumes");
    assert_eq!((s.lines, s.stored, s.rejected), (4, 3, 1), "{s:?}");
    let rejects = std::fs::read_to_string(rejects_path(&csv)).unwrap();
    assert!(rejects.contains("\"line\":5"), "{rejects}");
    let skipped = json!([{"kind": "order", "customer": "shop-1", "amount": "1.00",
        "at": "2026-11-20T10:00:00+08:00", "id": "a-1"}]);
    assert_eq!(
        stored_again(&w, skipped).await,
        1,
        "a-1 was skipped by the resume"
    );

    // The same checkpoint beside a file of the same size with other content: read from the start.
    std::fs::write(&csv, &b).unwrap();
    std::fs::write(checkpoint_path(&csv), checkpoint.to_string()).unwrap();
    let s = import_activity(w.app.services(), &csv, false)
        .await
        .unwrap();
    assert!(!s.resumed, "another content is not resumed");
    assert_eq!((s.lines, s.stored, s.rejected), (4, 3, 1), "{s:?}");
    let first = json!([{"kind": "order", "customer": "shop-1", "amount": "1.00",
        "at": "2026-11-20T10:00:00+08:00", "id": "b-1"}]);
    assert_eq!(stored_again(&w, first).await, 0, "b-1 was imported");
    assert!(!checkpoint_path(&csv).exists());
    w.app.shutdown().await;
}
