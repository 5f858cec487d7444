//! The rollouts page: the builds uploaded, each rollout with every kiosk's step, and for an
//! admin the forms that upload a build (as its vendor shipped it: component and signature) and
//! start, pause, resume and roll back a rollout.

use axum::Form;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::{Lang, Words, esc, page};
use super::{LangQuery, form_session, lang_of, reply, signed_in, user_bar};
use crate::Fleet;
use crate::error::ApiError;
use crate::rollouts::{self, Action, Targets};
use crate::sessions::Session;
use crate::users::Role;

/// `GET /rollouts`.
pub(super) async fn rollouts_page(
    State(fleet): State<Fleet>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (lang, session) = match signed_in(&fleet, &q, &headers).await? {
        Ok(signed_in) => signed_in,
        Err(to_sign_in) => return Ok(to_sign_in),
    };
    render(&fleet, lang, &session, StatusCode::OK, None).await
}

async fn render(
    fleet: &Fleet,
    lang: Lang,
    session: &Session,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, ApiError> {
    let w = lang.words();
    let r = &w.rollouts;
    let mut body = user_bar(w, session);
    if let Some(error) = error {
        body += &format!("<p class=\"down\" id=\"error\">{}</p>", esc(error));
    }
    let admin = session.user.role == Role::Admin;
    for s in rollouts::status(fleet, None).await? {
        body += &format!(
            "<h2 id=\"rollout-{id}\">{} {id}: {} <code>{}</code> ({})</h2>\
             <p><span class=\"state\" id=\"state-{id}\">{}</span> · {} {}/{} · {} {} {}{}</p>",
            r.rollout,
            esc(&s.plugin),
            &s.sha256[..12],
            esc(&s.file_name),
            state_word(r, &s.state),
            r.running,
            s.active(),
            s.kiosks.len(),
            r.created_by,
            esc(&s.created_by),
            esc(&s.created_at),
            if s.why.is_empty() {
                String::new()
            } else {
                format!(" · <span class=\"down\">{}</span>", esc(&s.why))
            },
            id = s.id,
        );
        body += &format!(
            "<table id=\"kiosks-{}\"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            s.id, w.kiosk, w.terminal, w.state, w.detail
        );
        for k in &s.kiosks {
            body += &format!(
                "<tr><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
                esc(&k.kiosk),
                esc(&k.terminal_id),
                if k.canary { r.canary } else { "" },
                k.step.as_deref().map_or(r.not_heard, |s| step_word(r, s)),
                esc(&k.detail)
            );
        }
        body += "</table>";
        if admin {
            let actions: &[(&str, &str)] = match s.state.as_str() {
                "canary" | "fleet" => &[("pause", r.pause), ("rollback", r.roll_back)],
                "paused" => &[("resume", r.resume), ("rollback", r.roll_back)],
                "complete" | "superseded" => &[("rollback", r.roll_back)],
                _ => &[],
            };
            for (action, label) in actions {
                body += &format!(
                    "<form method=\"post\" action=\"/rollouts/{}/{action}\" style=\"display:inline\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                     <button type=\"submit\" id=\"{action}-{}\">{label}</button></form> ",
                    s.id,
                    esc(&session.csrf),
                    s.id
                );
            }
        }
    }
    body += &builds_table(fleet, w).await?;
    if admin {
        body += &upload_form(r, &session.csrf);
        body += &create_form(r, &session.csrf);
    }
    Ok(reply(lang, status, page(lang, r.title, &body)))
}

async fn builds_table(fleet: &Fleet, w: &Words) -> Result<String, ApiError> {
    let r = &w.rollouts;
    let rows = fleet
        .db
        .get()
        .await?
        .query(
            "SELECT sha256, file_name, length(component), uploaded_by,
                    to_char(uploaded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
             FROM plugin_builds ORDER BY uploaded_at DESC LIMIT 100",
            &[],
        )
        .await?;
    let mut out = format!(
        "<h2>{}</h2><table id=\"builds\"><tr><th>SHA-256</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        r.builds, r.file, r.bytes, r.uploaded
    );
    for row in rows {
        out += &format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{} {}</td></tr>",
            esc(row.get(0)),
            esc(row.get(1)),
            row.get::<_, i32>(2),
            esc(row.get(3)),
            esc(row.get(4))
        );
    }
    Ok(out + "</table>")
}

/// A build as its vendor shipped it: the component and its `.sig`.
fn upload_form(r: &RolloutWords, csrf: &str) -> String {
    format!(
        "<h2>{}</h2><form method=\"post\" action=\"/rollouts/builds\" \
         enctype=\"multipart/form-data\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <p><label>{} <input type=\"file\" name=\"component\" id=\"upload-component\" \
         accept=\".wasm\"></label></p>\
         <p><label>{} <input type=\"file\" name=\"signature\" id=\"upload-signature\" \
         accept=\".sig\"></label></p>\
         <p><button type=\"submit\" id=\"upload\">{}</button></p></form>",
        r.upload_build,
        esc(csrf),
        r.component,
        r.signature,
        r.upload
    )
}

fn create_form(r: &RolloutWords, csrf: &str) -> String {
    let field = |name: &str, label: &str| {
        format!("<p><label>{label} <input name=\"{name}\" id=\"new-{name}\"></label></p>")
    };
    format!(
        "<h2>{}</h2><form method=\"post\" action=\"/rollouts\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">{}{}{}{}{}{}\
         <p><button type=\"submit\" id=\"create\">{}</button></p></form>",
        r.new_rollout,
        esc(csrf),
        field("plugin", r.plugin),
        field("build", r.build),
        field("region", r.region),
        field("tag", r.tag),
        field("kiosks", r.kiosks),
        field("canaries", r.canaries),
        r.start
    )
}

fn state_word(r: &RolloutWords, state: &str) -> &'static str {
    match state {
        "canary" => r.in_canary,
        "fleet" => r.in_fleet,
        "complete" => r.complete,
        "superseded" => r.superseded,
        "paused" => r.paused,
        _ => r.rolled_back,
    }
}

