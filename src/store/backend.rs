//! Which database a URL names, and how to print a URL without its password.

use std::fmt;

use super::StoreError;

/// The database engine behind a [`Store`](super::Store), chosen by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite, embedded: URLs starting `sqlite:` (`sqlite://voxrelay.db?mode=rwc`, `sqlite::memory:`).
    Sqlite,
    /// PostgreSQL: URLs starting `postgres://` or `postgresql://`.
    Postgres,
}

impl Backend {
    /// Picks the backend from a database URL's scheme (compared case-insensitively).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for any other scheme; the message quotes the URL with its password
    /// redacted and lists the schemes that are supported.
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        let lower = url.trim_start().to_ascii_lowercase();
        if lower.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Invalid(format!(
                "database URL {:?} has an unsupported scheme: expected sqlite: \
                 (e.g. sqlite://voxrelay.db?mode=rwc or sqlite::memory:), postgres:// or postgresql://",
                redact_url(url)
            )))
        }
    }

    /// `"sqlite"` or `"postgres"`, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What replaces a password in a redacted URL.
const REDACTED: &str = "***";

/// The URL with any password replaced by `***`: the one in the user-info part
/// (`postgres://user:secret@host/db`) and a `password=` query parameter.
///
/// The URL is not otherwise validated, so this is safe to call on anything a user typed.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // `sqlite:path` and `sqlite::memory:` have no authority, hence no user info.
        return redact_query_password(url);
    };
    let rest_start = scheme_end + "://".len();
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];

    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..rest_start]);
    match authority.rfind('@') {
        Some(at) => {
            let user_info = &authority[..at];
            match user_info.find(':') {
                Some(colon) => {
                    out.push_str(&user_info[..colon]);
                    out.push(':');
                    out.push_str(REDACTED);
                }
                None => out.push_str(user_info),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(&redact_query_password(&rest[authority_end..]));
    out
}

/// Replaces the value of every `password=` query parameter (case-insensitive key) in `text`,
/// which is a URL or a URL's tail starting at its path.
fn redact_query_password(text: &str) -> String {
    let Some(question) = text.find('?') else {
        return text.to_string();
    };
    let (head, query_and_fragment) = text.split_at(question + 1);
    let (query, fragment) = match query_and_fragment.find('#') {
        Some(hash) => query_and_fragment.split_at(hash),
        None => (query_and_fragment, ""),
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                format!("{key}={REDACTED}")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{head}{}{fragment}", redacted.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_scheme_picks_the_backend() {
        let cases = [
            ("sqlite://voxrelay.db?mode=rwc", Backend::Sqlite),
            ("sqlite::memory:", Backend::Sqlite),
            ("SQLite:data/voxrelay.db", Backend::Sqlite),
            ("postgres://postgres@127.0.0.1:5432/test", Backend::Postgres),
            ("postgresql://u:p@db.internal/voxrelay", Backend::Postgres),
        ];
        for (url, expected) in cases {
            assert_eq!(Backend::from_url(url).ok(), Some(expected), "{url}");
        }
    }

    #[test]
    fn an_unknown_scheme_is_rejected_without_leaking_the_password() {
        match Backend::from_url("mysql://root:hunter2@localhost/voxrelay") {
            Err(StoreError::Invalid(message)) => {
                assert!(
                    message.contains("mysql://root:***@localhost/voxrelay"),
                    "{message}"
                );
                assert!(message.contains("unsupported scheme"), "{message}");
                assert!(!message.contains("hunter2"), "{message}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert!(Backend::from_url("voxrelay.db").is_err());
        assert!(Backend::from_url("").is_err());
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        let cases = [
            (
                "postgres://voxrelay:s3cr%40t@db:5432/voxrelay?sslmode=require",
                "postgres://voxrelay:***@db:5432/voxrelay?sslmode=require",
            ),
            ("postgres://a:b@c@host/db", "postgres://a:***@host/db"),
            (
                "postgres://postgres@127.0.0.1/test",
                "postgres://postgres@127.0.0.1/test",
            ),
            (
                "postgresql://host/db?user=u&password=pw&application_name=vr",
                "postgresql://host/db?user=u&password=***&application_name=vr",
            ),
            ("postgres://u:pw@host", "postgres://u:***@host"),
            (
                "sqlite://voxrelay.db?mode=rwc",
                "sqlite://voxrelay.db?mode=rwc",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }
}
