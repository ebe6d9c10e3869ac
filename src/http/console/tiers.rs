//! 等级: the tier rules in an editor. The text is checked as the operator types (with the page's
//! script) and a dry run shows what the rules would change, before anything is saved; without
//! script, 预览 does the same as a form.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use serde_json::{Value, json};

use super::{AppState, Flash, Refused, Visitor, api, back, refused_page, render};
use crate::app::sessions::Session;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/console/tiers", get(page).post(save))
        .route("/console/tiers/preview", post(preview_page))
        .route("/console/tiers/check", post(check))
}

/// The rules as the editor shows them: the `tiers` list, pretty-printed.
fn editor_text(rules: &Value) -> String {
    serde_json::to_string_pretty(&rules["tiers"]).unwrap_or_default()
}

/// The editor's text as the API's `tiers` list, or where it is wrong.
fn parse_rules(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("第 {} 行第 {} 列：{e}", e.line(), e.column()))?;
    match value {
        Value::Array(_) => Ok(value),
        Value::Object(mut o) if o.contains_key("tiers") => {
            Ok(o.remove("tiers").unwrap_or_default())
        }
        _ => Err("规则应是等级的列表（[ {\"code\": …}, … ]）".into()),
    }
}

async fn show(
    state: &AppState,
    session: &Session,
    flash: &Flash,
    text: Option<String>,
    preview: Option<Result<Value, String>>,
) -> Response {
    let rules = match api(state, session, Method::GET, "/tiers", None).await {
        Ok(v) => v,
        Err(e) => return refused_page(state, session, &e),
    };
    let summary = api(state, session, Method::GET, "/tiers/summary", None)
        .await
        .unwrap_or_default();
    let (preview, preview_error) = match preview {
        Some(Ok(p)) => (Some(p), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    render(
        state,
        session,
        "tiers.html",
        "tiers",
        flash,
        json!({
            "text": text.unwrap_or_else(|| editor_text(&rules)),
            "rules": rules,
            "summary": summary,
            "preview": preview,
            "preview_error": preview_error,
        }),
    )
}

async fn page(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Query(flash): Query<Flash>,
) -> Response {
    show(&state, &session, &flash, None, None).await
}

/// A dry run of the proposed rules through `POST /api/v1/tiers/preview`.
async fn dry_run(state: &AppState, session: &Session, text: &str) -> Result<Value, String> {
    let tiers = parse_rules(text)?;
    api(
        state,
        session,
        Method::POST,
        "/tiers/preview",
        Some(json!({ "tiers": tiers })),
    )
    .await
    .map_err(|e| e.message)
}

async fn preview_page(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let text = form.get("rules").cloned().unwrap_or_default();
    let preview = dry_run(&state, &session, &text).await;
    show(
        &state,
        &session,
        &Flash::default(),
        Some(text),
        Some(preview),
    )
    .await
}

/// What the editor's script asks as the operator types: the dry run, or the error.
async fn check(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let text = form.get("rules").cloned().unwrap_or_default();
    match dry_run(&state, &session, &text).await {
        Ok(preview) => Json(json!({ "ok": true, "preview": preview })).into_response(),
        Err(error) => Json(json!({ "ok": false, "error": error })).into_response(),
    }
}

async fn save(
    State(state): State<AppState>,
    Extension(Visitor(session)): Extension<Visitor>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let text = form.get("rules").cloned().unwrap_or_default();
    let tiers = match parse_rules(&text) {
        Ok(t) => t,
        Err(e) => {
            let flash = Flash {
                ok: None,
                error: Some(e),
            };
            return show(&state, &session, &flash, Some(text), None).await;
        }
    };
    let body = json!({ "tiers": tiers, "by": session.principal.name });
    match api(&state, &session, Method::PUT, "/tiers", Some(body)).await {
        Ok(_) => back(
            "/console/tiers",
            Ok("等级规则已保存，下次评估时生效".into()),
        ),
        // The operator's text is kept on the page with the reason, not lost in a redirect.
        Err(Refused { message, .. }) => {
            let flash = Flash {
                ok: None,
                error: Some(message),
            };
            show(&state, &session, &flash, Some(text), None).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_editor_takes_a_list_or_the_api_body_and_says_where_it_is_wrong() {
        assert!(parse_rules(r#"[{"code":"member","name":"会员"}]"#).is_ok());
        assert_eq!(
            parse_rules(r#"{"tiers":[{"code":"m"}],"by":"x"}"#).unwrap(),
            json!([{"code":"m"}])
        );
        let e = parse_rules("[\n{\"code\": }").unwrap_err();
        assert!(e.starts_with("第 2 行"), "{e}");
        assert!(parse_rules("42").is_err());
    }
}
