//! A client of Twilio's REST API (v2010), for what a live call needs from it: redirecting the
//! call to new TwiML (the human fallback, and a transfer) and placing a call.
//!
//! - Auth: HTTP Basic with the Account SID and the auth token (the token is never logged).
//! - Bodies are `application/x-www-form-urlencoded`; answers are JSON. An error answer carries
//!   `{"code": 21220, "message": "…", "more_info": "…", "status": 400}`, kept in
//!   [`RestError::Rejected`].
//! - The base URL is configurable (`fallback.twilio_api_url`), so tests run it against the
//!   Stoplight Prism mock of Twilio's own OpenAPI description
//!   (`tests/fixtures/twilio/openapi/`), which validates every request.
//!
//! Sources: <https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource>
//! (`POST /2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json`, form `Twiml`),
//! <https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource>
//! (`POST …/Calls.json`, form `To`, `From`, `Url` or `Twiml`),
//! <https://www.twilio.com/docs/usage/requests-to-twilio> (Basic auth),
//! <https://www.twilio.com/docs/usage/twilios-response> (the error body).

use std::time::Duration;

use serde::Deserialize;

use crate::domain::CallSid;

/// The longest answer body read, bytes: a Call resource is about 2 KiB.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What went wrong with a REST request.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The Account SID is not `AC` and 32 hex digits (it would go into the URL path).
    #[error("not an Account SID (AC and 32 hex digits)")]
    BadAccountSid,
    /// The request could not be sent or its answer not read (connect, TLS, timeout).
    #[error("Twilio REST request failed: {0}")]
    Transport(#[source] reqwest::Error),
    /// Twilio answered with an error status.
    #[error("Twilio answered HTTP {status} (code {code:?}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// Twilio's error code (for example 21220, "call is not in-progress"), if the body had one.
        code: Option<i64>,
        /// Twilio's message, or the start of the body.
        message: String,
    },
    /// A 2xx answer that is not a Call resource.
    #[error("Twilio's answer is not a Call resource: {0}")]
    BadAnswer(String),
}

/// The fields of a Call resource this project reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CallResource {
    /// `CA…`.
    pub sid: String,
    /// `queued`, `ringing`, `in-progress`, `completed`, …
    pub status: Option<String>,
}

#[derive(Deserialize)]
struct TwilioError {
    code: Option<i64>,
    message: Option<String>,
}

/// How the REST API is authenticated (HTTP Basic), from the environment only
/// (<https://www.twilio.com/docs/usage/requests-to-twilio#authenticate-with-http>):
/// - `TWILIO_ACCOUNT_SID` (optional) and `TWILIO_AUTH_TOKEN`: the Account SID and the auth
///   token; without `TWILIO_ACCOUNT_SID`, the Account SID of the call's `start` is the user;
/// - or `TWILIO_API_KEY` (`SK…`) and `TWILIO_API_SECRET`: an API key, which Twilio recommends
///   for production (it can be revoked alone), with `TWILIO_ACCOUNT_SID` naming its account.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `TWILIO_ACCOUNT_SID`, when set: the account REST requests act for.
    pub account_sid: Option<String>,
    /// The Basic-auth secret.
    pub auth: Auth,
}

/// The Basic-auth part of [`Credentials`].
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// The account's auth token (user: the Account SID).
    AuthToken(String),
    /// An API key (user: its `SK…` SID, password: its secret).
    ApiKey {
        /// `SK…`.
        sid: String,
        /// The key's secret.
        secret: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            Auth::AuthToken(_) => "auth token (***)",
            Auth::ApiKey { .. } => "API key (***)",
        };
        f.debug_struct("Credentials")
            .field("account_sid", &self.account_sid)
            .field("auth", &auth)
            .finish()
    }
}

impl Credentials {
    /// The auth token alone (the Account SID comes from each call's `start`).
    pub fn auth_token(token: impl Into<String>) -> Credentials {
        Credentials {
            account_sid: None,
            auth: Auth::AuthToken(token.into()),
        }
    }

    /// The account a request for a call of `call_account` acts for: `TWILIO_ACCOUNT_SID`
    /// when set, else the call's.
    pub fn account<'a>(&'a self, call_account: &'a str) -> &'a str {
        self.account_sid.as_deref().unwrap_or(call_account)
    }

    /// The Basic-auth user and password for a request on `account`.
    pub fn basic(&self, account: &str) -> (String, String) {
        match &self.auth {
            Auth::AuthToken(token) => (account.to_string(), token.clone()),
            Auth::ApiKey { sid, secret } => (sid.clone(), secret.clone()),
        }
    }
}

/// A Twilio REST client for one set of credentials. Cheap to clone (the HTTP client is
/// shared).
#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base_url: String,
    credentials: Credentials,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base_url", &self.base_url)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// Whether `sid` is a 34-character SID with the two-letter `prefix` and 32 hex digits.
pub fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.len() == 34 && sid.starts_with(prefix) && sid.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

