//! `POST /twilio/status`: Twilio's status callback is signature-checked like the voice webhook
//! (a bad or missing signature: 403, nothing recorded), and each signed report is recorded on
//! the call and shown by `GET /api/v1/calls/{sid}`.

use std::time::Duration;

use voxrelay::domain::CallStatus;
use voxrelay::twilio::signature;
use voxrelay_sim::world::{SIM_ADMIN_TOKEN, SIM_TWILIO_AUTH_TOKEN, World, WorldOptions};

const SID: &str = "CA5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

async fn post(world: &World, form: &[(&str, &str)], signature: Option<String>) -> u16 {
    let url = format!("http://{}/twilio/status", world.proxy_addr);
    let params: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let signature =
        signature.unwrap_or_else(|| signature::compute(SIM_TWILIO_AUTH_TOKEN, &url, &params));
    reqwest::Client::new()
        .post(&url)
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_status_callback_is_recorded_only_when_its_signature_checks_out() {
    let world = World::start(WorldOptions::default()).await.expect("world");
    world
        .add_business(
            "dental",
            "Bright Smile Dental",
            "We clean teeth.",
            "Hello.",
            "+15005550006",
        )
        .await
        .expect("business");
    world
        .store
        .insert_call(&voxrelay::store::NewCall {
            call_sid: SID.into(),
            stream_sid: None,
            business_id: "dental".into(),
            direction: voxrelay::domain::Direction::Outbound,
            from_number: "+15005550006".into(),
            to_number: "+14155550100".into(),
            started_at_ms: voxrelay::store::now_ms(),
            instance_id: String::new(),
        })
        .await
        .expect("call");
    let ringing = [
        ("CallSid", SID),
        ("CallStatus", "ringing"),
        ("AccountSid", "AC1"),
    ];
    assert_eq!(
        post(&world, &ringing, Some("bm90IGEgc2lnbmF0dXJl".into())).await,
        403
    );
    assert_eq!(post(&world, &ringing, Some(String::new())).await, 403);
    // Signed for other fields: 403 too.
    let url = format!("http://{}/twilio/status", world.proxy_addr);
    let other = signature::compute(
        SIM_TWILIO_AUTH_TOKEN,
        &url,
        &[("CallSid".to_string(), SID.to_string())],
    );
    assert_eq!(post(&world, &ringing, Some(other)).await, 403);

    assert_eq!(post(&world, &ringing, None).await, 204);
    let completed = [
        ("CallSid", SID),
        ("CallStatus", "completed"),
        ("CallDuration", "37"),
        ("AnsweredBy", "human"),
    ];
    assert_eq!(post(&world, &completed, None).await, 204);
    // Signed, but not a status Twilio sends: 400, nothing recorded.
    assert_eq!(
        post(
            &world,
            &[("CallSid", SID), ("CallStatus", "exploded")],
            None
        )
        .await,
        400
    );

    let mut statuses = Vec::new();
    for _ in 0..100 {
        statuses = world.store.call_statuses(SID).await.expect("statuses");
        if statuses.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen: Vec<CallStatus> = statuses.iter().map(|s| s.status).collect();
    assert_eq!(seen, [CallStatus::Ringing, CallStatus::Completed]);
    assert_eq!(statuses[1].duration_s, Some(37));
    assert_eq!(statuses[1].answered_by.as_deref(), Some("human"));

    let shown: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/api/v1/calls/{SID}", world.proxy_addr))
        .bearer_auth(SIM_ADMIN_TOKEN)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["statuses"][0]["status"], "ringing");
    assert_eq!(shown["statuses"][1]["status"], "completed");
    assert_eq!(shown["statuses"][1]["duration_s"], 37);
    world.stop().await;
}
