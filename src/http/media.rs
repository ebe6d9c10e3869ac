//! `/api/v1/media`: siyu's media library (images, videos and files for campaigns).

use axum::Json;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::api::{ApiError, INTERNAL, UNAUTHORIZED};
use super::doc::ErrorBody;
use crate::app::media::{self, MAX_FILE_BYTES, MediaItem, MediaKind, NewUpload};

/// The body an upload may have: WeCom's largest file and room for the multipart framing (the
/// rest of the API keeps axum's default limit).
const UPLOAD_BODY_LIMIT: usize = MAX_FILE_BYTES + 1024 * 1024;

pub(super) fn router() -> OpenApiRouter<AppState> {
    let (schemas, paths, upload) = routes!(upload_media);
    OpenApiRouter::new()
        .routes((
            schemas,
            paths,
            upload.layer(DefaultBodyLimit::max(UPLOAD_BODY_LIMIT)),
        ))
        .routes(routes!(list_media))
        .routes(routes!(get_media))
}

/// The upload form (`multipart/form-data`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // describes the form in the document; the handler reads the fields itself
struct MediaUploadForm {
    /// The file; its name is the name WeCom shows.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// `image` (JPG or PNG, ≤ 10 MB), `video` (MP4, ≤ 10 MB) or `file` (anything, ≤ 20 MB);
    /// inferred from the content when absent (a JPG or PNG is an image, an MP4 a video).
    kind: Option<MediaKind>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MediaList {
    /// Newest first.
    pub media: Vec<MediaItem>,
}

/// Stores a file in the media library, checked against WeCom's limits for its kind (every file
/// more than 5 bytes; images JPG or PNG up to 10 MB, videos MP4 up to 10 MB, files up to 20 MB).
/// siyu uploads it to WeCom when a campaign needs it.
#[utoipa::path(
    post,
    path = "/media",
    tag = "media",
    request_body(content = MediaUploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "stored", body = MediaItem),
        (status = 400, description = "no `file` field, or the file breaks a WeCom limit (named in `error`)", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 413, description = "the body is over 21 MB", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn upload_media(
    State(state): State<AppState>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut form = form.map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be multipart/form-data with the file in a field `file`: {}",
            e.body_text()
        ))
    })?;
    let mut file: Option<NewUpload> = None;
    let mut kind = None;
    while let Some(field) = form.next_field().await.map_err(unreadable)? {
        match field.name().unwrap_or_default() {
            "file" => {
                if file.is_some() {
                    return Err(ApiError::bad_request("file: one file per upload"));
                }
                let filename = field.file_name().unwrap_or_default().to_owned();
                let content_type = field.content_type().map(str::to_owned);
                let bytes = field.bytes().await.map_err(unreadable)?;
                file = Some(NewUpload {
                    filename,
                    content_type,
                    kind: None,
                    bytes: bytes.to_vec(),
                });
            }
            "kind" => {
                let text = field.text().await.map_err(unreadable)?;
                kind = Some(media::parse_kind(&text)?);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "{other:?}: unknown field; the form takes `file` and `kind`"
                )));
            }
        }
    }
    let Some(mut file) = file else {
        return Err(ApiError::bad_request(
            "file: missing (the multipart field `file` holds the upload)",
        ));
    };
    file.kind = kind;
    let item = media::upload(&state.services, file).await?;
    Ok((StatusCode::CREATED, Json(item)).into_response())
}

/// A form that cannot be read: over the limit (413) or not valid multipart (400).
fn unreadable(e: MultipartError) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::status(
            status,
            format!(
                "file: the upload is over {} MB (WeCom takes files up to {} MB)",
                UPLOAD_BODY_LIMIT / (1024 * 1024),
                MAX_FILE_BYTES / (1024 * 1024)
            ),
        );
    }
    ApiError::status(status, format!("the multipart form: {}", e.body_text()))
}

/// The media library, newest first (metadata; the bytes stay in siyu).
#[utoipa::path(
    get,
    path = "/media",
    tag = "media",
    responses(
        (status = 200, description = "the library", body = MediaList),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn list_media(State(state): State<AppState>) -> Result<Response, ApiError> {
    let media = media::list(&state.services).await?;
    Ok(Json(MediaList { media }).into_response())
}

/// One library item's metadata.
#[utoipa::path(
    get,
    path = "/media/{id}",
    tag = "media",
    params(("id" = i64, Path, description = "the item's id")),
    responses(
        (status = 200, description = "the item", body = MediaItem),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "no such item", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    )
)]
async fn get_media(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Ok(id) = id.parse::<i64>() else {
        return Err(ApiError::status(
            StatusCode::NOT_FOUND,
            format!("no media item {id:?}"),
        ));
    };
    Ok(Json(media::item(&state.services, id).await?).into_response())
}
