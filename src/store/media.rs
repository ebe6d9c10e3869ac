//! The media library (`media_items`: files operators upload, bytes kept here) and the WeCom
//! media_ids siyu uploaded from them or from elsewhere (`wecom_media`: one per source and upload
//! API, with when it was uploaded; WeCom's ids live 3 days).

use serde::{Deserialize, Serialize};

use sqlx::AssertSqlSafe;

use super::{Result, Store, stored, with_pool};

string_enum! {
    /// What a library item is to WeCom; `media_items.kind`.
    MediaKind {
        /// JPG or PNG, at most 10 MB.
        Image => "image",
        /// MP4, at most 10 MB.
        Video => "video",
        /// Anything, at most 20 MB.
        File => "file",
    }
}

string_enum! {
    /// The WeCom API a media_id comes from; its ids are not valid in the other's messages
    /// (40007). `wecom_media.api`.
    WecomUpload {
        /// `media/upload`: for messages (add_msg_template, welcome messages, app messages).
        Upload => "upload",
        /// `media/upload_attachment` with attachment_type 1: for Moments (images and videos).
        MomentAttachment => "moment_attachment",
    }
}

/// A library item, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MediaItem {
    pub id: i64,
    /// The name WeCom shows (the uploaded file's name).
    pub filename: String,
    pub kind: MediaKind,
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// The bytes' SHA-256, lowercase hex.
    pub sha256: String,
    /// Unix ms.
    pub created_at: i64,
}

/// A library item to store.
#[derive(Debug, Clone, Copy)]
pub struct NewMediaItem<'a> {
    pub filename: &'a str,
    pub kind: MediaKind,
    pub content_type: &'a str,
    pub sha256: &'a str,
    pub bytes: &'a [u8],
    pub created_at: i64,
}

const ITEM_COLUMNS: &str = "id, filename, kind, content_type, size, sha256, created_at";
type ItemRow = (i64, String, String, String, i64, String, i64);

fn item(r: ItemRow) -> Result<MediaItem> {
    Ok(MediaItem {
        id: r.0,
        filename: r.1,
        kind: stored("media_items.kind", &r.2, MediaKind::parse)?,
        content_type: r.3,
        size: r.4,
        sha256: r.5,
        created_at: r.6,
    })
}

impl Store {
    /// Stores a library item; answers it with its id.
    pub async fn insert_media_item(&self, new: &NewMediaItem<'_>) -> Result<MediaItem> {
        let size = i64::try_from(new.bytes.len()).unwrap_or(i64::MAX);
        let _turn = self.write_turn().await;
        let id: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "INSERT INTO media_items (filename, kind, content_type, size, sha256, bytes, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(new.filename)
            .bind(new.kind.as_str())
            .bind(new.content_type)
            .bind(size)
            .bind(new.sha256)
            .bind(new.bytes)
            .bind(new.created_at)
            .fetch_one(pool)
            .await?
        });
        Ok(MediaItem {
            id,
            filename: new.filename.to_owned(),
            kind: new.kind,
            content_type: new.content_type.to_owned(),
            size,
            sha256: new.sha256.to_owned(),
            created_at: new.created_at,
        })
    }

    /// Every library item, newest first (without bytes).
    pub async fn media_items(&self) -> Result<Vec<MediaItem>> {
        let rows: Vec<ItemRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {ITEM_COLUMNS} FROM media_items ORDER BY created_at DESC, id DESC"
            )))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(item).collect()
    }

    /// A library item (without bytes).
    pub async fn media_item(&self, id: i64) -> Result<Option<MediaItem>> {
        let row: Option<ItemRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {ITEM_COLUMNS} FROM media_items WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(item).transpose()
    }

    /// A library item's bytes.
    pub async fn media_item_bytes(&self, id: i64) -> Result<Option<Vec<u8>>> {
        let bytes = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT bytes FROM media_items WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(bytes)
    }

    /// A WeCom media_id uploaded from `source` through `api`, and when.
    pub async fn wecom_media(&self, source: &str, api: &str) -> Result<Option<(String, i64)>> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT media_id, uploaded_at FROM wecom_media WHERE source = $1 AND api = $2",
            )
            .bind(source)
            .bind(api)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    pub async fn save_wecom_media(
        &self,
        source: &str,
        api: &str,
        media_id: &str,
        at: i64,
    ) -> Result<()> {
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO wecom_media (source, api, media_id, uploaded_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (source, api) DO UPDATE SET media_id = excluded.media_id, uploaded_at = excluded.uploaded_at",
            )
            .bind(source)
            .bind(api)
            .bind(media_id)
            .bind(at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn forget_wecom_media(&self, source: &str, api: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM wecom_media WHERE source = $1 AND api = $2")
                .bind(source)
                .bind(api)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
