//! The page's HTML, rendered on the server (maud escapes every value it is
//! given: whatever a record or the configuration says is shown as text).

use lienthong_proto::fields::printable;
use lienthong_proto::pb::trace::v1 as pb;
use lienthong_security_server::trace::pairing::Status;
use lienthong_security_server::trace::portal::TracedExchange;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use prost::Message;

use crate::bundle::ServerAnswer;
use crate::i18n::Lang;
use crate::source::Traced;

/// Accesses per page.
pub const PAGE_SIZE: usize = 50;

/// The stylesheet: one file, system fonts, contrast above 7:1 for text,
/// visible focus, one column on a phone.
pub const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:1rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;color:#1a1a1a;background:#fff}
a{color:#0b4f9c}a:focus,button:focus,input:focus,select:focus{outline:3px solid #b35900;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem}
header,main,footer{max-width:60rem;margin:0 auto;padding:1rem}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between;border-bottom:2px solid #0b4f9c}
h1{font-size:1.5rem;margin:.5rem 0}h2{font-size:1.25rem}
.dev{background:#ffe14d;color:#000;padding:.5rem 1rem;font-weight:bold;text-align:center;border-bottom:2px solid #000}
.button,button{display:inline-block;font:inherit;padding:.5rem 1rem;border:2px solid #0b4f9c;background:#0b4f9c;color:#fff;border-radius:4px;text-decoration:none;cursor:pointer}
.button.secondary,button.secondary{background:#fff;color:#0b4f9c}
form.filters{display:flex;flex-wrap:wrap;gap:.75rem;align-items:flex-end;margin:1rem 0}
form.filters label{display:flex;flex-direction:column;font-weight:600}
input,select{font:inherit;padding:.4rem;border:1px solid #555;border-radius:4px;max-width:100%}
.access{border:1px solid #767676;border-radius:6px;padding:.75rem 1rem;margin:.75rem 0}
.access h2,.access h3{margin:0 0 .5rem;font-size:1.05rem}
dl{display:grid;grid-template-columns:minmax(7rem,auto) 1fr;gap:.25rem 1rem;margin:0}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
.ok{color:#0a5d1f;font-weight:bold}.bad{color:#a4000f;font-weight:bold}
.notice{border-left:4px solid #b35900;padding:.5rem 1rem;background:#fff4e5}
.error{border-left:4px solid #a4000f;padding:.5rem 1rem;background:#fdecee}
nav.pages{display:flex;flex-wrap:wrap;gap:.25rem 1rem;margin:1rem 0}
h1,h2,h3,p,li{overflow-wrap:anywhere}select{max-width:100%}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #ccc;vertical-align:top;overflow-wrap:anywhere}
footer{color:#444;font-size:.9rem;border-top:1px solid #ccc}
form.filters label{min-width:0;max-width:100%}
span.en{color:#4a4a4a;font-size:.9em}form.inline{display:inline}code{overflow-wrap:anywhere}
@media (max-width:40rem){table.services thead,table.alarms thead,table.checkpoints thead,table.tokens thead{display:none}table.services td,table.alarms td,table.checkpoints td,table.tokens td{display:block;border:0;padding:.1rem 0}table.services tr,table.alarms tr,table.checkpoints tr,table.tokens tr{display:block;border-bottom:1px solid #ccc;padding:.4rem 0}}
@media (max-width:40rem){dl{grid-template-columns:1fr}dt{margin-top:.4rem}header{display:block}form.filters label,form.filters select,form.filters input{width:100%}}
"#;

/// What the page around the content needs.
pub struct Frame<'a> {
    pub lang: Lang,
    /// The path and query to switch language on (without `lang`).
    pub here: &'a str,
    /// The signed-in citizen and the session's anti-forgery token.
    pub session: Option<(&'a str, &'a str)>,
    /// Shown on every page when the login is a development provider's.
    pub dev_banner: Option<&'a str>,
}

fn with_lang(path: &str, lang: Lang) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}lang={}", lang.code())
}

/// The page around `content`.
pub fn layout(f: &Frame<'_>, title: &str, content: Markup) -> Markup {
    let t = f.lang.t();
    html! {
        (DOCTYPE)
        html lang=(f.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Lienthong" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                a.skip href="#main" { (t.skip) }
                @if let Some(banner) = f.dev_banner {
                    p.dev role="note" { (banner) }
                }
                header {
                    p { strong { "Lienthong" } " · " (t.title) }
                    nav aria-label="language" {
                        a href=(with_lang(f.here, f.lang.other())) lang=(f.lang.other().code()) hreflang=(f.lang.other().code()) { (f.lang.other().name()) }
                    }
                    @if let Some((subject, csrf)) = f.session {
                        form method="post" action="/logout" {
                            span { (t.signed_in_as) ": " strong { (subject) } " " }
                            input type="hidden" name="csrf" value=(csrf);
                            button.secondary type="submit" { (t.logout) }
                        }
                    }
                }
                main #main { (content) }
                footer { p { "Lienthong — " (t.title) } }
            }
        }
    }
}

pub fn landing(f: &Frame<'_>, notice: Option<&str>) -> Markup {
    let t = f.lang.t();
    layout(
        f,
        t.title,
        html! {
            h1 { (t.title) }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            p { (t.intro) }
            p { a.button href=(with_lang("/login", f.lang)) { (t.login) } }
        },
    )
}

/// A message page (errors, refusals).
pub fn message(f: &Frame<'_>, title: &str, text: &str) -> Markup {
    let t = f.lang.t();
    layout(
        f,
        title,
        html! {
            h1 { (title) }
            p.error role="alert" { (printable(text)) }
            p { a href=(with_lang("/", f.lang)) { (t.back) } }
        },
    )
}

/// The list's filters, as the query gives them.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Filter {
    /// `YYYY-MM-DD`, UTC, inclusive.
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// A member id (`VN/GOV/000102`).
    #[serde(default)]
    pub agency: String,
    #[serde(default)]
    pub page: usize,
}

impl Filter {
    /// Whether `e` passes.
    pub fn keeps(&self, e: &TracedExchange) -> bool {
        let day = 86_400_000;
        let from = parse_date(&self.from);
        let to = parse_date(&self.to).map(|d| d + day);
        from.is_none_or(|f| e.at_ms >= f)
            && to.is_none_or(|t| e.at_ms < t)
            && (self.agency.is_empty() || member_of(&e.client) == self.agency)
    }

    fn query(&self, page: usize, lang: Lang) -> String {
        serde_urlencoded::to_string([
            ("from", self.from.as_str()),
            ("to", self.to.as_str()),
            ("agency", self.agency.as_str()),
            ("page", &page.to_string()),
            ("lang", lang.code()),
        ])
        .unwrap_or_default()
    }
}

/// Unix ms of the start of a `YYYY-MM-DD` day (UTC).
pub fn parse_date(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &fmt).ok()?;
    Some(d.midnight().assume_utc().unix_timestamp() * 1000)
}

fn fmt_ms(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| format!("unix {ms} ms"))
}

/// `VN/GOV/000102` of `VN/GOV/000102/population`.
pub fn member_of(subsystem: &str) -> &str {
    let mut cut = subsystem.match_indices('/').map(|(i, _)| i);
    match cut.nth(2) {
        Some(i) => &subsystem[..i],
        None => subsystem,
    }
}

fn subsystem_code(subsystem: &str) -> &str {
    subsystem.rsplit('/').next().unwrap_or(subsystem)
}

fn agency_name(traced: &Traced, subsystem: &str) -> String {
    let member = member_of(subsystem);
    match traced.member_names.get(member) {
        Some(name) if !name.is_empty() => format!("{} ({member})", printable(name)),
        _ => printable(member).into_owned(),
    }
}

fn result_text(e: &TracedExchange, lang: Lang) -> String {
    if !e.fault.is_empty() {
        printable(&e.fault).into_owned()
    } else if e.grpc_status == 0 {
        lang.t().ok.to_owned()
    } else if e.grpc_status < 0 {
        "—".to_owned()
    } else {
        format!("gRPC {}", e.grpc_status)
    }
}

fn side_name(side: pb::Side, lang: Lang) -> &'static str {
    match side {
        pb::Side::Consumer => lang.t().consumer,
        pb::Side::Provider => lang.t().provider,
        pb::Side::Unspecified => "?",
    }
}

fn status_markup(s: &Status, lang: Lang) -> Markup {
    let t = lang.t();
    let (ok, name) = match s {
        Status::Verified => (true, t.verified.to_owned()),
        Status::NotDelivered(_) => (true, format!("{} ({})", t.verified, "not delivered")),
        Status::PendingCheckpoint => (false, format!("{} (pending checkpoint)", t.not_verified)),
        Status::Unconfirmed(_) => (false, format!("{} (unconfirmed)", t.not_verified)),
        Status::Discrepancy(_) => (false, format!("{} (DISCREPANCY)", t.not_verified)),
        Status::Failed(_) => (false, format!("{} (FAILED)", t.not_verified)),
    };
    html! {
        @if ok { span.ok { "✓ " (name) } } @else { span.bad { "✗ " (name) } }
    }
}

fn access_link(e: &TracedExchange, lang: Lang) -> String {
    let q = serde_urlencoded::to_string([
        ("client", e.client.as_str()),
        ("id", e.message_id.as_str()),
        ("lang", lang.code()),
    ])
    .unwrap_or_default();
    format!("/trace/access?{q}")
}

fn summary(e: &TracedExchange, traced: &Traced, lang: Lang) -> Markup {
    let t = lang.t();
    let ends: Vec<String> = e
        .logged_by
        .iter()
        .map(|(_, side)| side_name(*side, lang).to_owned())
        .collect();
    html! {
        dl {
            dt { (t.when) } dd { time datetime=(fmt_ms(e.at_ms)) { (fmt_ms(e.at_ms)) } }
            dt { (t.agency) } dd { (agency_name(traced, &e.client)) }
            dt { (t.system) } dd { (printable(subsystem_code(&e.client))) }
            dt { (t.service) } dd { (printable(&e.service)) " / " (printable(&e.method)) }
            dt { (t.purpose) } dd { (printable(&e.purpose)) }
            dt { (t.official) } dd { (printable(&e.user_id)) }
            dt { (t.result) } dd { (result_text(e, lang)) }
            dt { (t.ends) } dd { (ends.join(" + ")) }
            dt { (t.verification) } dd { (status_markup(&e.status, lang)) }
        }
    }
}

fn report_notices(traced: &Traced, lang: Lang) -> Markup {
    let t = lang.t();
    let r = &traced.report;
    html! {
        @for (until, n) in &r.withheld {
            p.notice { (n) " " (t.withheld) " " (fmt_ms(*until)) " (UTC)." }
        }
        @if r.unwitnessed > 0 {
            p.notice { (r.unwitnessed) " " (t.unwitnessed) "." }
        }
        @if !r.unanswered.is_empty() {
            div.notice {
                h2 { (t.unanswered) }
                ul { @for (s, why) in &r.unanswered { li { (s.to_string()) ": " (printable(why)) } } }
            }
        }
        @if !r.failures.is_empty() {
            div.error role="alert" {
                h2 { (t.failures) }
                ul { @for (s, why) in &r.failures { li { (s.to_string()) ": " (printable(why)) } } }
            }
        }
    }
}

/// The list of accesses, filtered and paged.
pub fn trace_list(f: &Frame<'_>, traced: &Traced, filter: &Filter) -> Markup {
    let lang = f.lang;
    let t = lang.t();
    let kept: Vec<&TracedExchange> = traced
        .report
        .exchanges
        .iter()
        .filter(|e| filter.keeps(e))
        .collect();
    let pages = kept.len().div_ceil(PAGE_SIZE).max(1);
    let page = filter.page.min(pages - 1);
    let mut agencies: Vec<&str> = traced
        .report
        .exchanges
        .iter()
        .map(|e| member_of(&e.client))
        .collect();
    agencies.sort_unstable();
    agencies.dedup();
    layout(
        f,
        t.accesses,
        html! {
            h1 { (t.accesses) }
            p { (t.answer_of) " " (fmt_ms(traced.at_ms)) " (UTC). " }
            (report_notices(traced, lang))
            form.filters method="get" action="/trace" {
                input type="hidden" name="lang" value=(lang.code());
                label for="from" { (t.from) input #from type="date" name="from" value=(filter.from); }
                label for="to" { (t.to) input #to type="date" name="to" value=(filter.to); }
                label for="agency" { (t.agency)
                    select #agency name="agency" {
                        option value="" { (t.all_agencies) }
                        @for a in &agencies {
                            option value=(a) selected[*a == filter.agency] { (agency_name(traced, a)) }
                        }
                    }
                }
                button type="submit" { (t.apply) }
            }
            p { a.button.secondary href=(with_lang("/trace/download", lang)) download { (t.download) } br; small { (t.download_help) } }
            @if kept.is_empty() {
                p { (t.none) }
            }
            @for (i, e) in kept.iter().skip(page * PAGE_SIZE).take(PAGE_SIZE).enumerate() {
                article.access aria-labelledby=(format!("a{i}")) {
                    h2 #(format!("a{i}")) { (fmt_ms(e.at_ms)) " · " (agency_name(traced, &e.client)) }
                    (summary(e, traced, lang))
                    p { a href=(access_link(e, lang)) { (t.details) } }
                }
            }
            @if pages > 1 {
                nav.pages aria-label=(t.page) {
                    @if page > 0 { a href=(format!("/trace?{}", filter.query(page - 1, lang))) rel="prev" { (t.previous) } }
                    span { (t.page) " " (page + 1) " / " (pages) }
                    @if page + 1 < pages { a href=(format!("/trace?{}", filter.query(page + 1, lang))) rel="next" { (t.next) } }
                }
            }
        },
    )
}

/// What one server's answer says of one exchange's records.
struct Evidence {
    leaf_index: u64,
    tree_size: u64,
    checkpoint_at_ms: i64,
    witnessed_at_ms: i64,
}

fn evidence(
    traced: &Traced,
    server: &lienthong_proto::id::ServerId,
    message_id: &str,
) -> Vec<Evidence> {
    let Some(ServerAnswer::Replies(pages)) = traced.bundle.servers.get(server) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for page in pages {
        let Ok(reply) = pb::FindUsageReply::decode(page.as_slice()) else {
            continue;
        };
        let (size, at) = reply
            .checkpoint
            .as_ref()
            .map_or((0, 0), |c| (c.tree_size, c.created_at_unix_ms));
        let witnessed = reply.witness.as_ref().map_or(0, |w| w.witnessed_at_unix_ms);
        for r in reply.records.iter().filter(|r| r.message_id == message_id) {
            out.push(Evidence {
                leaf_index: r.leaf_index,
                tree_size: size,
                checkpoint_at_ms: at,
                witnessed_at_ms: witnessed,
            });
        }
    }
    out
}

/// One access with its verification at each end.
pub fn access_detail(f: &Frame<'_>, traced: &Traced, e: &TracedExchange) -> Markup {
    let lang = f.lang;
    let t = lang.t();
    layout(
        f,
        t.details,
        html! {
            h1 { (t.details) }
            (summary(e, traced, lang))
            dl {
                dt { (t.message_id) } dd { code { (printable(&e.message_id)) } }
                @if !e.status.problem().is_empty() {
                    dt { (t.problem) } dd.bad { (printable(e.status.problem())) }
                }
            }
            h2 { (t.logged_by) }
            @for (server, side) in &e.logged_by {
                section.access {
                    h3 { (server.to_string()) " — " (side_name(*side, lang)) }
                    @for ev in evidence(traced, server, &e.message_id) {
                        p {
                            (t.leaf) " " (ev.leaf_index) "; " (t.checkpoint) ": " (ev.tree_size)
                            " (" (fmt_ms(ev.checkpoint_at_ms)) "), " (t.witnessed_at) " " (fmt_ms(ev.witnessed_at_ms))
                        }
                    }
                }
            }
            p { a href=(with_lang("/trace", lang)) { (t.back) } }
        },
    )
}

/// The stylesheet as markup-free text (served at `/style.css`).
pub fn style() -> PreEscaped<&'static str> {
    PreEscaped(STYLE)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use lienthong_security_server::trace::portal::TraceReport;

    use super::*;
    use crate::bundle::Bundle;

    fn traced(n: usize) -> Traced {
        let exchanges = (0..n)
            .map(|i| TracedExchange {
                message_id: format!("m-{i}"),
                at_ms: 1_780_000_000_000 - i as i64 * 60_000,
                client: format!("VN/GOV/{:06}/system", 100 + i % 3),
                service: "VN/GOV/000102/population/population.v1.PersonRegistry".into(),
                method: "GetPerson".into(),
                purpose: "hồ sơ".into(),
                user_id: "canbo".into(),
                grpc_status: 0,
                fault: String::new(),
                logged_by: Vec::new(),
                status: Status::Verified,
                verified: true,
            })
            .collect();
        Traced {
            report: TraceReport {
                exchanges,
                ..Default::default()
            },
            bundle: Bundle::new("001099012345", 0, Vec::new(), BTreeMap::new()),
            member_names: BTreeMap::new(),
            at_ms: 1_780_000_000_000,
        }
    }

    fn frame() -> Frame<'static> {
        Frame {
            lang: Lang::En,
            here: "/trace",
            session: Some(("001099012345", "token")),
            dev_banner: None,
        }
    }

    #[test]
    fn ten_thousand_accesses_are_paged() {
        let t = traced(10_000);
        let last = Filter {
            page: 199,
            ..Default::default()
        };
        let html = trace_list(&frame(), &t, &last).into_string();
        assert_eq!(html.matches("<article class=\"access\"").count(), 50);
        assert!(html.contains("Page 200 / 200"), "{html}");
        assert!(html.contains("id=m-9999&"));
        assert!(!html.contains("id=m-9949&"), "only the last page");
        // A page past the end shows the last one.
        let beyond = Filter {
            page: 10_000,
            ..Default::default()
        };
        let html = trace_list(&frame(), &t, &beyond).into_string();
        assert!(html.contains("Page 200 / 200"));
    }

    #[test]
    fn filters_by_day_and_agency() {
        let t = traced(3 * 24 * 60);
        let one_agency = Filter {
            agency: "VN/GOV/000101".into(),
            ..Default::default()
        };
        let kept = t
            .report
            .exchanges
            .iter()
            .filter(|e| one_agency.keeps(e))
            .count();
        assert_eq!(kept, 3 * 24 * 60 / 3);
        let day = Filter {
            from: "2026-05-27".into(),
            to: "2026-05-27".into(),
            ..Default::default()
        };
        let kept: Vec<_> = t.report.exchanges.iter().filter(|e| day.keeps(e)).collect();
        assert_eq!(kept.len(), 24 * 60);
        let start = parse_date("2026-05-27").unwrap();
        assert!(
            kept.iter()
                .all(|e| (start..start + 86_400_000).contains(&e.at_ms))
        );
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(parse_date("<script>"), None);
    }

    #[test]
    fn the_development_banner_and_the_session_are_on_every_page() {
        let mut f = frame();
        f.dev_banner = Some("DEVELOPMENT IDENTITY PROVIDER");
        for page in [
            landing(&f, None),
            message(&f, "x", "y"),
            trace_list(&f, &traced(1), &Filter::default()),
        ] {
            let html = page.into_string();
            assert!(html.contains("DEVELOPMENT IDENTITY PROVIDER"));
            assert!(html.contains("name=\"csrf\" value=\"token\""));
        }
    }
}
