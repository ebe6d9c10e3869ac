//! siyu's media library and the WeCom media_ids made from it.
//!
//! Operators upload images, videos and files once (`POST /api/v1/media`); siyu keeps the bytes
//! and checks WeCom's limits at upload (api.md §10.1, §10.2: every file more than 5 bytes; images
//! JPG or PNG up to 10 MB; videos MP4 up to 10 MB; files up to 20 MB), so that a campaign never
//! learns of a bad file at send time. A message or a Moments post needs a WeCom media_id, which
//! lives 3 days: [`wecom_media_id`] reuses the one uploaded before while more than
//! `media.margin_hours` of it are left, else uploads again (`media/upload` for messages,
//! `media/upload_attachment` for Moments; the ids of one are not valid in the other).

use std::future::Future;

use sha2::{Digest, Sha256};

use crate::app::{AppError, Services};
use crate::store::media::NewMediaItem;
pub use crate::store::media::{MediaItem, MediaKind, WecomUpload};
use crate::wecom::client::{WecomError, code};

const MB: usize = 1024 * 1024;
/// WeCom refuses files of this many bytes or fewer.
pub const MIN_BYTES: usize = 5;
/// The largest image and video WeCom takes.
pub const MAX_IMAGE_BYTES: usize = 10 * MB;
pub const MAX_VIDEO_BYTES: usize = 10 * MB;
/// The largest file WeCom takes (the largest upload there is).
pub const MAX_FILE_BYTES: usize = 20 * MB;
/// A WeCom media_id lives 3 days.
pub const MEDIA_LIFETIME_MS: i64 = 3 * 24 * 3600 * 1000;
const HOUR_MS: i64 = 3600 * 1000;

/// A file an operator uploads to the library.
#[derive(Debug, Clone)]
pub struct NewUpload {
    /// The name WeCom will show (a path is cut to its last part).
    pub filename: String,
    /// The Content-Type the client gave, if any (used for files; images and videos are named
    /// by their content).
    pub content_type: Option<String>,
    /// What the operator asks it to be; inferred from the content when None.
    pub kind: Option<MediaKind>,
    pub bytes: Vec<u8>,
}

/// `kind` as the operator wrote it, or a 400 naming the choices.
pub fn parse_kind(text: &str) -> Result<MediaKind, AppError> {
    MediaKind::parse(text.trim()).ok_or_else(|| {
        AppError::Invalid(format!(
            "kind: {text:?} is not one of image, video, file (WeCom's voice messages are not \
             in the library)"
        ))
    })
}

/// What the content is: a JPG or PNG image, an MP4 video, else nothing known.
fn sniff(bytes: &[u8]) -> Option<(MediaKind, &'static str)> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    const JPG: &[u8] = b"\xff\xd8\xff";
    if bytes.starts_with(PNG) {
        Some((MediaKind::Image, "image/png"))
    } else if bytes.starts_with(JPG) {
        Some((MediaKind::Image, "image/jpeg"))
    } else if bytes.get(4..8) == Some(b"ftyp") {
        Some((MediaKind::Video, "video/mp4"))
    } else {
        None
    }
}

/// Checks a file against WeCom's limits for the kind asked (or inferred): its kind and content
/// type, or a 400 naming the limit.
pub fn check(
    bytes: &[u8],
    asked: Option<MediaKind>,
) -> Result<(MediaKind, Option<&'static str>), AppError> {
    let size = bytes.len();
    if size <= MIN_BYTES {
        return Err(AppError::Invalid(format!(
            "file: {size} bytes; WeCom takes files of more than {MIN_BYTES} bytes"
        )));
    }
    let sniffed = sniff(bytes);
    let kind = match (asked, sniffed.map(|(kind, _)| kind)) {
        (None, inferred) => inferred.unwrap_or(MediaKind::File),
        (Some(MediaKind::File), _) => MediaKind::File,
        (Some(asked), Some(found)) if asked == found => asked,
        (Some(MediaKind::Image), _) => {
            return Err(AppError::Invalid(
                "kind: image asked, but file is not a JPG or PNG (WeCom takes images as JPG or \
                 PNG only)"
                    .into(),
            ));
        }
        (Some(MediaKind::Video), _) => {
            return Err(AppError::Invalid(
                "kind: video asked, but file is not an MP4 (no ftyp box at offset 4; WeCom takes \
                 videos as MP4 only)"
                    .into(),
            ));
        }
    };
    let (limit, what) = match kind {
        MediaKind::Image => (MAX_IMAGE_BYTES, "images"),
        MediaKind::Video => (MAX_VIDEO_BYTES, "videos"),
        MediaKind::File => (MAX_FILE_BYTES, "files"),
    };
    if size > limit {
        return Err(AppError::Invalid(format!(
            "file: {size} bytes; WeCom takes {what} up to {} MB",
            limit / MB
        )));
    }
    Ok((kind, sniffed.map(|(_, content_type)| content_type)))
}

