//! The media library end to end against the fake WeCom: uploads checked against WeCom's limits
//! (by content, not by name), the list and one item, and the WeCom media_ids made from an item:
//! uploaded once, reused while more than `media.margin_hours` of their 3 days are left, uploaded
//! again after; `media/upload` for messages, `media/upload_attachment` for Moments.

mod common;

use std::time::Duration;

use common::world::{World, world, world_with};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use sha2::{Digest, Sha256};
use siyu::app::AppError;
use siyu::app::media::{self, WecomUpload};

const HOUR_MS: i64 = 3_600_000;
const MB: usize = 1024 * 1024;
const UPLOAD: &str = "/cgi-bin/media/upload";
const ATTACHMENT: &str = "/cgi-bin/media/upload_attachment";

fn png(len: usize) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    b.resize(len, 7);
    b
}

fn jpg(len: usize) -> Vec<u8> {
    let mut b = b"\xff\xd8\xff\xe0\0\x10JFIF\0".to_vec();
    b.resize(len, 7);
    b
}

fn mp4(len: usize) -> Vec<u8> {
    let mut b = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2mp41".to_vec();
    b.resize(len, 7);
    b
}

fn file(name: &str, bytes: Vec<u8>) -> Part {
    Part::bytes(bytes).file_name(name.to_owned())
}

