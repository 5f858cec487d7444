//! A kiosk's remote commands on its page: what was asked, by whom, and what the kiosk said it
//! did; and for operators and admins, the buttons that ask.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use selfvend_fleet_wire::CommandKind;
use serde::Deserialize;

use super::html::{Words, esc, page};
use super::{LangQuery, form_session, lang_of, reply};
use crate::error::ApiError;
use crate::sessions::Session;
use crate::users::Role;
use crate::{Fleet, commands};

/// The commands section of kiosk `kiosk`'s page.
pub(super) async fn section(
    fleet: &Fleet,
    kiosk: &str,
    session: &Session,
    w: &Words,
) -> Result<String, ApiError> {
    let c = &w.commands;
    let mut out = format!("<h2>{}</h2>", c.title);
    if session.user.role != Role::Viewer {
        let segment = super::kiosk::url_segment(kiosk);
        let csrf = esc(&session.csrf);
        for (kind, label) in [
            (CommandKind::OutOfService, c.out_of_service),
            (CommandKind::BackInService, c.back_in_service),
            (CommandKind::SendJournal, c.send_journal),
        ] {
            out += &format!(
                "<form method=\"post\" action=\"/kiosks/{segment}/commands\" \
                 style=\"display:inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"command\" value=\"{0}\">\
                 <button type=\"submit\" id=\"command-{0}\">{label}</button></form> ",
                kind.as_str()
            );
        }
        out += &format!(
            "<form method=\"post\" action=\"/kiosks/{segment}/commands\" style=\"display:inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"command\" value=\"resend-reconciliation\">\
             <label>{} <input name=\"period\" id=\"command-period\" size=\"6\"></label> \
             <button type=\"submit\" id=\"command-resend-reconciliation\">{}</button></form>",
            w.period, c.resend_reconciliation
        );
    }
    out += &format!(
        "<table id=\"commands\"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        c.command, c.asked, c.by, c.done, c.outcome
    );
    for (_, command, period, by, issued, done, outcome) in commands::of_kiosk(fleet, kiosk).await? {
        let what = match CommandKind::parse(&command) {
            Some(CommandKind::OutOfService) => c.out_of_service.to_string(),
            Some(CommandKind::BackInService) => c.back_in_service.to_string(),
            Some(CommandKind::SendJournal) => c.send_journal.to_string(),
            _ => format!(
                "{} {}",
                c.resend_reconciliation,
                period.map_or(String::new(), |p| p.to_string())
            ),
        };
        out += &format!(
            "<tr><td>{what}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&issued),
            esc(&by),
            esc(done.as_deref().unwrap_or(c.pending)),
            esc(outcome.as_deref().unwrap_or(""))
        );
    }
    Ok(out + "</table>")
}

#[derive(Deserialize)]
pub(super) struct CommandForm {
    csrf: String,
    command: String,
    #[serde(default)]
    period: String,
}

/// `POST /kiosks/{id}/commands`: an operator or admin gives the kiosk a command.
pub(super) async fn give(
    State(fleet): State<Fleet>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CommandForm>,
) -> Result<Response, ApiError> {
    let Some(session) = form_session(&fleet, &headers, &form.csrf).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let lang = lang_of(&LangQuery::default(), &headers);
    let w = lang.words();
    if session.user.role == Role::Viewer {
        return Ok(reply(
            lang,
            StatusCode::FORBIDDEN,
            page(lang, w.forbidden, ""),
        ));
    }
    let refused = |why: String| {
        reply(
            lang,
            StatusCode::BAD_REQUEST,
            page(
                lang,
                w.commands.title,
                &format!("<p class=\"down\" id=\"error\">{}</p>", esc(&why)),
            ),
        )
    };
    let Some(kind) = CommandKind::parse(&form.command) else {
        return Ok(refused(format!("no command {:?}", form.command)));
    };
    let period = match form.period.trim() {
        "" => None,
        p => match p.parse::<i64>() {
            Ok(p) => Some(p),
            Err(_) => return Ok(refused(format!("period {p:?}: not a whole number"))),
        },
    };
    match commands::issue(&fleet, &id, kind, period, &session.user.name).await {
        Ok(_) => Ok(
            Redirect::to(&format!("/kiosks/{}", super::kiosk::url_segment(&id))).into_response(),
        ),
        Err(ApiError::BadRequest(why)) => Ok(refused(why)),
        Err(e) => Err(e),
    }
}

/// The commands section's words.
pub struct CommandWords {
    pub title: &'static str,
    pub out_of_service: &'static str,
    pub back_in_service: &'static str,
    pub send_journal: &'static str,
    pub resend_reconciliation: &'static str,
    pub command: &'static str,
    pub asked: &'static str,
    pub by: &'static str,
    pub done: &'static str,
    pub outcome: &'static str,
    pub pending: &'static str,
}

pub const ZH: CommandWords = CommandWords {
    title: "远程命令",
    out_of_service: "暂停服务",
    back_in_service: "恢复服务",
    send_journal: "重发日志",
    resend_reconciliation: "重发对账",
    command: "命令",
    asked: "下达时间",
    by: "下达人",
    done: "完成时间",
    outcome: "结果",
    pending: "待执行",
};

pub const EN: CommandWords = CommandWords {
    title: "Remote commands",
    out_of_service: "Take out of service",
    back_in_service: "Back in service",
    send_journal: "Send the journal again",
    resend_reconciliation: "Resend reconciliation",
    command: "Command",
    asked: "Asked",
    by: "By",
    done: "Done",
    outcome: "Outcome",
    pending: "pending",
};
