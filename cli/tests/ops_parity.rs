//! The CLI (`voxrelay prompt …`, the real binary against the world's database) and the admin
//! API (over HTTP, against the running router) give the same answers, because both call the
//! same operator use cases: which business text a preview and a call use, version create and
//! promote (validation and token counts), and rollback (which validates too). The scenarios use
//! the root tests' helpers (`tests/common`).

use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use voxrelay::domain::Direction;
use voxrelay::store::BusinessUpdate;
use voxrelay_sim::world::World;

#[path = "../../tests/common/mod.rs"]
mod common;
use common::api::Api;
use common::{dental_world, dental_world_configured};

/// What the CLI said: success, standard output, standard error.
struct Said {
    ok: bool,
    out: String,
    err: String,
}

/// Runs `voxrelay --config config/voxrelay.toml ARGS` on the world's database.
fn cli(world: &World, args: &[&str]) -> Said {
    cli_with(world, args, &[])
}

/// [`cli`] with extra environment variables.
fn cli_with(world: &World, args: &[&str], env: &[(&str, &str)]) -> Said {
    let output = Command::new(env!("CARGO_BIN_EXE_voxrelay"))
        .envs(env.iter().copied())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .arg("--config")
        .arg("config/voxrelay.toml")
        .args(args)
        .env("VOXRELAY_DATABASE_URL", &world.config.database.url)
        .env("RUST_LOG", "error")
        .output()
        .expect("the voxrelay binary runs");
    Said {
        ok: output.status.success(),
        out: String::from_utf8_lossy(&output.stdout).into_owned(),
        err: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The FULL prompt printed by `voxrelay prompt preview`.
fn printed_full(out: &str) -> &str {
    let start = out.find("===== FULL =====\n").expect("FULL printed") + 17;
    let end = out
        .find("\n\n===== COMPACT =====")
        .expect("COMPACT printed");
    &out[start..end]
}

/// The `(FULL, COMPACT)` token counts printed by the CLI's validation report.
fn printed_tokens(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("FULL "))
        .expect("token line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[tokio::test]
async fn outbound_previews_never_use_the_inbound_text_on_either_door() {
    let world = dental_world(0).await;
    let api = Api::new(&world);

    // Inbound text only: both doors say there is no outbound prompt.
    let said = cli(
        &world,
        &["prompt", "preview", "dental", "--direction", "outbound"],
    );
    assert!(!said.ok, "{}", said.out);
    assert!(
        format!("{}{}", said.out, said.err).contains("no outbound prompt"),
        "{} {}",
        said.out,
        said.err
    );
    let r = api
        .admin_get("/businesses/dental/preview?direction=outbound")
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("no outbound prompt"), "{}", r.text);

    // With an outbound text, both doors build the same FULL from it, and not from the
    // inbound text.
    world
        .store
        .update_business(
            "dental",
            &BusinessUpdate {
                outbound_ai_prompt: Some("We call to remind you of your appointment.".into()),
                ..Default::default()
            },
        )
        .await
        .expect("outbound text");
    let said = cli(
        &world,
        &["prompt", "preview", "dental", "--direction", "outbound"],
    );
    assert!(said.ok, "{} {}", said.out, said.err);
    let cli_full = printed_full(&said.out);
    assert!(cli_full.contains("remind you of your appointment"));
    assert!(!cli_full.contains("We clean teeth"));
    let r = api
        .admin_get("/businesses/dental/preview?direction=outbound")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["full"].as_str(), Some(cli_full));
    world.stop().await;
}

#[tokio::test]
async fn a_version_of_another_business_or_direction_is_refused_by_both_previews() {
    let world = dental_world(0).await;
    let api = Api::new(&world);
    world
        .add_business(
            "bakery",
            "Corner Bakery",
            "We bake bread.",
            "Hi.",
            "+15005550007",
        )
        .await
        .expect("bakery");
    let r = api
        .admin_post(
            "/businesses/bakery/prompts",
            json!({"direction": "inbound", "body": "{{ business.name }} bakes sourdough."}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let bakery_version = r.json["version"]["id"].as_str().expect("id").to_string();

    let said = cli(
        &world,
        &["prompt", "preview", "dental", "--version", &bakery_version],
    );
    assert!(!said.ok, "the CLI previewed another business's version");
    assert!(said.err.contains("not business"), "{}", said.err);
    let r = api
        .admin_get(&format!(
            "/businesses/dental/preview?version={bakery_version}"
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // The bakery's own inbound version, asked for as its outbound prompt: refused too.
    let said = cli(
        &world,
        &[
            "prompt",
            "preview",
            "bakery",
            "--direction",
            "outbound",
            "--version",
            &bakery_version,
        ],
    );
    assert!(!said.ok);
    let r = api
        .admin_get(&format!(
            "/businesses/bakery/preview?direction=outbound&version={bakery_version}"
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    world.stop().await;
}

#[tokio::test]
async fn create_and_promote_validate_and_count_tokens_the_same_on_both_doors() {
    let world = dental_world(0).await;
    let api = Api::new(&world);
    let dir = tempfile::tempdir().expect("tempdir");
    let body = "{{ business.name }} cleans teeth and whitens them. Ask about check-ups.";
    let file = dir.path().join("v.md");
    std::fs::write(&file, body).expect("write body");
    let file = file.to_str().expect("utf-8 path");

    let said = cli(&world, &["prompt", "create", "dental", "--file", file]);
    assert!(said.ok, "{} {}", said.out, said.err);
    let (cli_full, cli_compact) = printed_tokens(&said.out);
    let cli_id = said
        .out
        .lines()
        .find_map(|l| l.strip_prefix("created "))
        .and_then(|l| l.split_whitespace().next())
        .expect("created line")
        .to_string();
    let r = api
        .admin_post(
            "/businesses/dental/prompts",
            json!({"direction": "inbound", "body": body}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["full_tokens"].as_u64(), Some(cli_full));
    assert_eq!(r.json["compact_tokens"].as_u64(), Some(cli_compact));
    let api_id = r.json["version"]["id"].as_str().expect("id").to_string();
    let stored_cli = world
        .store
        .prompt_version(&cli_id)
        .await
        .expect("store")
        .expect("cli version");
    let stored_api = world
        .store
        .prompt_version(&api_id)
        .await
        .expect("store")
        .expect("api version");
    assert_eq!(stored_cli.full_tokens, stored_api.full_tokens);
    assert_eq!(stored_cli.compact_tokens, stored_api.compact_tokens);
    assert_eq!(stored_cli.full_tokens, Some(cli_full as i64));

    // An unresolved variable is refused by both.
    std::fs::write(
        dir.path().join("bad.md"),
        "{{ business.nope }} cleans teeth.",
    )
    .expect("write");
    let bad = dir.path().join("bad.md");
    let said = cli(
        &world,
        &[
            "prompt",
            "create",
            "dental",
            "--file",
            bad.to_str().expect("path"),
        ],
    );
    assert!(!said.ok);
    assert!(said.out.contains("error:"), "{}", said.out);
    let r = api
        .admin_post(
            "/businesses/dental/prompts",
            json!({"direction": "inbound", "body": "{{ business.nope }} cleans teeth."}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    // Promote through each door: both validate again and report the same counts.
    let said = cli(&world, &["prompt", "promote", &cli_id, "--to", "staging"]);
    assert!(said.ok, "{} {}", said.out, said.err);
    assert_eq!(printed_tokens(&said.out), (cli_full, cli_compact));
    let r = api
        .admin_post(
            &format!("/prompts/{api_id}/promote"),
            json!({"to": "staging"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["full_tokens"].as_u64(), Some(cli_full));
    world.stop().await;
}

#[tokio::test]
async fn rollback_to_a_version_that_no_longer_validates_is_refused_on_both_doors() {
    let world = dental_world(0).await;
    let api = Api::new(&world);
    let mut ids = Vec::new();
    for body in [
        "{{ business.name }} cleans teeth.",
        "{{ business.name }} cleans teeth.\n\n## Hours\nEight to six.",
    ] {
        let r = api
            .admin_post(
                "/businesses/dental/prompts",
                json!({"direction": "inbound", "body": body}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.json["version"]["id"].as_str().expect("id").to_string();
        let r = api
            .admin_post(
                &format!("/prompts/{id}/promote"),
                json!({"to": "production"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        ids.push(id);
    }
    // The business now requires an Hours section, which the first version lacks.
    world
        .store
        .update_business(
            "dental",
            &BusinessUpdate {
                required_sections: Some(vec!["Hours".into()]),
                ..Default::default()
            },
        )
        .await
        .expect("required section");

    let said = cli(&world, &["prompt", "rollback", "dental", "--to", &ids[0]]);
    assert!(!said.ok, "the CLI rolled back to an invalid version");
    assert!(said.out.contains("Hours"), "{}", said.out);
    let r = api
        .admin_post(
            "/businesses/dental/prompts/rollback",
            json!({"direction": "inbound", "to": ids[0]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("Hours"), "{}", r.text);
    let production = world
        .store
        .production_version("dental", Direction::Inbound)
        .await
        .expect("store")
        .expect("production");
    assert_eq!(production.id, ids[1], "the valid version stays production");

    // Once the section is no longer required, both doors roll back.
    world
        .store
        .update_business(
            "dental",
            &BusinessUpdate {
                required_sections: Some(Vec::new()),
                ..Default::default()
            },
        )
        .await
        .expect("no required section");
    let said = cli(&world, &["prompt", "rollback", "dental", "--to", &ids[0]]);
    assert!(said.ok, "{} {}", said.out, said.err);
    let r = api
        .admin_post(
            "/businesses/dental/prompts/rollback",
            json!({"direction": "inbound", "to": ids[1]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    world.stop().await;
}

#[tokio::test]
async fn a_business_created_on_either_door_gets_the_same_defaults_and_detail() {
    let world = dental_world(0).await;
    let api = Api::new(&world);
    let said = cli(
        &world,
        &[
            "business",
            "add",
            "--name",
            "Corner Bakery",
            "--id",
            "from_cli",
        ],
    );
    assert!(said.ok, "{} {}", said.out, said.err);
    let r = api
        .admin_post(
            "/businesses",
            json!({"id": "from_api", "name": "Corner Bakery"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let from_cli = world
        .store
        .business("from_cli")
        .await
        .expect("store")
        .expect("cli");
    let from_api = world
        .store
        .business("from_api")
        .await
        .expect("store")
        .expect("api");
    assert_eq!(
        (&from_cli.language, &from_cli.voice, &from_cli.guard_policy),
        (&from_api.language, &from_api.voice, &from_api.guard_policy)
    );
    assert_eq!(from_cli.guard_policy, "monitor");

    // Show: the same business and numbers from both doors.
    let said = cli(&world, &["business", "show", "dental"]);
    assert!(said.ok, "{} {}", said.out, said.err);
    let shown: serde_json::Value = serde_json::from_str(&said.out).expect("JSON");
    let r = api.admin_get("/businesses/dental").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(shown["numbers"], r.json["numbers"]);
    assert_eq!(shown["id"], r.json["business"]["id"]);
    let said = cli(&world, &["business", "show", "nobody"]);
    assert!(!said.ok);
    assert_eq!(
        api.admin_get("/businesses/nobody").await.status,
        StatusCode::NOT_FOUND
    );
    world.stop().await;
}

#[tokio::test]
async fn guard_rules_are_checked_by_the_sanitizer_on_either_door() {
    let world = dental_world(0).await;
    let api = Api::new(&world);
    let set_on_api = async |rule: &str, pattern: &str, weight: f64| {
        api.admin(
            reqwest::Method::PUT,
            &format!("/businesses/dental/guard-rules/{rule}"),
            Some(json!({"pattern": pattern, "weight": weight})),
        )
        .await
    };
    let set_on_cli = |rule: &str, pattern: &str, weight: &str| {
        cli(
            &world,
            &[
                "business",
                "rule",
                "dental",
                "--rule-id",
                rule,
                "--pattern",
                pattern,
                "--weight",
                weight,
            ],
        )
    };

    // The rule file's macros are allowed on both doors (the store alone used to refuse them).
    let said = set_on_cli("cli_macro", "{{b}}pineapple{{b}}", "0.9");
    assert!(said.ok, "{} {}", said.out, said.err);
    let r = set_on_api("api_macro", "{{b}}pineapple{{b}}", 0.9).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // A weight above 1, a pattern that matches empty text, an unknown macro and a pattern that
    // does not compile are refused on both, naming the rule.
    for (pattern, weight, why) in [
        ("pineapple", 1.5, "weight"),
        ("(?:pine)?", 0.5, "empty text"),
        ("{{nope}}apple", 0.5, "unknown macro"),
        ("(unclosed", 0.5, "unclosed"),
    ] {
        let said = set_on_cli("cli_bad", pattern, &weight.to_string());
        assert!(!said.ok, "{pattern}: {}", said.out);
        assert!(
            said.err.contains(why) && said.err.contains("cli_bad"),
            "{pattern}: {}",
            said.err
        );
        let r = set_on_api("api_bad", pattern, weight).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{pattern}");
        assert!(
            r.text.contains(why) && r.text.contains("api_bad"),
            "{pattern}: {}",
            r.text
        );
    }

    // Disabling keeps the rule's fields on both doors; the two lists agree.
    let said = cli(
        &world,
        &[
            "business",
            "rule",
            "dental",
            "--rule-id",
            "cli_macro",
            "--disable",
        ],
    );
    assert!(said.ok, "{} {}", said.out, said.err);
    let r = api
        .admin(
            reqwest::Method::DELETE,
            "/businesses/dental/guard-rules/api_macro",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["enabled"], json!(false));
    assert_eq!(r.json["pattern"], json!("{{b}}pineapple{{b}}"));
    let said = cli(&world, &["business", "rules", "dental"]);
    assert!(said.ok, "{} {}", said.out, said.err);
    let listed: Vec<&str> = said.out.lines().collect();
    assert_eq!(
        listed,
        [
            "api_macro\toff\tbusiness\t0.9\t{{b}}pineapple{{b}}",
            "cli_macro\toff\tbusiness\t0.9\t{{b}}pineapple{{b}}",
        ]
    );
    let r = api.admin_get("/businesses/dental/guard-rules").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let ids: Vec<&str> = r
        .json
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|rule| rule["rule_id"].as_str())
        .collect();
    assert_eq!(ids, ["api_macro", "cli_macro"]);
    world.stop().await;
}

#[tokio::test]
async fn gate_without_caller_transcription_is_refused_on_either_door_and_at_start() {
    let world = dental_world_configured(
        0,
        Some(Box::new(|c| c.upstream.transcription_model = String::new())),
    )
    .await;
    let api = Api::new(&world);
    let off = [("VOXRELAY_UPSTREAM_TRANSCRIPTION_MODEL", "")];
    let said = cli_with(&world, &["business", "policy", "dental", "gate"], &off);
    assert!(!said.ok, "{}", said.out);
    assert!(said.err.contains("transcription"), "{}", said.err);
    let r = api
        .admin(
            reqwest::Method::PUT,
            "/businesses/dental/policy",
            Some(json!({"policy": "gate"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("transcription"), "{}", r.text);
    let r = api
        .admin(
            reqwest::Method::PATCH,
            "/businesses/dental",
            Some(json!({"guard_policy": "gate"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // Monitor stays allowed; with transcription on, gate is too.
    let said = cli_with(&world, &["business", "policy", "dental", "monitor"], &off);
    assert!(said.ok, "{}", said.err);
    let said = cli(&world, &["business", "policy", "dental", "gate"]);
    assert!(said.ok, "{}", said.err);
    // A gated business with transcription off: the server does not start, and says why.
    let said = cli_with(
        &world,
        &["serve"],
        &[
            ("VOXRELAY_UPSTREAM_TRANSCRIPTION_MODEL", ""),
            ("VOXRELAY_SERVER_LISTEN", "127.0.0.1:0"),
            ("TWILIO_AUTH_TOKEN", "t"),
            ("VOXRELAY_SIGNING_KEY", "0123456789abcdef0123"),
            ("VOXRELAY_UPSTREAM_URL", "ws://127.0.0.1:9/v1/realtime"),
        ],
    );
    assert!(!said.ok);
    assert!(
        said.err.contains("dental") && said.err.contains("gate"),
        "{}",
        said.err
    );
    world.stop().await;
}
