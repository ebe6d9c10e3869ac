//! WeCom's request rules shared by several endpoints: the error envelope, JSON parsing, length
//! caps (characters where the docs say characters, bytes where they say bytes) and the
//! attachment schema of `add_msg_template` / `send_welcome_msg` / `add_moment_task`; what an
//! endpoint sees of a request, paging, and the shape of answers.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::state::{MediaNamespace, SecretKind, State};

/// An API-level error: answered with HTTP 200 and this errcode, as WeCom does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub errcode: i64,
    pub errmsg: String,
}

pub(crate) type ApiResult = Result<Value, ApiError>;

pub(crate) fn err(errcode: i64, errmsg: impl Into<String>) -> ApiError {
    ApiError {
        errcode,
        errmsg: errmsg.into(),
    }
}

/// 40058 is WeCom's answer for bad JSON, a missing required value, a value over its length cap
/// and a list over its size cap (errcode page, 40058 help text).
pub(crate) fn invalid(what: impl std::fmt::Display) -> ApiError {
    err(40058, format!("invalid parameter: {what}"))
}

/// Parses a JSON body. An empty body is what a POST API sees when called with GET (api.md §1).
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("empty request body (a POST API called with GET?)"));
    }
    serde_json::from_slice(body).map_err(|e| {
        err(
            40058,
            format!("invalid json: {e}. Warning: wrong json format."),
        )
    })
}

pub(crate) fn max_chars(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n > max {
        return Err(invalid(format!(
            "{field} is {n} characters, at most {max} allowed"
        )));
    }
    Ok(())
}

pub(crate) fn max_bytes(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(invalid(format!(
            "{field} is {} bytes, at most {max} allowed",
            value.len()
        )));
    }
    Ok(())
}

/// A required, non-empty string field.
pub(crate) fn required<'a>(
    field: &str,
    value: &'a Option<String>,
    missing_code: i64,
) -> Result<&'a str, ApiError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(err(missing_code, format!("missing {field}"))),
    }
}

