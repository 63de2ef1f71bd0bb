//! Alert e-mail: the mails (a confirmation link, one alert, a digest of an hour's alerts beyond
//! the limit), each with a plain-text and an HTML part and, for alerts, an unsubscribe link (also
//! as `List-Unsubscribe` with one-click `List-Unsubscribe-Post`, RFC 8058), sent over SMTP.

use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::config::EmailSettings;

/// Why a mail was not sent: worth retrying later, or not.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

/// A mail to send: subject, text and HTML bodies, and the unsubscribe link if it has one.
pub struct Mail {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub unsubscribe: Option<String>,
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    public_url: String,
}

impl Mailer {
    /// The mailer for these settings (checked at start), `None` while e-mail is off.
    pub fn new(settings: &EmailSettings) -> anyhow::Result<Option<Self>> {
        if !settings.enabled() {
            return Ok(None);
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(settings.smtp_url.expose_secret())?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        Ok(Some(Self {
            transport,
            from: settings.from.parse()?,
            public_url: settings.public_url.trim_end_matches('/').to_owned(),
        }))
    }

    /// The unsubscribe link of the address with this token.
    pub fn unsubscribe_link(&self, token: &str) -> String {
        self.link(&format!("/api/v1/me/email/unsubscribe?token={token}"))
    }

    /// A link to the hub's `path` (which starts with `/`).
    pub fn link(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    pub async fn send(&self, to: &str, mail: Mail) -> Result<(), MailError> {
        let to: Mailbox = to
            .parse()
            .map_err(|_| MailError::Permanent("the address is not valid".into()))?;
        let mut builder = Message::builder().from(self.from.clone()).to(to).subject(mail.subject);
        if let Some(link) = &mail.unsubscribe {
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{link}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        let message = builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(mail.text))
                    .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(mail.html)),
            )
            .map_err(|e| MailError::Permanent(format!("the mail could not be built: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(MailError::Permanent(describe(&e))),
            Err(e) => Err(MailError::Transient(describe(&e))),
        }
    }
}

/// The SMTP error in plain words: the server's status when it gave one.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    match e.status() {
        Some(code) => format!("the mail server answered {code}"),
        None if e.is_timeout() => "the mail server did not answer in time".into(),
        None => "could not reach the mail server".into(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body_html: &str, unsubscribe: Option<&str>) -> String {
    let footer = unsubscribe
        .map(|u| {
            format!(
                "<p style=\"color:#777;font-size:12px\">You get this because you chose e-mail for a GPUScout alert rule. \
                 <a href=\"{}\">Unsubscribe</a></p>",
                escape(u)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"font-family:sans-serif\">{body_html}{footer}</body></html>",
        escape(title)
    )
}

fn text_footer(unsubscribe: &str) -> String {
    format!("\n--\nYou get this because you chose e-mail for a GPUScout alert rule.\nUnsubscribe: {unsubscribe}\n")
}

/// One line about an alert: its message and when it fired.
fn alert_line(alert: &Value) -> String {
    let message = alert["message"].as_str().unwrap_or("GPUScout alert");
    match alert["fired_at_ms"].as_i64() {
        Some(at) => format!("{message} ({})", crate::clock::utc_minute(at)),
        None => message.to_owned(),
    }
}

/// The mail for one alert.
pub fn alert_mail(alert: &Value, unsubscribe: String, dashboard: &str) -> Mail {
    let rule = alert["rule_name"].as_str().unwrap_or("Alert");
    let line = alert_line(alert);
    Mail {
        subject: format!("GPUScout: {}", alert["message"].as_str().unwrap_or(rule)),
        text: format!(
            "{rule}\n\n{line}\n\nSee the market: {dashboard}\n{}",
            text_footer(&unsubscribe)
        ),
        html: page(
            rule,
            &format!(
                "<h2>{}</h2><p>{}</p><p><a href=\"{}\">See the market</a></p>",
                escape(rule),
                escape(&line),
                escape(dashboard)
            ),
            Some(&unsubscribe),
        ),
        unsubscribe: Some(unsubscribe),
    }
}

/// One mail for the alerts of an hour beyond the per-hour limit.
pub fn digest_mail(alerts: &[Value], unsubscribe: String, dashboard: &str) -> Mail {
    let lines: Vec<String> = alerts
        .iter()
        .map(|a| format!("{}: {}", a["rule_name"].as_str().unwrap_or("Alert"), alert_line(a)))
        .collect();
    let items: String = lines.iter().map(|l| format!("<li>{}</li>", escape(l))).collect();
    Mail {
        subject: format!("GPUScout: {} more alerts", alerts.len()),
        text: format!(
            "More alerts fired than one mail an alert allows; here they are together.\n\n{}\n\nSee the market: {dashboard}\n{}",
            lines.iter().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n"),
            text_footer(&unsubscribe)
        ),
        html: page(
            "GPUScout digest",
            &format!(
                "<h2>{} more alerts</h2><p>More alerts fired than one mail an alert allows; here they are together.</p>\
                 <ul>{items}</ul><p><a href=\"{}\">See the market</a></p>",
                alerts.len(),
                escape(dashboard)
            ),
            Some(&unsubscribe),
        ),
        unsubscribe: Some(unsubscribe),
    }
}

/// The mail that asks to confirm an address.
pub fn confirm_mail(link: &str) -> Mail {
    Mail {
        subject: "GPUScout: confirm your address for alerts".into(),
        text: format!(
            "Someone (we hope you) asked GPUScout to send alerts to this address.\n\nConfirm it: {link}\n\n\
             If it was not you, ignore this mail: nothing is sent until the address is confirmed.\n"
        ),
        html: page(
            "Confirm your address",
            &format!(
                "<p>Someone (we hope you) asked GPUScout to send alerts to this address.</p>\
                 <p><a href=\"{}\">Confirm it</a></p><p>If it was not you, ignore this mail: nothing is sent until the \
                 address is confirmed.</p>",
                escape(link)
            ),
            None,
        ),
        unsubscribe: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn html_parts_escape_what_users_wrote() {
        let alert = json!({"rule_name": "<script>x</script>", "message": "RTX 4090 < $0.30", "fired_at_ms": 0});
        let mail = alert_mail(&alert, "https://hub/u?token=a&b".into(), "https://hub/");
        assert!(!mail.html.contains("<script>"), "{}", mail.html);
        assert!(mail.html.contains("&lt;script&gt;") && mail.html.contains("token=a&amp;b"));
        assert!(mail.text.contains("RTX 4090 < $0.30 (1970-01-01 00:00 UTC)"));
        let digest = digest_mail(&[alert.clone(), alert], "u".into(), "d");
        assert_eq!(digest.subject, "GPUScout: 2 more alerts");
    }
}