async fn upload(w: &World, form: Form) -> (u16, Value) {
    let r = w
        .http
        .post(w.api("/media"))
        .bearer_auth(siyu::testkit::API_TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Uploads a file that must be taken; answers the item.
async fn stored(w: &World, form: Form) -> Value {
    let (status, body) = upload(w, form).await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn refused(w: &World, form: Form) -> String {
    let (status, body) = upload(w, form).await;
    assert_eq!(status, 400, "{body}");
    body["error"].as_str().unwrap().to_owned()
}

/// Moves siyu's clock and the fake's together.
fn advance(w: &World, ms: i64) {
    w.app.clock().advance(ms);
    w.fake.advance_clock(Duration::from_millis(ms as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_keeps_images_videos_and_files_named_by_their_content() {
    let w = world().await;
    let png_bytes = png(2048);
    let poster = stored(
        &w,
        Form::new().part("file", file("poster.png", png_bytes.clone())),
    )
    .await;
    assert_eq!(poster["filename"], "poster.png");
    assert_eq!(poster["kind"], "image");
    assert_eq!(poster["content_type"], "image/png");
    assert_eq!(poster["size"], 2048);
    assert_eq!(poster["sha256"], hex::encode(Sha256::digest(&png_bytes)));
    assert!(poster["created_at"].is_i64());
    assert!(poster.get("bytes").is_none(), "{poster}");

    let photo = stored(&w, Form::new().part("file", file("photo", jpg(1000)))).await;
    assert_eq!(photo["kind"], "image");
    assert_eq!(photo["content_type"], "image/jpeg");

    // The kind may be asked for, and agrees with the content.
    let clip = stored(
        &w,
        Form::new()
            .text("kind", "video")
            .part("file", file("clip.mp4", mp4(4096))),
    )
    .await;
    assert_eq!(clip["kind"], "video");
    assert_eq!(clip["content_type"], "video/mp4");

    // A name is no content: a text file called .png is a file.
    let text = b"price list: 10 yuan".to_vec();
    let notes = stored(
        &w,
        Form::new().part(
            "file",
            file("fake.png", text.clone())
                .mime_str("text/plain")
                .unwrap(),
        ),
    )
    .await;
    assert_eq!(notes["kind"], "file");
    assert_eq!(notes["content_type"], "text/plain");
    assert_eq!(notes["size"], text.len());

    // Newest first, without bytes.
    let list = w.get("/media").await;
    let ids: Vec<&Value> = list["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(
        ids,
        [&notes["id"], &clip["id"], &photo["id"], &poster["id"]]
    );
    assert!(list["media"][0].get("bytes").is_none());

    let one = w.get(&format!("/media/{}", clip["id"])).await;
    assert_eq!(one, clip);
    for missing in ["/media/999999", "/media/nope"] {
        let r = w
            .http
            .get(w.api(missing))
            .bearer_auth(siyu::testkit::API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{missing}");
    }
    let item = media::item(w.app.services(), poster["id"].as_i64().unwrap())
        .await
        .unwrap();
    assert_eq!(item.kind, media::MediaKind::Image);
    assert!(matches!(
        media::item(w.app.services(), 999_999).await,
        Err(AppError::NotFound(_))
    ));
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_wecom_would_refuse_is_a_400_naming_the_limit_and_nothing_is_kept() {
    let w = world().await;
    let e = refused(
        &w,
        Form::new().part("file", file("tiny.txt", b"12345".to_vec())),
    )
    .await;
    assert!(e.contains("5 bytes"), "{e}");

    let e = refused(&w, Form::new().part("file", file("big.png", png(11 * MB)))).await;
    assert_eq!(e, "file: 11534336 bytes; WeCom takes images up to 10 MB");
    let e = refused(
        &w,
        Form::new().part("file", file("big.mp4", mp4(10 * MB + 1))),
    )
    .await;
    assert!(e.contains("videos up to 10 MB"), "{e}");
    let e = refused(
        &w,
        Form::new().part("file", file("huge.bin", vec![1; 20 * MB + 1])),
    )
    .await;
    assert!(e.contains("files up to 20 MB"), "{e}");

    let e = refused(
        &w,
        Form::new()
            .text("kind", "image")
            .part("file", file("photo.png", b"not a picture at all".to_vec())),
    )
    .await;
    assert!(
        e.starts_with("kind: image") && e.contains("JPG or PNG"),
        "{e}"
    );
    let e = refused(
        &w,
        Form::new()
            .text("kind", "video")
            .part("file", file("clip.mp4", png(100))),
    )
    .await;
    assert!(e.contains("MP4"), "{e}");
    let e = refused(
        &w,
        Form::new()
            .text("kind", "voice")
            .part("file", file("a.amr", png(100))),
    )
    .await;
    assert!(e.starts_with("kind:"), "{e}");

    let e = refused(&w, Form::new().text("kind", "image")).await;
    assert!(e.starts_with("file: missing"), "{e}");
    let r = w
        .http
        .post(w.api("/media"))
        .bearer_auth(siyu::testkit::API_TOKEN)
        .json(&serde_json::json!({"file": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());

    // No token, no upload.
    let r = w
        .http
        .post(w.api("/media"))
        .multipart(Form::new().part("file", file("poster.png", png(100))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = w.http.get(w.api("/media")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    assert_eq!(w.get("/media").await["media"], serde_json::json!([]));

    // An image over 10 MB may still be kept as a file (over axum's 2 MB default body limit),
    // while the rest of the API keeps the server's limit.
    let big = stored(
        &w,
        Form::new()
            .text("kind", "file")
            .part("file", file("big.png", png(11 * MB))),
    )
    .await;
    assert_eq!(big["kind"], "file");
    let r = w
        .http
        .post(w.api("/activity"))
        .bearer_auth(siyu::testkit::API_TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; 3 * MB])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("length limit"),
        "{body}"
    );
    w.app.shutdown().await;
}

/// The queries of the calls to `path` (one per upload).
fn queries(w: &World, path: &str) -> Vec<String> {
    w.fake.calls_to(path).into_iter().map(|c| c.query).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_is_uploaded_to_wecom_once_and_again_before_its_3_days_run_out() {
    let w = world().await;
    let s = w.app.services();
    // Named without an extension: WeCom is given the content's.
    let poster = stored(&w, Form::new().part("file", file("poster", png(2048)))).await;
    let id = poster["id"].as_i64().unwrap();

    let first = media::media_item_media_id(s, id, WecomUpload::Upload)
        .await
        .unwrap();
    let calls = w.fake.calls_to(UPLOAD);
    assert_eq!(calls.len(), 1);
    assert!(calls[0].query.contains("type=image"), "{}", calls[0].query);
    assert!(calls[0].body.contains("poster.png"), "{}", calls[0].body);
    let again = media::media_item_media_id(s, id, WecomUpload::Upload)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(w.fake.calls_to(UPLOAD).len(), 1, "reused");

    // Just more than the 12 hours' margin left: still reused.
    advance(&w, 60 * HOUR_MS - 60_000);
    let still = media::media_item_media_id(s, id, WecomUpload::Upload)
        .await
        .unwrap();
    assert_eq!(still, first);
    assert_eq!(w.fake.calls_to(UPLOAD).len(), 1);

    // Less than that: uploaded again, and the new id reused from then on.
    advance(&w, 120_000);
    let second = media::media_item_media_id(s, id, WecomUpload::Upload)
        .await
        .unwrap();
    assert_ne!(second, first);
    assert_eq!(w.fake.calls_to(UPLOAD).len(), 2);
    let same = media::media_item_media_id(s, id, WecomUpload::Upload)
        .await
        .unwrap();
    assert_eq!(same, second);

    // After WeCom answers 40007 the id is forgotten: the next use uploads again.
    media::forget_item_media_id(s, id, WecomUpload::Upload)
        .await
        .unwrap();
    let third = media::media_item_media_id(s, id, WecomUpload::Upload)
        .await
        .unwrap();
    assert_ne!(third, second);
    assert_eq!(w.fake.calls_to(UPLOAD).len(), 3);

    let missing = media::media_item_media_id(s, 999_999, WecomUpload::Upload).await;
    assert!(matches!(missing, Err(AppError::NotFound(_))), "{missing:?}");
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moments_take_their_own_upload_of_images_and_videos_only() {
    let w = world().await;
    let s = w.app.services();
    let poster = stored(&w, Form::new().part("file", file("poster.png", png(2048)))).await;
    let clip = stored(&w, Form::new().part("file", file("clip.mp4", mp4(4096)))).await;
    let notes = stored(
        &w,
        Form::new().part("file", file("notes.txt", b"hello world".to_vec())),
    )
    .await;
    let (poster, clip, notes) = (
        poster["id"].as_i64().unwrap(),
        clip["id"].as_i64().unwrap(),
        notes["id"].as_i64().unwrap(),
    );

    let for_message = media::media_item_media_id(s, poster, WecomUpload::Upload)
        .await
        .unwrap();
    let for_moment = media::media_item_media_id(s, poster, WecomUpload::MomentAttachment)
        .await
        .unwrap();
    assert_ne!(
        for_moment, for_message,
        "the ids of one API are not valid in the other"
    );
    let attachments = queries(&w, ATTACHMENT);
    assert_eq!(attachments.len(), 1);
    assert!(
        attachments[0].contains("media_type=image") && attachments[0].contains("attachment_type=1"),
        "{attachments:?}"
    );
    assert_eq!(
        media::media_item_media_id(s, poster, WecomUpload::MomentAttachment)
            .await
            .unwrap(),
        for_moment
    );
    assert_eq!(queries(&w, ATTACHMENT).len(), 1, "reused");
    assert_eq!(queries(&w, UPLOAD).len(), 1);

    media::media_item_media_id(s, clip, WecomUpload::MomentAttachment)
        .await
        .unwrap();
    let attachments = queries(&w, ATTACHMENT);
    assert_eq!(attachments.len(), 2);
    assert!(
        attachments[1].contains("media_type=video"),
        "{attachments:?}"
    );

    // A file goes in messages, not in Moments; WeCom is not asked.
    let refused = media::media_item_media_id(s, notes, WecomUpload::MomentAttachment).await;
    assert!(matches!(refused, Err(AppError::Invalid(_))), "{refused:?}");
    assert_eq!(queries(&w, ATTACHMENT).len(), 2);
    media::media_item_media_id(s, notes, WecomUpload::Upload)
        .await
        .unwrap();
    assert!(queries(&w, UPLOAD)[1].contains("type=file"));
    w.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_margin_is_the_media_setting() {
    let w = world_with(|s| s.media.margin_hours = 30).await;
    let s = w.app.services();
    let poster = stored(&w, Form::new().part("file", file("poster.png", png(2048)))).await;
    let id = poster["id"].as_i64().unwrap();
    let first = media::media_item_media_id(s, id, WecomUpload::Upload)
        .await
        .unwrap();
    advance(&w, 42 * HOUR_MS - 60_000);
    assert_eq!(
        media::media_item_media_id(s, id, WecomUpload::Upload)
            .await
            .unwrap(),
        first
    );
    advance(&w, 120_000);
    assert_ne!(
        media::media_item_media_id(s, id, WecomUpload::Upload)
            .await
            .unwrap(),
        first
    );
    assert_eq!(w.fake.calls_to(UPLOAD).len(), 2);
    w.app.shutdown().await;
}
