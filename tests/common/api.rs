//! An admin API client for the tests that drive a running [`World`] over HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use voxrelay_sim::world::{SIM_ADMIN_TOKEN, World};

/// An admin API client for one world.
pub struct Api {
    base: String,
    http: reqwest::Client,
}

/// A response: status, and the body as JSON (`Null` when it is not JSON) and as text.
pub struct Reply {
    pub status: StatusCode,
    pub json: Value,
    pub text: String,
}

impl Api {
    pub fn new(world: &World) -> Api {
        Api {
            base: format!("http://{}/api/v1", world.proxy_addr),
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        accept: Option<&str>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, json, text }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, None, None).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        self.get(path, Some(SIM_ADMIN_TOKEN)).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(Method::POST, path, token, Some(body), None).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Reply {
        self.post(path, Some(SIM_ADMIN_TOKEN), body).await
    }

    /// Creates a business (id `id`) with one number over the API.
    pub async fn business(&self, id: &str, number: &str) {
        let r = self
            .admin_post(
                "/businesses",
                json!({"id": id, "name": "Bright Smile Dental", "greeting_instructions": "Hello."}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = self
            .admin_post(
                &format!("/businesses/{id}/numbers"),
                json!({"number": number}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }

    /// Creates an inbound draft over the API; returns its id.
    pub async fn draft(&self, business: &str, body: &str) -> String {
        let r = self
            .admin_post(
                &format!("/businesses/{business}/prompts"),
                json!({"direction": "inbound", "body": body, "author": "ops", "note": "test"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["version"]["id"]
            .as_str()
            .expect("version id")
            .to_string()
    }

    pub async fn promote(&self, id: &str, to: &str, token: &str) -> Reply {
        self.post(
            &format!("/prompts/{id}/promote"),
            Some(token),
            json!({"to": to}),
        )
        .await
    }

    /// The status of every version of `business`, by id.
    pub async fn statuses(&self, business: &str) -> Vec<(String, String)> {
        let r = self
            .admin_get(&format!("/businesses/{business}/prompts?direction=inbound"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json
            .as_array()
            .expect("list")
            .iter()
            .map(|v| {
                (
                    v["id"].as_str().expect("id").to_string(),
                    v["status"].as_str().expect("status").to_string(),
                )
            })
            .collect()
    }
}

pub fn status_of(statuses: &[(String, String)], id: &str) -> String {
    statuses
        .iter()
        .find(|(v, _)| v == id)
        .map(|(_, s)| s.clone())
        .unwrap_or_default()
}

impl Api {
    /// A request with the admin token and any method.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.send(method, path, Some(SIM_ADMIN_TOKEN), body, None)
            .await
    }

    /// Creates an experiment between two versions of `business`'s inbound prompt, starts it,
    /// and returns its id.
    pub async fn running_experiment(
        &self,
        business: &str,
        control: &str,
        variant: &str,
        percent: i64,
    ) -> String {
        let r = self
            .admin_post(
                &format!("/businesses/{business}/experiments"),
                json!({"direction": "inbound", "control_version_id": control,
                       "variant_version_id": variant, "traffic_percent": percent}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.json["id"].as_str().expect("experiment id").to_string();
        let r = self
            .admin_post(&format!("/experiments/{id}/start"), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        id
    }
}