/// The attachment schema of mass and welcome messages (api.md §8.1): at most 9; each
/// `{msgtype, <msgtype>: {..}}` with msgtype image | link | miniprogram | video | file; media ids
/// from `media/upload` (temporary, 3 days).
pub(crate) fn check_message_attachments(
    state: &State,
    attachments: &[Value],
) -> Result<(), ApiError> {
    if attachments.len() > 9 {
        return Err(err(
            41064,
            format!("{} attachments, at most 9", attachments.len()),
        ));
    }
    let upload = |ns: MediaNamespace| ns == MediaNamespace::Upload;
    for (i, attachment) in attachments.iter().enumerate() {
        let msgtype = attachment
            .get("msgtype")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(body) = attachment.get(msgtype).filter(|b| b.is_object()) else {
            return Err(err(
                41065,
                format!("attachments[{i}]: invalid attachment type {msgtype:?}"),
            ));
        };
        let text = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or_default();
        match msgtype {
            "image" => {
                let media_id = text("media_id");
                if media_id.is_empty() && text("pic_url").is_empty() {
                    return Err(invalid(format!(
                        "attachments[{i}].image needs media_id or pic_url"
                    )));
                }
                // media_id wins over pic_url when both are given.
                if !media_id.is_empty() && !state.check_media(media_id, upload, Some("image")) {
                    return Err(bad_media(i, media_id));
                }
            }
            "link" => {
                let title = text("title");
                let url = text("url");
                if title.is_empty() || url.is_empty() {
                    return Err(invalid(format!(
                        "attachments[{i}].link needs title and url"
                    )));
                }
                max_bytes("link.title", title, 128)?;
                max_bytes("link.url", url, 2048)?;
                max_bytes("link.picurl", text("picurl"), 2048)?;
                max_bytes("link.desc", text("desc"), 512)?;
            }
            "miniprogram" => {
                let (title, pic, appid, page) = (
                    text("title"),
                    text("pic_media_id"),
                    text("appid"),
                    text("page"),
                );
                if title.is_empty() || pic.is_empty() || appid.is_empty() || page.is_empty() {
                    return Err(invalid(format!(
                        "attachments[{i}].miniprogram needs title, pic_media_id, appid and page"
                    )));
                }
                max_bytes("miniprogram.title", title, 64)?;
                if !state.check_media(pic, upload, Some("image")) {
                    return Err(bad_media(i, pic));
                }
            }
            "video" | "file" => {
                let media_id = text("media_id");
                if !state.check_media(media_id, upload, Some(msgtype)) {
                    return Err(bad_media(i, media_id));
                }
            }
            other => {
                return Err(err(
                    41065,
                    format!("attachments[{i}]: invalid attachment type {other:?}"),
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn bad_media(i: usize, media_id: &str) -> ApiError {
    err(
        40007,
        format!(
            "attachments[{i}]: invalid media_id {media_id:?} (unknown, expired after 3 days, \
             of another type, or uploaded with the other upload API)"
        ),
    )
}

/// The attachment schema of moments (api.md §9.1): ≤9 images, or one video, or one link, never
/// mixed; media ids from `media/upload_attachment` with attachment_type=1.
pub(crate) fn check_moment_attachments(
    state: &State,
    attachments: &[Value],
) -> Result<(), ApiError> {
    let moments = |ns: MediaNamespace| ns == MediaNamespace::Attachment(1);
    let mut kinds = Vec::new();
    for (i, attachment) in attachments.iter().enumerate() {
        let msgtype = attachment
            .get("msgtype")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(body) = attachment.get(msgtype).filter(|b| b.is_object()) else {
            return Err(err(41065, "invalid attachments msgtype"));
        };
        let text = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or_default();
        match msgtype {
            "image" | "video" => {
                let media_id = text("media_id");
                if !state.check_media(media_id, moments, Some(msgtype)) {
                    return Err(bad_media(i, media_id));
                }
            }
            "link" => {
                if text("url").is_empty() {
                    return Err(invalid(format!("attachments[{i}].link needs url")));
                }
                max_bytes("link.title", text("title"), 64)?;
                let cover = text("media_id");
                if !state.check_media(cover, moments, Some("image")) {
                    return Err(bad_media(i, cover));
                }
            }
            _ => return Err(err(41065, "invalid attachments msgtype")),
        }
        kinds.push(msgtype);
    }
    let Some(first) = kinds.first() else {
        return Ok(());
    };
    if kinds.iter().any(|k| k != first) {
        return Err(err(41065, "invalid attachments msgtype"));
    }
    let max = if *first == "image" { 9 } else { 1 };
    if kinds.len() > max {
        return Err(err(41064, "invalid attachments size"));
    }
    Ok(())
}

/// A file part of a media upload.
pub(crate) struct Upload {
    pub filename: String,
    pub data: Vec<u8>,
}

/// What an endpoint sees of the request.
pub(crate) struct Req<'a> {
    pub query: &'a HashMap<String, String>,
    pub body: &'a [u8],
    pub token: SecretKind,
    pub upload: Option<Result<Upload, ApiError>>,
}

impl Req<'_> {
    pub fn query_str(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }
}

/// Paging with an opaque cursor that is really an offset.
pub(crate) fn page<T: Clone>(
    items: &[T],
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<T>, String), ApiError> {
    let start = match cursor.filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| invalid(format!("cursor {c:?}")))?,
    };
    let end = start.saturating_add(limit).min(items.len());
    let slice = items.get(start..end).unwrap_or_default().to_vec();
    let next = if end < items.len() {
        end.to_string()
    } else {
        String::new()
    };
    Ok((slice, next))
}

/// Drops `null` members: WeCom omits absent fields instead of sending null.
pub(crate) fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_count_characters_not_bytes() {
        // 20 Chinese characters are 60 bytes and still a valid remark.
        assert!(max_chars("remark", &"备".repeat(20), 20).is_ok());
        assert_eq!(
            max_chars("remark", &"备".repeat(21), 20)
                .unwrap_err()
                .errcode,
            40058
        );
    }

    #[test]
    fn empty_and_broken_json_are_40058() {
        assert_eq!(parse_json::<Value>(b"").unwrap_err().errcode, 40058);
        assert_eq!(parse_json::<Value>(b"{\"a\":").unwrap_err().errcode, 40058);
    }
}
