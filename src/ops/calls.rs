//! Placing an outbound call: the use case behind `POST /api/v1/calls` and `voxrelay call place`.
//!
//! The call is placed through Twilio's REST API (`Calls.json`) from the business's number, with
//! our voice webhook as its `Url` (carrying the signed business id and the call's variables, as
//! the webhook already verifies), `/twilio/status` as its status callback, and answering machine
//! detection (`MachineDetection=DetectMessageEnd`: Twilio waits for a machine's greeting to end,
//! so the webhook's `AnsweredBy` says whether to talk or to leave the voicemail). The status
//! callback is Twilio's default: one request when the call ends, with its final status and
//! duration (decision: that is what an operator reads; `ringing` and `in-progress` callbacks
//! would double the webhook traffic of every call for nothing recorded that matters; and
//! Prism 5.16, which checks our requests against Twilio's OpenAPI description, cannot read the
//! repeated `StatusCallbackEvent` keys that asking for them takes, stoplightio/prism#2473).
//! Before anything
//! is sent, the guard rails: the number must be E.164, the business's calling hours (in its time
//! zone) must be open unless an admin forces the call, and its rate (calls a minute) must not be
//! spent. Each refusal names its rule.
//!
//! Sources: <https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource>,
//! <https://www.twilio.com/docs/voice/answering-machine-detection>.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::domain::masked_number;
use crate::ops::OpsError;
use crate::outbound::{self, CallingHours};
use crate::store::{self, Store};
use crate::twilio::rest::RestClient;
use crate::twilio::token;

/// How long the webhook URL of a placed call stays valid, ms: ringing (Twilio's `Timeout`, 60 s
/// by default, at most 600 s), the answering machine's greeting, and a margin.
const WEBHOOK_URL_MS: i64 = 15 * 60 * 1000;

/// The window the business's rate counts calls over, ms.
const RATE_WINDOW_MS: i64 = 60_000;

/// A call to place.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceCall {
    /// The business placing it.
    pub business_id: String,
    /// The number to call, E.164 (`+14155550100`; spaces and dashes are tolerated).
    pub to: String,
    /// The business's number to call from (one routed to it); default: its first.
    #[serde(default)]
    pub from: Option<String>,
    /// Per-call variables, `call.NAME` in the outbound prompt and the voicemail message
    /// (at most 16; names lower case; values at most 200 characters).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Place it outside the business's calling hours (the API allows it to admins only).
    #[serde(default)]
    pub force: bool,
}

/// A placed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PlacedCall {
    /// Twilio's CallSid.
    pub call_sid: String,
    /// The business.
    pub business_id: String,
    /// The number it is placed from, E.164.
    pub from: String,
    /// The number called, E.164.
    pub to: String,
    /// Twilio's status of the new call (`queued`).
    pub status: Option<String>,
    /// Placed outside the calling hours because it was forced.
    pub forced: bool,
}

/// Places calls: the REST client and what the call's URLs are built from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Placer {
    /// `None`: no Twilio REST credentials; every placement is refused (503).
    rest: Option<RestClient>,
    /// `{public_scheme}://{public_host}`.
    public_base: String,
    signing_key: Vec<u8>,
}

impl Placer {
    /// A placer whose calls' URLs point at this instance's public URL
    /// ([`Config::public_url`]), signed with `signing_key`, placed with `rest`.
    pub fn new(rest: Option<RestClient>, config: &Config, signing_key: &[u8]) -> Placer {
        Placer {
            rest,
            public_base: config.public_url(""),
            signing_key: signing_key.to_vec(),
        }
    }

