//! What can go wrong calling WeCom, typed so callers decide on the code, never on `errmsg`.

use std::time::Duration;

/// WeCom's `errcode`s that siyu acts on (api.md §12).
pub mod code {
    pub const SYSTEM_BUSY: i64 = -1;
    pub const INVALID_SECRET: i64 = 40001;
    pub const INVALID_MEDIA: i64 = 40007;
    pub const INVALID_CORPID: i64 = 40013;
    pub const INVALID_TOKEN: i64 = 40014;
    pub const INVALID_PARAMETER: i64 = 40058;
    pub const INVALID_TAG: i64 = 40068;
    pub const DUPLICATE_TAG_NAME: i64 = 40071;
    pub const INVALID_EXTERNAL_USERID: i64 = 40096;
    pub const TAG_LIMIT: i64 = 40126;
    pub const TOKEN_MISSING: i64 = 41001;
    pub const WELCOME_CODE_MISSING: i64 = 41049;
    pub const WELCOME_CODE_EXPIRED: i64 = 41050;
    pub const WELCOME_CODE_USED: i64 = 41051;
    pub const GROUP_MSG_DISPATCHING: i64 = 41063;
    pub const JOIN_WAY_TOO_MANY_CHATS: i64 = 41091;
    pub const GROUP_MSG_CANCELLED: i64 = 41093;
    pub const REMIND_LIMIT: i64 = 41094;
    pub const WELCOME_IN_FLIGHT: i64 = 41096;
    pub const TOKEN_EXPIRED: i64 = 42001;
    pub const FREQUENCY_LIMIT: i64 = 45009;
    pub const TOO_MANY_CONCURRENT: i64 = 45033;
    pub const NO_PERMISSION: i64 = 48002;
    pub const IP_NOT_TRUSTED: i64 = 60020;
    pub const ALL_RECIPIENTS_INVALID: i64 = 81013;
    pub const NO_RELATIONSHIP: i64 = 84061;
    pub const NO_CONTACT_PERMISSION: i64 = 84074;
}