fn step_word(r: &RolloutWords, step: &str) -> &'static str {
    match step {
        "downloaded" => r.step_downloaded,
        "verified" => r.step_verified,
        "compiled" => r.step_compiled,
        "checked" => r.step_checked,
        "active" => r.step_active,
        "failed" => r.step_failed,
        _ => r.step_rolled_back,
    }
}

#[derive(Deserialize)]
pub(super) struct CreateForm {
    csrf: String,
    plugin: String,
    build: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    kiosks: String,
    #[serde(default)]
    canaries: String,
}

/// Comma- or space-separated ids.
fn ids(text: &str) -> Vec<String> {
    text.split([',', ' ', '，'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn given(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The session posting a form, if an admin's; else the response to send instead.
async fn admin_session(
    fleet: &Fleet,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Result<Session, Response>, ApiError> {
    let Some(session) = form_session(fleet, headers, csrf).await? else {
        return Ok(Err(Redirect::to("/login").into_response()));
    };
    if session.user.role != Role::Admin {
        let lang = lang_of(&LangQuery::default(), headers);
        let w = lang.words();
        return Ok(Err(reply(
            lang,
            StatusCode::FORBIDDEN,
            page(lang, w.forbidden, ""),
        )));
    }
    Ok(Ok(session))
}

/// An admin's mistake shown on the page; anything else fails the request.
async fn outcome(
    fleet: &Fleet,
    headers: &HeaderMap,
    session: &Session,
    result: Result<(), ApiError>,
) -> Result<Response, ApiError> {
    let lang = lang_of(&LangQuery::default(), headers);
    match result {
        Ok(()) => Ok(Redirect::to("/rollouts").into_response()),
        Err(ApiError::BadRequest(why)) => {
            render(fleet, lang, session, StatusCode::BAD_REQUEST, Some(&why)).await
        }
        Err(ApiError::Conflict(why)) => {
            render(fleet, lang, session, StatusCode::CONFLICT, Some(&why)).await
        }
        Err(e) => Err(e),
    }
}

/// `POST /rollouts`.
pub(super) async fn create(
    State(fleet): State<Fleet>,
    headers: HeaderMap,
    Form(form): Form<CreateForm>,
) -> Result<Response, ApiError> {
    let session = match admin_session(&fleet, &headers, &form.csrf).await? {
        Ok(session) => session,
        Err(response) => return Ok(response),
    };
    let targets = Targets {
        region: given(&form.region),
        tag: given(&form.tag),
        kiosks: ids(&form.kiosks),
        canaries: ids(&form.canaries),
        canary_count: 1,
    };
    let created = rollouts::create(
        &fleet,
        form.plugin.trim(),
        form.build.trim(),
        &targets,
        &session.user.name,
    )
    .await
    .map(|_| ());
    outcome(&fleet, &headers, &session, created).await
}

/// The most a build's upload may be: the component, its signature and the form around them.
pub(super) const UPLOAD_LIMIT: usize = selfvend_fleet_wire::MAX_PLUGIN_BYTES + 64 * 1024;

/// `POST /rollouts/builds`: a build and its signature from an admin's browser.
pub(super) async fn upload(
    State(fleet): State<Fleet>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Result<Response, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::BadRequest(format!("the upload: {}", e.body_text()))
    };
    let (mut csrf, mut component, mut signature) = (String::new(), None, None);
    while let Some(field) = form.next_field().await.map_err(bad)? {
        match field.name().unwrap_or("") {
            "csrf" => csrf = field.text().await.map_err(bad)?,
            "component" => {
                let name = field.file_name().unwrap_or("").to_string();
                component = Some((name, field.bytes().await.map_err(bad)?));
            }
            "signature" => signature = Some(field.bytes().await.map_err(bad)?),
            _ => {}
        }
    }
    let session = match admin_session(&fleet, &headers, &csrf).await? {
        Ok(session) => session,
        Err(response) => return Ok(response),
    };
    let uploaded = match (component, signature) {
        // A browser sends a file input left empty as an empty part.
        (Some((name, component)), Some(signature))
            if !component.is_empty() && !signature.is_empty() =>
        {
            match String::from_utf8(signature.to_vec()) {
                Ok(signature) => {
                    rollouts::upload(&fleet, &name, &component, &signature, &session.user.name)
                        .await
                        .map(|_| ())
                }
                Err(_) => Err(ApiError::BadRequest(format!(
                    "{name}.sig: not a selfvend signature (not text)"
                ))),
            }
        }
        _ => Err(ApiError::BadRequest(
            "choose the build's .wasm file and its .sig file".into(),
        )),
    };
    outcome(&fleet, &headers, &session, uploaded).await
}

#[derive(Deserialize)]
pub(super) struct ActionForm {
    csrf: String,
}

/// `POST /rollouts/{id}/{pause|resume|rollback}`.
pub(super) async fn act(
    State(fleet): State<Fleet>,
    Path((id, action)): Path<(i64, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, ApiError> {
    let session = match admin_session(&fleet, &headers, &form.csrf).await? {
        Ok(session) => session,
        Err(response) => return Ok(response),
    };
    let action = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "rollback" => Action::RollBack,
        _ => return Err(ApiError::BadRequest(format!("no action {action:?}"))),
    };
    let done = rollouts::act(&fleet, id, action, &session.user.name).await;
    outcome(&fleet, &headers, &session, done).await
}

/// The rollouts page's words.
pub struct RolloutWords {
    pub title: &'static str,
    pub rollout: &'static str,
    pub running: &'static str,
    pub created_by: &'static str,
    pub canary: &'static str,
    pub not_heard: &'static str,
    pub pause: &'static str,
    pub resume: &'static str,
    pub roll_back: &'static str,
    pub builds: &'static str,
    pub file: &'static str,
    pub bytes: &'static str,
    pub uploaded: &'static str,
    pub new_rollout: &'static str,
    pub superseded: &'static str,
    pub upload_build: &'static str,
    pub component: &'static str,
    pub signature: &'static str,
    pub upload: &'static str,
    pub plugin: &'static str,
    pub build: &'static str,
    pub region: &'static str,
    pub tag: &'static str,
    pub kiosks: &'static str,
    pub canaries: &'static str,
    pub start: &'static str,
    pub in_canary: &'static str,
    pub in_fleet: &'static str,
    pub complete: &'static str,
    pub paused: &'static str,
    pub rolled_back: &'static str,
    pub step_downloaded: &'static str,
    pub step_verified: &'static str,
    pub step_compiled: &'static str,
    pub step_checked: &'static str,
    pub step_active: &'static str,
    pub step_failed: &'static str,
    pub step_rolled_back: &'static str,
}

pub const ZH: RolloutWords = RolloutWords {
    title: "插件发布",
    rollout: "发布",
    running: "已运行",
    created_by: "发起人",
    canary: "（先行）",
    not_heard: "尚未收到",
    pause: "暂停",
    resume: "继续",
    roll_back: "回滚",
    builds: "已上传的插件版本",
    file: "文件",
    bytes: "字节",
    uploaded: "上传",
    new_rollout: "新建发布",
    superseded: "已被新发布取代",
    upload_build: "上传插件版本",
    component: "组件（.wasm）",
    signature: "签名（.sig）",
    upload: "上传",
    plugin: "插件名",
    build: "版本 SHA-256",
    region: "地区",
    tag: "标签",
    kiosks: "终端（逗号分隔）",
    canaries: "先行终端（逗号分隔）",
    start: "开始发布",
    in_canary: "先行中",
    in_fleet: "全面发布中",
    complete: "已完成",
    paused: "已暂停",
    rolled_back: "已回滚",
    step_downloaded: "已下载",
    step_verified: "签名已验证",
    step_compiled: "已编译",
    step_checked: "自检通过，待切换",
    step_active: "运行中",
    step_failed: "失败",
    step_rolled_back: "已回滚",
};

pub const EN: RolloutWords = RolloutWords {
    title: "Plugin rollouts",
    rollout: "Rollout",
    running: "running",
    created_by: "by",
    canary: " (canary)",
    not_heard: "not yet heard",
    pause: "Pause",
    resume: "Resume",
    roll_back: "Roll back",
    builds: "Uploaded builds",
    file: "File",
    bytes: "Bytes",
    uploaded: "Uploaded",
    new_rollout: "New rollout",
    superseded: "superseded",
    upload_build: "Upload a build",
    component: "Component (.wasm)",
    signature: "Signature (.sig)",
    upload: "Upload",
    plugin: "Plugin name",
    build: "Build SHA-256",
    region: "Region",
    tag: "Tag",
    kiosks: "Kiosks (comma-separated)",
    canaries: "Canaries (comma-separated)",
    start: "Start the rollout",
    in_canary: "canaries",
    in_fleet: "whole fleet",
    complete: "complete",
    paused: "paused",
    rolled_back: "rolled back",
    step_downloaded: "downloaded",
    step_verified: "signature verified",
    step_compiled: "compiled",
    step_checked: "self-check passed, switching",
    step_active: "running",
    step_failed: "failed",
    step_rolled_back: "rolled back",
};
