//! The admin API over HTTP against the running router (the simulated world: the proxy on a
//! loopback port), on SQLite and, when `VOXRELAY_TEST_POSTGRES_URL` is set (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`), on PostgreSQL in a schema of its own, dropped
//! afterwards.

use reqwest::{Method, StatusCode};
use serde_json::json;

use voxrelay::domain::Direction;
use voxrelay::http::admin::route_table;
use voxrelay::store::{NewCall, NewCallEvent, NewPromptVersion};
use voxrelay_sim::world::{SIM_ADMIN_TOKEN, SIM_VIEWER_TOKEN, World, WorldOptions};

mod common;
use common::api::{Api, status_of};
use common::in_postgres_schema;

// -------------------------------------------------------------------------------------------
// Scenarios

async fn no_token_is_401_a_viewer_reads_but_cannot_promote(api: Api, _world: &World) {
    api.business("dental", "+15005550006").await;
    let draft = api
        .draft("dental", "Open {{ business.name }} at eight.")
        .await;

    for path in ["/businesses", "/businesses/dental", "/openapi.json"] {
        let r = api.get(path, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: {}", r.text);
        let r = api.get(path, Some("not-a-token")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: {}", r.text);
    }
    let r = api.post("/businesses", None, json!({"name": "X"})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = api.get("/businesses/dental", Some(SIM_VIEWER_TOKEN)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["business"]["id"], "dental");
    assert_eq!(r.json["numbers"], json!(["+15005550006"]));
    let r = api
        .get(&format!("/prompts/{draft}"), Some(SIM_VIEWER_TOKEN))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let r = api.promote(&draft, "production", SIM_VIEWER_TOKEN).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = api
        .post("/businesses", Some(SIM_VIEWER_TOKEN), json!({"name": "X"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(status_of(&api.statuses("dental").await, &draft), "draft");
}

async fn draft_staging_production_and_rollback(api: Api, _world: &World) {
    api.business("dental", "+15005550006").await;
    let v1 = api
        .draft("dental", "Open {{ business.name }} at eight.")
        .await;

    let r = api.promote(&v1, "staging", SIM_ADMIN_TOKEN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["version"]["status"], "staging");
    let r = api.promote(&v1, "production", SIM_ADMIN_TOKEN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["version"]["status"], "production");

    let v2 = api
        .draft("dental", "Open {{ business.name }} at nine.")
        .await;
    let r = api.admin_get(&format!("/prompts/{v2}")).await;
    assert_eq!(r.json["parent_version_id"], v1.as_str(), "{}", r.text);
    let r = api.promote(&v2, "production", SIM_ADMIN_TOKEN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let statuses = api.statuses("dental").await;
    assert_eq!(status_of(&statuses, &v1), "archived");
    assert_eq!(status_of(&statuses, &v2), "production");

    // Production cannot go back to staging.
    let r = api.promote(&v2, "staging", SIM_ADMIN_TOKEN).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);

    let r = api
        .admin_post(
            "/businesses/dental/prompts/rollback",
            json!({"direction": "inbound", "to": v1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["id"], v1.as_str());
    assert_eq!(r.json["status"], "production");
    let statuses = api.statuses("dental").await;
    assert_eq!(status_of(&statuses, &v1), "production");
    assert_eq!(status_of(&statuses, &v2), "archived");

    // The preview builds the production version, rendered.
    let r = api
        .admin_get("/businesses/dental/preview?direction=inbound")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let full = r.json["full"].as_str().expect("full");
    assert!(
        full.contains("Open Bright Smile Dental at eight."),
        "{full}"
    );
    assert!(r.json["full_tokens"].as_u64().expect("tokens") > 0);
    assert!(r.json["compact_tokens"].as_u64().expect("tokens") > 0);
    assert!(r.json["shared_prefix_tokens"].as_u64().expect("tokens") > 0);
    let r = api
        .admin_get(&format!("/businesses/dental/preview?version={v2}"))
        .await;
    assert!(
        r.json["full"].as_str().expect("full").contains("at nine."),
        "{}",
        r.text
    );

    let r = api.admin_get("/prompts/pv_missing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = api.admin_get("/businesses/nobody").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

async fn concurrent_promotes_leave_exactly_one_production(api: Api, _world: &World) {
    api.business("dental", "+15005550006").await;
    let mut drafts = Vec::new();
    for n in 0..8 {
        drafts.push(
            api.draft(
                "dental",
                &format!("Version {n} of {{{{ business.name }}}}."),
            )
            .await,
        );
    }
    let replies = futures_util::future::join_all(
        drafts
            .iter()
            .map(|id| api.promote(id, "production", SIM_ADMIN_TOKEN)),
    )
    .await;
    for r in &replies {
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::CONFLICT,
            "{} {}",
            r.status,
            r.text
        );
    }
    assert!(replies.iter().any(|r| r.status == StatusCode::OK));
    let statuses = api.statuses("dental").await;
    let production: Vec<_> = statuses.iter().filter(|(_, s)| s == "production").collect();
    assert_eq!(production.len(), 1, "{statuses:?}");
}

async fn validation_rejects_each_bad_body_with_its_message(api: Api, world: &World) {
    api.business("dental", "+15005550006").await;
    let over_cap = "The clinic explains every treatment in plain words. ".repeat(600);
    for (body, expected) in [
        ("Hello {{ caller.secret_code }}.", "caller.secret_code"),
        ("Hello ⟦BUSINESS:other⟧ there.", "layer marker"),
        (over_cap.as_str(), "hard cap"),
    ] {
        let r = api
            .admin_post(
                "/businesses/dental/prompts",
                json!({"direction": "inbound", "body": body}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        let problems = r.json["problems"].as_array().expect("problems");
        assert!(
            problems
                .iter()
                .any(|p| p.as_str().is_some_and(|p| p.contains(expected))),
            "{expected}: {}",
            r.text
        );
        assert!(
            r.json["error"]
                .as_str()
                .is_some_and(|e| e.contains(expected)),
            "{}",
            r.text
        );
    }
    assert!(api.statuses("dental").await.is_empty());

    // A body stored behind validation's back is validated again on promote.
    let stored = world
        .store
        .create_prompt_version(&NewPromptVersion {
            business_id: "dental".into(),
            direction: Direction::Inbound,
            body: "Hello {{ caller.secret_code }}.".into(),
            parent_version_id: None,
            compact_tokens: None,
            full_tokens: None,
            author: "test".into(),
            note: String::new(),
        })
        .await
        .expect("stored");
    let r = api.promote(&stored.id, "production", SIM_ADMIN_TOKEN).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("caller.secret_code"), "{}", r.text);
    assert_eq!(
        status_of(&api.statuses("dental").await, &stored.id),
        "draft"
    );

    // A malformed request is a JSON 400.
    let r = api
        .admin_post(
            "/businesses/dental/prompts",
            json!({"body": "no direction"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.json["error"].is_string(), "{}", r.text);
}

async fn the_diff_of_two_versions_shows_the_changed_lines(api: Api, _world: &World) {
    api.business("dental", "+15005550006").await;
    let v1 = api
        .draft(
            "dental",
            "Welcome to {{ business.name }}.\nWe open at eight.\nBye.\n",
        )
        .await;
    let v2 = api
        .draft(
            "dental",
            "Welcome to {{ business.name }}.\nWe open at nine.\nBye.\n",
        )
        .await;
    let r = api.admin_get(&format!("/prompts/{v1}/diff/{v2}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("\n-We open at eight.\n"), "{}", r.text);
    assert!(r.text.contains("\n+We open at nine.\n"), "{}", r.text);
    assert!(r.text.contains(" Bye.\n"), "{}", r.text);
    let r = api
        .send(
            Method::GET,
            &format!("/prompts/{v1}/diff/{v2}"),
            Some(SIM_VIEWER_TOKEN),
            None,
            Some("application/json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let diff = r.json["diff"].as_str().expect("diff");
    assert!(diff.contains("+We open at nine."), "{diff}");
}

async fn experiments_and_calls_are_served(api: Api, world: &World) {
    api.business("dental", "+15005550006").await;
    let control = api.draft("dental", "Control {{ business.name }}.").await;
    let variant = api.draft("dental", "Variant {{ business.name }}.").await;
    let r = api
        .admin_post(
            "/businesses/dental/experiments",
            json!({"direction": "inbound", "control_version_id": control,
                   "variant_version_id": variant, "traffic_percent": 50}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_string();
    let r = api
        .admin_post(&format!("/experiments/{id}/start"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["status"], "running");
    let r = api
        .get(&format!("/experiments/{id}"), Some(SIM_VIEWER_TOKEN))
        .await;
    assert_eq!(r.json["status"], "running", "{}", r.text);
    let r = api
        .post(
            &format!("/experiments/{id}/stop"),
            Some(SIM_VIEWER_TOKEN),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api
        .admin_post(&format!("/experiments/{id}/stop"), json!({}))
        .await;
    assert_eq!(r.json["status"], "stopped", "{}", r.text);

    let sid = "CA0123456789abcdef0123456789abcdef";
    world
        .store
        .insert_call(&NewCall {
            call_sid: sid.into(),
            stream_sid: None,
            business_id: "dental".into(),
            direction: Direction::Inbound,
            from_number: "+14155550100".into(),
            to_number: "+15005550006".into(),
            started_at_ms: 1,
            instance_id: String::new(),
        })
        .await
        .expect("call");
    world
        .store
        .set_call_prompt(
            sid,
            Some(&variant),
            Some((&id, voxrelay::domain::Arm::Variant)),
        )
        .await
        .expect("prompt");
    world
        .store
        .insert_event(&NewCallEvent {
            call_sid: sid.into(),
            business_id: "dental".into(),
            at_ms: 2,
            kind: voxrelay::domain::GuardKind::Injection,
            score: Some(0.9),
            rules: vec!["ignore_previous".into()],
            action: voxrelay::domain::GuardAction::Blocked,
            detail: "ignore your instructions".into(),
            verdict: Some(voxrelay::domain::Verdict::Block),
            stage: Some(voxrelay::domain::Stage::Rules),
        })
        .await
        .expect("event");
    let r = api
        .get(&format!("/calls/{sid}"), Some(SIM_VIEWER_TOKEN))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["call"]["call_sid"], sid);
    assert_eq!(r.json["prompt_version_id"], variant.as_str());
    assert_eq!(r.json["variant"], "variant");
    assert_eq!(r.json["events"][0]["kind"], "injection", "{}", r.text);
    let r = api
        .get("/calls?business_id=dental&limit=10", Some(SIM_VIEWER_TOKEN))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json[0]["call_sid"], sid, "{}", r.text);
    let r = api.admin_get("/calls?business_id=nobody").await;
    assert_eq!(r.json, json!([]), "{}", r.text);
    let r = api.admin_get("/calls").await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(1), "{}", r.text);
    let r = api.admin_get("/calls/CAmissing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn businesses_are_changed_and_deleted_with_what_hangs_off_them(api: Api, world: &World) {
    api.business("dental", "+15005550006").await;
    let patch =
        |body: serde_json::Value| api.admin(Method::PATCH, "/businesses/dental", Some(body));

    // A change replaces only the fields given.
    let r = patch(json!({"name": "Bright Smile", "hours": "Mon-Fri 8-6",
                         "required_sections": ["Hours", "Parking"]}))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "Bright Smile");
    assert_eq!(r.json["hours"], "Mon-Fri 8-6");
    assert_eq!(r.json["required_sections"], json!(["Hours", "Parking"]));
    assert_eq!(r.json["greeting_instructions"], "Hello.", "{}", r.text);
    let r = patch(json!({"name": "  "})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(
        r.json["error"].as_str().unwrap_or("").contains("name"),
        "{}",
        r.text
    );
    let r = patch(json!({"colour": "blue"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = api
        .admin(
            Method::PATCH,
            "/businesses/nobody",
            Some(json!({"name": "X"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = api
        .send(
            Method::PATCH,
            "/businesses/dental",
            Some(SIM_VIEWER_TOKEN),
            Some(json!({"name": "X"})),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The business's required sections now gate every version.
    let r = api
        .admin_post(
            "/businesses/dental/prompts",
            json!({"direction": "inbound", "body": "## Hours\n{{ business.hours }}\n"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let problems = r.json["problems"].to_string();
    assert!(
        problems.contains("Parking") && !problems.contains("Hours"),
        "{problems}"
    );
    let id = api
        .draft(
            "dental",
            "## Hours\nWe open {{ business.hours }}.\nParking: behind the clinic.\n",
        )
        .await;
    let r = api
        .admin_get(&format!(
            "/businesses/dental/preview?direction=inbound&version={id}"
        ))
        .await;
    assert!(
        r.json["full"]
            .as_str()
            .unwrap_or("")
            .contains("We open Mon-Fri 8-6."),
        "the stored hours are rendered: {}",
        r.text
    );

    // Numbers: removed once, then not found.
    let r = api
        .admin(
            Method::DELETE,
            "/businesses/dental/numbers/%2B15005550006",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = api
        .admin(
            Method::DELETE,
            "/businesses/dental/numbers/%2B15005550006",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = api.admin_get("/businesses/dental").await;
    assert_eq!(r.json["numbers"], json!([]), "{}", r.text);
    assert_eq!(
        world
            .store
            .business_for_number("+15005550006")
            .await
            .expect("store"),
        None
    );

    // Deleting the business takes its versions and experiments along; its calls stay.
    let other = api
        .draft("dental", "## Hours\nLate.\nParking: none.\n")
        .await;
    api.running_experiment("dental", &id, &other, 50).await;
    let sid = "CA00000000000000000000000000000abc";
    world
        .store
        .insert_call(&NewCall {
            call_sid: sid.into(),
            stream_sid: None,
            business_id: "dental".into(),
            direction: Direction::Inbound,
            from_number: "+14155550100".into(),
            to_number: "+15005550006".into(),
            started_at_ms: 1,
            instance_id: String::new(),
        })
        .await
        .expect("call");
    let r = api
        .send(
            Method::DELETE,
            "/businesses/dental",
            Some(SIM_VIEWER_TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api.admin(Method::DELETE, "/businesses/dental", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        api.admin_get("/businesses/dental").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.admin_get(&format!("/prompts/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.admin_get(&format!("/calls/{sid}")).await.status,
        StatusCode::OK
    );
    let r = api.admin(Method::DELETE, "/businesses/dental", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    // The id is free again.
    api.business("dental", "+15005550006").await;
}

async fn the_openapi_document_describes_every_route(api: Api, _world: &World) {
    let r = api.get("/openapi.json", Some(SIM_VIEWER_TOKEN)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.json["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with('3')),
        "{}",
        r.text
    );
    let paths = r.json["paths"].as_object().expect("paths");
    let routes = route_table();
    assert!(routes.len() >= 24, "{routes:?}");
    for (method, path) in &routes {
        assert!(
            paths
                .get(*path)
                .and_then(|item| item.get(method.to_ascii_lowercase()))
                .is_some(),
            "{method} {path} is routed but not in the OpenAPI document"
        );
    }
    // And nothing is documented that is not routed.
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                assert!(
                    routes
                        .iter()
                        .any(|(m, p)| p == path && m.eq_ignore_ascii_case(method)),
                    "{method} {path} is documented but not routed"
                );
            }
        }
    }
    assert!(
        r.json["components"]["securitySchemes"]["bearer"].is_object(),
        "{}",
        r.text
    );
    // Every operation documents the errors any of them can give, as JSON.
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            for code in ["400", "401", "403", "500"] {
                assert_eq!(
                    operation["responses"][code]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} does not document {code}"
                );
            }
        }
    }
}

async fn every_error_is_json_even_axums_own_rejections(api: Api, _world: &World) {
    // A malformed query and a malformed path parameter are refused by axum's extractors
    // before any handler runs; their plain-text rejections become the documented JSON.
    for path in ["/calls?limit=lots", "/experiments/x/assignment"] {
        let r = api.admin_get(path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
        assert!(
            r.json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {}",
            r.text
        );
    }
    let r = api.get("/businesses", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json["error"].is_string(), "{}", r.text);
}

// -------------------------------------------------------------------------------------------
// Backends

/// Starts a world on `database_url` (`None`: a SQLite file), runs `scenario` against its API,
/// then stops it.
async fn run_world<F>(database_url: Option<String>, scenario: F)
where
    F: AsyncFnOnce(Api, &World),
{
    let world = World::start(WorldOptions {
        database_url,
        ..WorldOptions::default()
    })
    .await
    .expect("world starts");
    let api = Api::new(&world);
    scenario(api, &world).await;
    world.stop().await;
}

/// One test per backend for each scenario, named after it.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::run_world(None, super::$scenario).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::in_postgres_schema(stringify!($scenario), |url| {
                        super::run_world(Some(url), super::$scenario)
                    })
                    .await;
                }
            )*
        }
    };
}

on_both_backends!(
    no_token_is_401_a_viewer_reads_but_cannot_promote,
    draft_staging_production_and_rollback,
    concurrent_promotes_leave_exactly_one_production,
    validation_rejects_each_bad_body_with_its_message,
    the_diff_of_two_versions_shows_the_changed_lines,
    experiments_and_calls_are_served,
    the_openapi_document_describes_every_route,
    every_error_is_json_even_axums_own_rejections,
    businesses_are_changed_and_deleted_with_what_hangs_off_them,
);