    /// Places the call `request` asks for, at `now` (the calling hours are judged at it).
    ///
    /// Errors (each naming its rule): [`OpsError::NotFound`] for an unknown business;
    /// [`OpsError::Invalid`] for a number that is not E.164, a bad variable, a `from` that is
    /// not the business's, or a business without a number; [`OpsError::Refused`] outside the
    /// calling hours; [`OpsError::RateLimited`] when the business's rate is spent;
    /// [`OpsError::Unavailable`] without Twilio credentials; [`OpsError::Twilio`] when Twilio
    /// refuses it (the reservation is given back).
    pub async fn place(
        &self,
        store: &Store,
        request: PlaceCall,
        now: jiff::Timestamp,
    ) -> Result<PlacedCall, OpsError> {
        let business = crate::ops::business(store, &request.business_id).await?;
        let to = store::normalize_e164(&request.to).map_err(|_| {
            OpsError::Invalid("to: not an E.164 number (e.g. \"+14155550100\")".into())
        })?;
        outbound::validate_variables(&request.variables).map_err(OpsError::Invalid)?;
        let numbers = store.numbers_for_business(&business.id).await?;
        let from = match &request.from {
            Some(from) => {
                let from = store::normalize_e164(from).ok();
                from.filter(|f| numbers.contains(f)).ok_or_else(|| {
                    OpsError::Invalid(format!("from: not a number of business {:?}", business.id))
                })?
            }
            None => numbers.first().cloned().ok_or_else(|| {
                OpsError::Invalid(format!(
                    "business {:?} has no phone number to call from: route one to it first",
                    business.id
                ))
            })?,
        };
        let hours = CallingHours::parse(&business.calling_hours).map_err(OpsError::Invalid)?;
        let zone = jiff::tz::TimeZone::get(&business.time_zone)
            .map_err(|e| OpsError::Invalid(format!("time_zone: {e}")))?;
        if !hours.is_open(now, &zone) && !request.force {
            return Err(OpsError::Refused(format!(
                "calling hours: business {:?} calls only {} ({}), and it is {} there; an admin \
                 may force the call",
                business.id,
                hours,
                business.time_zone,
                outbound::local_time(now, &zone)
            )));
        }
        let rest = self.rest.as_ref().ok_or_else(|| {
            OpsError::Unavailable(
                "no Twilio REST credentials: set TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or \
                 with TWILIO_API_KEY and TWILIO_API_SECRET"
                    .into(),
            )
        })?;
        let account = rest.account_sid().ok_or_else(|| {
            OpsError::Unavailable(
                "TWILIO_ACCOUNT_SID is not set: a call can only be placed for a known account"
                    .into(),
            )
        })?;
        let now_ms = now.as_millisecond();
        let reservation = store
            .reserve_outbound(
                &store::NewOutboundCall {
                    business_id: &business.id,
                    to_number: &to,
                    variables: &request.variables,
                    forced: request.force,
                    placed_at_ms: now_ms,
                },
                RATE_WINDOW_MS,
                business.outbound_per_minute,
            )
            .await?
            .ok_or_else(|| {
                OpsError::RateLimited(format!(
                    "rate limit: business {:?} may place {} calls a minute; try again in a minute",
                    business.id, business.outbound_per_minute
                ))
            })?;
        let url = format!(
            "{}/twilio/voice?{}",
            self.public_base,
            token::sign_outbound_with(
                &self.signing_key,
                &business.id,
                &request.variables,
                now_ms + WEBHOOK_URL_MS
            )
        );
        let status_callback = format!("{}/twilio/status", self.public_base);
        let form = [
            ("To", to.as_str()),
            ("From", from.as_str()),
            ("Url", url.as_str()),
            ("Method", "POST"),
            ("StatusCallback", status_callback.as_str()),
            // No StatusCallbackEvent: Twilio's default, one callback when the call ends, with
            // its final status (completed, busy, no-answer, failed, canceled) and duration.
            ("StatusCallbackMethod", "POST"),
            ("MachineDetection", "DetectMessageEnd"),
        ];
        let placed = match rest.create_call(&account, &form).await {
            Ok(placed) => placed,
            Err(e) => {
                if let Err(undo) = store.cancel_outbound(&reservation).await {
                    tracing::warn!(error = %undo, "cannot give back the refused call's place under the rate");
                }
                tracing::warn!(business_id = %business.id, to = %masked_number(&to), error = %e,
                    "Twilio refused the outbound call");
                return Err(OpsError::Twilio(e.to_string()));
            }
        };
        store.confirm_outbound(&reservation, &placed.sid).await?;
        tracing::info!(call_sid = %placed.sid, business_id = %business.id,
            to = %masked_number(&to), variables = request.variables.len(), forced = request.force,
            "outbound call placed");
        Ok(PlacedCall {
            call_sid: placed.sid,
            business_id: business.id,
            from,
            to,
            status: placed.status,
            forced: request.force,
        })
    }
}