/// Stores a file in the library after checking it against WeCom's limits.
pub async fn upload(s: &Services, upload: NewUpload) -> Result<MediaItem, AppError> {
    let filename = upload
        .filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if filename.is_empty() {
        return Err(AppError::Invalid(
            "file: the part needs a filename (WeCom shows it)".into(),
        ));
    }
    let (kind, sniffed) = check(&upload.bytes, upload.kind)?;
    let content_type = sniffed
        .map(str::to_owned)
        .or(upload
            .content_type
            .filter(|t| t.contains('/') && !t.trim().is_empty()))
        .unwrap_or_else(|| "application/octet-stream".into());
    let sha256 = hex::encode(Sha256::digest(&upload.bytes));
    let item = s
        .store
        .insert_media_item(&NewMediaItem {
            filename: &filename,
            kind,
            content_type: &content_type,
            sha256: &sha256,
            bytes: &upload.bytes,
            created_at: s.clock.now_ms(),
        })
        .await?;
    tracing::info!(id = item.id, kind = %kind, size = item.size, "media item stored");
    Ok(item)
}

/// Every library item, newest first.
pub async fn list(s: &Services) -> Result<Vec<MediaItem>, AppError> {
    Ok(s.store.media_items().await?)
}

/// A library item (its metadata); `NotFound` when there is none of that id.
pub async fn item(s: &Services, id: i64) -> Result<MediaItem, AppError> {
    s.store
        .media_item(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no media item {id}")))
}

/// The `wecom_media` source of a library item.
pub fn item_source(item_id: i64) -> String {
    format!("media:{item_id}")
}

/// A WeCom media_id for what `source` names, uploaded through `api` as `kind`: the one uploaded
/// before while it has more than `media.margin_hours` of its 3 days left, else `bytes()` is
/// loaded, uploaded and recorded. Moments take images and videos only.
pub async fn wecom_media_id<F, Fut>(
    s: &Services,
    source: &str,
    api: WecomUpload,
    kind: MediaKind,
    filename: &str,
    bytes: F,
) -> Result<String, AppError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<u8>, AppError>>,
{
    if api == WecomUpload::MomentAttachment && kind == MediaKind::File {
        return Err(AppError::Invalid(format!(
            "{filename}: WeCom's Moments take images and videos only, not files"
        )));
    }
    // One upload at a time in this process: sends of one run (one per member) need the same
    // file at once, and each would otherwise find no media_id and upload it again. (Replicas may
    // still each upload once; harmless, the last one recorded wins.)
    static UPLOADS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = UPLOADS.lock().await;
    let now = s.clock.now_ms();
    let margin = i64::try_from(s.settings.media.margin_hours).unwrap_or(i64::MAX / 2) * HOUR_MS;
    if let Some((media_id, uploaded_at)) = s.store.wecom_media(source, api.as_str()).await?
        && uploaded_at.saturating_add(MEDIA_LIFETIME_MS - margin) > now
    {
        return Ok(media_id);
    }
    let bytes = bytes().await?;
    let uploaded = match api {
        WecomUpload::Upload => s.wecom.upload_media(kind.as_str(), filename, bytes).await?,
        WecomUpload::MomentAttachment => {
            s.wecom
                .upload_moment_attachment(kind.as_str(), filename, bytes)
                .await?
        }
    };
    // When the upload began: the id is reused no longer than WeCom keeps it.
    s.store
        .save_wecom_media(source, api.as_str(), &uploaded.media_id, now)
        .await?;
    tracing::info!(%source, api = %api, "media uploaded to WeCom");
    Ok(uploaded.media_id)
}

/// A WeCom media_id for a library item (see [`wecom_media_id`]); `NotFound` when there is no
/// such item.
pub async fn media_item_media_id(
    s: &Services,
    item_id: i64,
    api: WecomUpload,
) -> Result<String, AppError> {
    let media = item(s, item_id).await?;
    let filename = wecom_filename(&media);
    wecom_media_id(
        s,
        &item_source(item_id),
        api,
        media.kind,
        &filename,
        || async move {
            s.store
                .media_item_bytes(item_id)
                .await?
                .ok_or_else(|| AppError::NotFound(format!("no media item {item_id}")))
        },
    )
    .await
}

/// Forgets the media_id uploaded from `source` through `api` (WeCom answered 40007, it is not
/// valid any more): the next [`wecom_media_id`] uploads again.
pub async fn forget_media_id(s: &Services, source: &str, api: WecomUpload) -> Result<(), AppError> {
    Ok(s.store.forget_wecom_media(source, api.as_str()).await?)
}

/// [`forget_media_id`] of a library item.
pub async fn forget_item_media_id(
    s: &Services,
    item_id: i64,
    api: WecomUpload,
) -> Result<(), AppError> {
    forget_media_id(s, &item_source(item_id), api).await
}

/// WeCom refused a media_id as not valid (40007): forget it and upload again.
pub fn is_invalid_media(e: &WecomError) -> bool {
    e.errcode() == Some(code::INVALID_MEDIA)
}

/// The name an item is uploaded to WeCom under: its own, with the extension its content has
/// when the name lacks it (WeCom reads the type from the name too).
fn wecom_filename(item: &MediaItem) -> String {
    let extensions: &[&str] = match item.content_type.as_str() {
        "image/png" => &["png"],
        "image/jpeg" => &["jpg", "jpeg"],
        "video/mp4" => &["mp4"],
        _ => return item.filename.clone(),
    };
    let has = item
        .filename
        .rsplit_once('.')
        .is_some_and(|(_, ext)| extensions.iter().any(|e| ext.eq_ignore_ascii_case(e)));
    if has {
        item.filename.clone()
    } else {
        format!("{}.{}", item.filename, extensions[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(len: usize) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
        b.resize(len, 0);
        b
    }

    #[test]
    fn the_content_names_the_kind_and_the_limits_follow_it() {
        assert_eq!(
            check(&png(100), None).unwrap(),
            (MediaKind::Image, Some("image/png"))
        );
        assert_eq!(
            check(b"\xff\xd8\xff\xe0abcdef", None).unwrap().0,
            MediaKind::Image
        );
        assert_eq!(
            check(b"\0\0\0\x20ftypisom\0\0", None).unwrap(),
            (MediaKind::Video, Some("video/mp4"))
        );
        assert_eq!(
            check(b"hello world", None).unwrap(),
            (MediaKind::File, None)
        );
        let e = check(&png(12 * MB), None).unwrap_err().to_string();
        assert_eq!(e, "file: 12582912 bytes; WeCom takes images up to 10 MB");
        // A large PNG may still go as a file.
        assert_eq!(
            check(&png(12 * MB), Some(MediaKind::File)).unwrap().0,
            MediaKind::File
        );
        assert!(check(b"12345", None).is_err());
        assert!(check(b"hello world", Some(MediaKind::Image)).is_err());
        assert!(check(&png(100), Some(MediaKind::Video)).is_err());
        assert!(parse_kind("voice").is_err());
    }

    #[test]
    fn the_name_uploaded_has_the_content_s_extension() {
        let mut item = MediaItem {
            id: 1,
            filename: "poster".into(),
            kind: MediaKind::Image,
            content_type: "image/png".into(),
            size: 10,
            sha256: String::new(),
            created_at: 0,
        };
        assert_eq!(wecom_filename(&item), "poster.png");
        item.filename = "poster.PNG".into();
        assert_eq!(wecom_filename(&item), "poster.PNG");
        item.content_type = "text/plain".into();
        item.filename = "notes".into();
        assert_eq!(wecom_filename(&item), "notes");
    }
}