/// What an errcode means for siyu, in a few words (api.md §12). `None` for codes we don't model.
pub fn meaning(errcode: i64) -> Option<&'static str> {
    use code::*;
    Some(match errcode {
        SYSTEM_BUSY => "WeCom is busy; retry later",
        INVALID_SECRET => "invalid secret, or the app is disabled (check wecom.secret)",
        INVALID_MEDIA => "invalid or expired media_id, or uploaded through the wrong API",
        INVALID_CORPID => "invalid corp id (check wecom.corp_id)",
        INVALID_TOKEN => "invalid access token",
        INVALID_PARAMETER => "invalid parameter or malformed request",
        INVALID_TAG => "unknown tag or tag group id",
        DUPLICATE_TAG_NAME => "a tag of that name exists in the group",
        INVALID_EXTERNAL_USERID => "invalid external_userid",
        TAG_LIMIT => "the corp has 3000 tags already",
        TOKEN_MISSING => "access token missing",
        WELCOME_CODE_MISSING => "welcome code missing",
        WELCOME_CODE_EXPIRED => "welcome code expired (20 s after the add)",
        WELCOME_CODE_USED => "welcome code already used, or the chat has started",
        GROUP_MSG_DISPATCHING => "mass message still being dispatched; read again later",
        JOIN_WAY_TOO_MANY_CHATS => "a join way holds at most 5 group chats",
        GROUP_MSG_CANCELLED => "mass message was cancelled",
        REMIND_LIMIT => "at most 3 reminders per mass message a day",
        WELCOME_IN_FLIGHT => "a welcome message is already being sent",
        TOKEN_EXPIRED => "access token expired",
        FREQUENCY_LIMIT => "API frequency limit reached; wait for the window to pass",
        TOO_MANY_CONCURRENT => "too many concurrent calls of this API",
        NO_PERMISSION => "this app may not call this API (check 可调用接口的应用)",
        IP_NOT_TRUSTED => "this server's IP is not in the app's trusted IPs (企业可信IP)",
        ALL_RECIPIENTS_INVALID => "every recipient is invalid",
        NO_RELATIONSHIP => "the member has no relationship with that customer",
        NO_CONTACT_PERMISSION => "no customer-contact permission",
        _ => return None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum WecomError {
    /// WeCom answered with a non-zero errcode.
    #[error("WeCom {path} answered errcode {code}: {}", meaning(*code).unwrap_or(errmsg))]
    Api {
        path: &'static str,
        code: i64,
        errmsg: String,
    },
    /// An HTTP status other than 200 (WeCom's gateway, or a proxy).
    #[error("WeCom {path} answered HTTP {status}")]
    Http { path: &'static str, status: u16 },
    /// The request never reached WeCom, or its answer never came back for a call that changes
    /// nothing: safe to try again.
    #[error("WeCom {path} unreachable: {reason}")]
    Transport { path: &'static str, reason: String },
    /// A call that creates a send may have reached WeCom, and no answer came: it may or may not
    /// have happened. Never retried blindly; reconcile through the list endpoints.
    #[error("WeCom {path}: outcome unknown ({reason}); reconcile before any retry")]
    OutcomeUnknown { path: &'static str, reason: String },
    /// WeCom answered 45009: this API is blocked for a window.
    #[error(
        "WeCom {path} answered errcode 45009: frequency limit reached; retry in {retry_after:?}"
    )]
    RateLimited {
        path: &'static str,
        retry_after: Duration,
    },
    /// The client's own limiter refused to send now (per-member app-message caps).
    #[error("{what}: retry in {retry_after:?}")]
    Throttled { what: String, retry_after: Duration },
    /// The answer was not the JSON WeCom documents.
    #[error("WeCom {path} answered something unexpected: {reason}")]
    Decode { path: &'static str, reason: String },
    /// Bad input caught before calling (a limit WeCom would refuse anyway).
    #[error("{0}")]
    Invalid(String),
}

impl WecomError {
    pub fn errcode(&self) -> Option<i64> {
        match self {
            WecomError::Api { code, .. } => Some(*code),
            WecomError::RateLimited { .. } => Some(code::FREQUENCY_LIMIT),
            _ => None,
        }
    }

    /// Worth trying again later (by a job's backoff): busy, limits, transport and 5xx, and a
    /// token refused again right after a refresh (another replica's refresh, or WeCom's own
    /// churn: a later attempt fetches one that works).
    pub fn is_transient(&self) -> bool {
        match self {
            WecomError::Api { code, .. } => matches!(
                *code,
                code::SYSTEM_BUSY
                    | code::FREQUENCY_LIMIT
                    | code::TOO_MANY_CONCURRENT
                    | code::GROUP_MSG_DISPATCHING
                    | code::INVALID_TOKEN
                    | code::TOKEN_EXPIRED
            ),
            WecomError::Http { status, .. } => *status >= 500 || *status == 429,
            WecomError::Transport { .. }
            | WecomError::Throttled { .. }
            | WecomError::RateLimited { .. } => true,
            WecomError::OutcomeUnknown { .. }
            | WecomError::Decode { .. }
            | WecomError::Invalid(_) => false,
        }
    }

    /// How long to wait before trying again, when WeCom or the limiter said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            WecomError::Api {
                code: code::FREQUENCY_LIMIT,
                ..
            } => Some(Duration::from_secs(60)),
            WecomError::Throttled { retry_after, .. }
            | WecomError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_the_code_means() {
        let e = WecomError::Api {
            path: "externalcontact/send_welcome_msg",
            code: 41051,
            errmsg: "whatever text".into(),
        };
        assert!(e.to_string().contains("already used"), "{e}");
        assert!(!e.is_transient());
        let e = WecomError::Api {
            path: "x",
            code: 99999,
            errmsg: "new code".into(),
        };
        assert!(e.to_string().contains("99999") && e.to_string().contains("new code"));
        assert!(
            WecomError::Api {
                path: "x",
                code: -1,
                errmsg: String::new()
            }
            .is_transient()
        );
        assert_eq!(
            WecomError::Api {
                path: "x",
                code: 45009,
                errmsg: String::new()
            }
            .retry_after(),
            Some(Duration::from_secs(60))
        );
    }
}
