//! The REST side of Tidings the tester needs before it writes: its admin, its users (from
//! a token file or registered), and the products it seeds.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};

/// A user the tester acts as or subscribes for.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub token: String,
}

/// A Tidings server's REST API.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Api {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` and returns the JSON answer, failing on any non-2xx status.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "POST {path}: {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<User> {
        let tokens = self
            .post(
                "/v1/auth/login",
                None,
                &json!({"email": email, "password": password}),
            )
            .await
            .with_context(|| format!("logging in as {email}"))?;
        let token = tokens["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let me: Value = self
            .client
            .get(self.url("/v1/me"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        Ok(User {
            id: me["id"].as_str().unwrap_or_default().to_owned(),
            token,
        })
    }

    /// Registers `count` users and logs them in; with `promote_by`, an admin makes them
    /// staff. Argon2 makes this slow (tens of ms a user): large runs take a token file.
    pub async fn register(
        &self,
        count: usize,
        label: &str,
        promote_by: Option<&str>,
    ) -> anyhow::Result<Vec<User>> {
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let password = format!("load test password {run}");
        let users = futures::stream::iter(0..count)
            .map(|i| {
                let (api, password) = (self.clone(), password.clone());
                let email = format!("lt-{label}-{run}-{i}@example.com");
                async move {
                    let user = api
                        .post("/v1/auth/register", None, &json!({"email": email, "password": password}))
                        .await
                        .context("registering (run the server with TIDINGS_AUTH_RATE_PER_IP=0 and TIDINGS_AUTH_RATE_PER_EMAIL=0)")?;
                    if let Some(admin) = promote_by {
                        let id = user["id"].as_str().unwrap_or_default();
                        let response = api
                            .client
                            .patch(api.url(&format!("/v1/users/{id}")))
                            .bearer_auth(admin)
                            .json(&json!({"role": "staff"}))
                            .send()
                            .await?;
                        anyhow::ensure!(
                            response.status().is_success(),
                            "making a user staff: {}",
                            response.text().await?
                        );
                    }
                    api.login(&email, &password).await
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        users.into_iter().collect()
    }

    /// Creates `count` products with stock enough never to run low or out, and room under
    /// the most a product may hold (1,000,000,000) for every +1 adjustment a run makes.
    pub async fn create_products(&self, token: &str, count: usize) -> anyhow::Result<Vec<Product>> {
        let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let mut products = Vec::with_capacity(count);
        for i in 0..count {
            let body = json!({"sku": format!("LT-{run}-{i}"), "name": format!("Load test {i}"),
                              "unit_amount": 100, "currency": "EUR", "stock": 500_000_000i64});
            let product = self.post("/v1/products", Some(token), &body).await?;
            products.push(Product {
                id: product["id"].as_str().unwrap_or_default().to_owned(),
                version: product["version"].as_i64().unwrap_or_default(),
            });
        }
        Ok(products)
    }

    /// A product's version now.
    pub async fn product_version(&self, token: &str, id: &str) -> anyhow::Result<i64> {
        let response = self
            .client
            .get(self.url(&format!("/v1/products/{id}")))
            .bearer_auth(token)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "reading product {id}: {}",
            response.status()
        );
        let product: Value = response.json().await?;
        Ok(product["version"].as_i64().unwrap_or_default())
    }
}

/// A product the tester seeded, and its version when it did.
#[derive(Debug, Clone)]
pub struct Product {
    pub id: String,
    pub version: i64,
}

/// Users from a file of `<user_id> <email> <access_token>` lines, as
/// `tidings user tokens` prints them. Blank lines and `#` comments are skipped.
pub fn read_tokens(path: &std::path::Path) -> anyhow::Result<Vec<User>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_tokens(&text).with_context(|| format!("in {}", path.display()))
}

fn parse_tokens(text: &str) -> anyhow::Result<Vec<User>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(
            |(n, line)| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [id, _email, token] => Ok(User {
                    id: id.to_owned(),
                    token: token.to_owned(),
                }),
                _ => anyhow::bail!(
                    "line {}: expected `<user_id> <email> <access_token>`",
                    n + 1
                ),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_gives_ids_and_tokens() {
        let users =
            parse_tokens("# made by tidings\nu1 a@example.com t1\n\nu2  b@example.com\tt2\n")
                .unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(
            (users[1].id.as_str(), users[1].token.as_str()),
            ("u2", "t2")
        );
        assert!(parse_tokens("u1 t1\n").is_err());
    }
}