impl RestClient {
    /// A client of the API at `base_url` (`https://api.twilio.com`, no trailing slash needed)
    /// whose requests each take at most `timeout`. The process's rustls provider must be
    /// installed first ([`crate::install_crypto_provider`]).
    ///
    /// Errors: [`RestError::Transport`] when the HTTP client cannot be built.
    pub fn new(
        base_url: &str,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<RestClient, RestError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(RestError::Transport)?;
        Ok(RestClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            credentials,
        })
    }

    /// `TWILIO_ACCOUNT_SID`, when configured: the account calls are placed for.
    pub fn account_sid(&self) -> Option<String> {
        self.credentials.account_sid.clone()
    }

    /// Redirects the live call `call_sid` to the TwiML document `twiml`: Twilio stops what the
    /// call is doing (a `<Connect><Stream>` ends, its stream gets `stop`) and runs `twiml`.
    ///
    /// Errors: [`RestError`]; Twilio answers 400 with code 21220 when the call is no longer
    /// in progress.
    pub async fn redirect_call(
        &self,
        account_sid: &str,
        call_sid: &CallSid,
        twiml: &str,
    ) -> Result<CallResource, RestError> {
        let resource = format!("Calls/{call_sid}.json");
        self.post(account_sid, &resource, &[("Twiml", twiml)]).await
    }

    /// Places a call: `form` holds the Call resource's create parameters (`To`, `From`, `Url`
    /// or `Twiml`, `StatusCallback`, `MachineDetection`, …) as Twilio names them.
    ///
    /// Errors: [`RestError`].
    pub async fn create_call(
        &self,
        account_sid: &str,
        form: &[(&str, &str)],
    ) -> Result<CallResource, RestError> {
        self.post(account_sid, "Calls.json", form).await
    }

    /// POSTs `form` to `resource` (a path under the account, such as `Calls.json`) with the
    /// account's credentials; the Account SID is checked before it goes into the path.
    async fn post(
        &self,
        account_sid: &str,
        resource: &str,
        form: &[(&str, &str)],
    ) -> Result<CallResource, RestError> {
        let account_sid = self.credentials.account(account_sid);
        if !is_sid(account_sid, "AC") {
            return Err(RestError::BadAccountSid);
        }
        let (user, password) = self.credentials.basic(account_sid);
        let url = format!(
            "{}/2010-04-01/Accounts/{account_sid}/{resource}",
            self.base_url
        );
        let answer = self
            .http
            .post(url)
            .basic_auth(user, Some(password))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form)
            .send()
            .await
            .map_err(RestError::Transport)?;
        let status = answer.status();
        let body = answer.bytes().await.map_err(RestError::Transport)?;
        let body = &body[..body.len().min(MAX_ANSWER_BYTES)];
        if !status.is_success() {
            let parsed = serde_json::from_slice::<TwilioError>(body).ok();
            let message = parsed
                .as_ref()
                .and_then(|e| e.message.clone())
                .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into());
            return Err(RestError::Rejected {
                status: status.as_u16(),
                code: parsed.and_then(|e| e.code),
                message,
            });
        }
        serde_json::from_slice(body).map_err(|e| RestError::BadAnswer(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_are_two_letters_and_32_hex_digits() {
        assert!(is_sid("AC0123456789abcdef0123456789abcdef", "AC"));
        assert!(!is_sid("CA0123456789abcdef0123456789abcdef", "AC"));
        assert!(!is_sid("AC0123456789abcdef0123456789abcde", "AC"));
        assert!(!is_sid("AC0123456789abcdef0123456789abcd/x", "AC"));
    }

    #[test]
    fn basic_auth_is_the_account_and_token_or_the_api_key() {
        let call = "AC0123456789abcdef0123456789abcdef";
        let mine = "ACffffffffffffffffffffffffffffffff";
        let token = Credentials::auth_token("tok");
        assert_eq!(token.account(call), call);
        assert_eq!(token.basic(call), (call.to_string(), "tok".to_string()));
        let key = Credentials {
            account_sid: Some(mine.into()),
            auth: Auth::ApiKey {
                sid: "SK0123456789abcdef0123456789abcdef".into(),
                secret: "sec".into(),
            },
        };
        assert_eq!(key.account(call), mine, "the configured account wins");
        assert_eq!(
            key.basic(mine),
            (
                "SK0123456789abcdef0123456789abcdef".to_string(),
                "sec".to_string()
            )
        );
        let printed = format!("{key:?}");
        assert!(
            !printed.contains("sec\"") && printed.contains("API key"),
            "{printed}"
        );
    }

    #[tokio::test]
    async fn a_bad_account_sid_never_leaves_the_process() {
        crate::install_crypto_provider();
        let client = RestClient::new(
            "http://127.0.0.1:9",
            Credentials::auth_token("t"),
            Duration::from_secs(1),
        )
        .unwrap();
        let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
        let err = client
            .redirect_call("AC../../x", &sid, "<Response/>")
            .await
            .unwrap_err();
        assert!(matches!(err, RestError::BadAccountSid), "{err}");
    }
}
