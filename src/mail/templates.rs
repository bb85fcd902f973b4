//! The emails Tidings sends, each in plain text and in HTML (sent together as
//! `multipart/alternative`: a client shows the one it prefers). Every value put into the
//! HTML is escaped; the plain text needs none.

use std::time::Duration;

/// A message's subject and its two bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The link that sets a new password, valid for `valid_for`, once.
pub fn password_reset(link: &str, valid_for: Duration) -> Email {
    let valid = humantime::format_duration(valid_for).to_string();
    Email {
        subject: "Reset your Tidings password".into(),
        text: format!(
            "Someone, hopefully you, asked to reset the password of your Tidings account.\n\n\
             Choose a new password here (the link works once, for {valid}):\n\n{link}\n\n\
             Setting it signs you out everywhere. If you did not ask for this, ignore this \
             email: your password stays as it is.\n"
        ),
        html: page(
            "Reset your password",
            &format!(
                "<p>Someone, hopefully you, asked to reset the password of your Tidings \
                 account.</p>{}<p>The link works once, for {}. Setting a new password signs \
                 you out everywhere.</p><p>If you did not ask for this, ignore this email: \
                 your password stays as it is.</p>",
                button("Choose a new password", link),
                escape(&valid)
            ),
        ),
    }
}

/// The link that proves the address is the user's, valid for `valid_for`, once.
pub fn verification(link: &str, valid_for: Duration) -> Email {
    let valid = humantime::format_duration(valid_for).to_string();
    Email {
        subject: "Verify your email address for Tidings".into(),
        text: format!(
            "Please confirm that this is your address by opening this link (it works once, \
             for {valid}):\n\n{link}\n\nIf you did not sign up for Tidings, ignore this email.\n"
        ),
        html: page(
            "Verify your email address",
            &format!(
                "<p>Please confirm that this is your address.</p>{}<p>The link works once, \
                 for {}. If you did not sign up for Tidings, ignore this email.</p>",
                button("Verify my address", link),
                escape(&valid)
            ),
        ),
    }
}

/// An event for a user who could not be reached live or by push (for the delivery
/// worker): `kind_title` is the subject ("Order shipped"), `body_text` the message, `link`
/// where to see it.
pub fn event(kind_title: &str, body_text: &str, link: &str) -> Email {
    // A subject is one line: a title with a line break would start the body early.
    let subject: String = kind_title
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let paragraphs: String = body_text
        .split("\n\n")
        .map(|p| format!("<p>{}</p>", escape(p).replace('\n', "<br>")))
        .collect();
    Email {
        text: format!("{body_text}\n\n{link}\n"),
        html: page(
            &subject,
            &format!("{paragraphs}{}", button("Open Tidings", link)),
        ),
        subject,
    }
}

/// `text` with the five characters that mean something in HTML escaped, for element
/// content and quoted attribute values alike.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A link styled as a button, with the address written out below it for clients that
/// show no styles (and for people who want to see where it goes).
fn button(label: &str, link: &str) -> String {
    let link = escape(link);
    format!(
        "<p><a href=\"{link}\" style=\"display:inline-block;padding:10px 18px;\
         background:#2563eb;color:#ffffff;text-decoration:none;border-radius:6px\">{}</a></p>\
         <p style=\"font-size:13px;color:#555\">Or open this address: \
         <a href=\"{link}\">{link}</a></p>",
        escape(label)
    )
}

/// A whole HTML document around `body` (already HTML), with `title` (text) as heading.
fn page(title: &str, body: &str) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:system-ui,sans-serif;line-height:1.5;color:#111;\
         max-width:560px;margin:24px auto;padding:0 16px\"><h1 style=\"font-size:20px\">\
         {title}</h1>{body}</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let email = event(
            "Order <b>shipped</b>",
            "Your \"parcel\" & co.\n\nSee <script>",
            "https://shop.example/app/#/orders?x=1&y=2",
        );
        assert_eq!(email.subject, "Order <b>shipped</b>");
        assert!(email.html.contains("Order &lt;b&gt;shipped&lt;/b&gt;"));
        assert!(email.html.contains("Your &quot;parcel&quot; &amp; co."));
        assert!(email.html.contains("See &lt;script&gt;"));
        assert!(!email.html.contains("<script>"));
        assert!(
            email
                .html
                .contains("href=\"https://shop.example/app/#/orders?x=1&amp;y=2\"")
        );
        assert!(email.text.contains("See <script>"));
        assert!(
            email
                .text
                .contains("https://shop.example/app/#/orders?x=1&y=2")
        );
    }

    #[test]
    fn a_subject_is_one_line() {
        assert_eq!(event("Two\r\nlines", "", "https://x").subject, "Two  lines");
    }

    #[test]
    fn the_links_are_in_both_bodies() {
        let link = "https://shop.example/app/#/reset?token=abc-_";
        for email in [
            password_reset(link, Duration::from_secs(1800)),
            verification(link, Duration::from_secs(86400)),
        ] {
            assert!(email.text.contains(link), "{}", email.text);
            assert!(
                email.html.contains(&format!("href=\"{link}\"")),
                "{}",
                email.html
            );
        }
        assert!(
            password_reset(link, Duration::from_secs(1800))
                .text
                .contains("30m")
        );
    }
}
