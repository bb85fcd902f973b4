//! The write workload: requests at a steady rate, in a mix of kinds, each remembered with
//! the events it must cause and timed per kind.

use std::collections::{BTreeMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::api::{Api, Product, User};
use crate::envelope::now_micros;
use crate::probe::new_histogram;

/// A kind of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `POST /v1/orders` as a customer.
    Orders,
    /// `POST /v1/orders/{id}/status`, one step along, as staff.
    Status,
    /// `POST /v1/products/{id}/stock-adjustments` of +1, as staff.
    Stock,
    /// `POST /v1/notifications/broadcast` to all, as admin.
    Broadcast,
    /// `POST /v1/notifications/broadcast` to one customer, the next in turn, as admin: one
    /// per-user event (`notification.created`) and nothing for anyone else.
    Notify,
    /// Generic mode: the body template POSTed to the publish URL.
    Publish,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Orders => "orders",
            Kind::Status => "status",
            Kind::Stock => "stock",
            Kind::Broadcast => "broadcast",
            Kind::Notify => "notify",
            Kind::Publish => "publish",
        }
    }
}

/// Weights of each kind: `orders=1,status=1,stock=4,broadcast=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(pub Vec<(Kind, u32)>);

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        let mut weights = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let kind = match name.trim() {
                "orders" => Kind::Orders,
                "status" => Kind::Status,
                "stock" => Kind::Stock,
                "broadcast" => Kind::Broadcast,
                "notify" => Kind::Notify,
                other => {
                    return Err(format!(
                        "unknown write kind {other:?}: orders, status, stock, broadcast, notify"
                    ));
                }
            };
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{name}: the weight must be a whole number"))?;
            if weight > 0 {
                weights.push((kind, weight));
            }
        }
        if weights.is_empty() {
            return Err("name at least one kind with a weight above 0".into());
        }
        Ok(Mix(weights))
    }
}

impl<'de> Deserialize<'de> for Mix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mix, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(k, w)| format!("{}={w}", k.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Picks kinds in proportion to their weights, evenly spread (smooth weighted round robin).
struct Picker {
    mix: Vec<(Kind, i64)>,
    current: Vec<i64>,
}

impl Picker {
    fn new(mix: &Mix) -> Picker {
        Picker {
            mix: mix.0.iter().map(|&(k, w)| (k, i64::from(w))).collect(),
            current: vec![0; mix.0.len()],
        }
    }

    fn next(&mut self) -> Kind {
        let total: i64 = self.mix.iter().map(|(_, w)| w).sum();
        for (current, (_, weight)) in self.current.iter_mut().zip(&self.mix) {
            *current += weight;
        }
        let best = (0..self.current.len())
            .max_by_key(|&i| (self.current[i], std::cmp::Reverse(i)))
            .expect("a mix is never empty");
        self.current[best] -= total;
        self.mix[best].0
    }
}

/// An order event the tester caused: whose it is, and its key.
#[derive(Debug, Clone)]
pub struct OrderEvent {
    pub owner: String,
    pub order_id: String,
    pub version: i64,
    /// For a status change, the body of the owner's notification.
    pub notification: Option<String>,
}

/// An order that can still move along.
#[derive(Debug, Clone)]
struct OpenOrder {
    id: String,
    owner: String,
    status: &'static str,
}

/// Everything the workload did.
#[derive(Default)]
pub struct Log {
    pub order_events: Vec<OrderEvent>,
    /// Bodies of the broadcasts sent to all.
    pub broadcasts: Vec<String>,
    /// Notifications sent to one user: the user and the body.
    pub notes: Vec<(String, String)>,
    /// Generic mode: the keys (counter, or timestamp) of what was published.
    pub published: Vec<i64>,
    pub latency: BTreeMap<Kind, Histogram<u64>>,
    pub counts: BTreeMap<Kind, u64>,
    pub errors: BTreeMap<Kind, u64>,
    pub first_error: Option<String>,
    open: VecDeque<OpenOrder>,
}

/// What the workload writes with and to.
pub struct Workload {
    pub api: Api,
    pub staff: User,
    pub customers: Vec<User>,
    pub products: Vec<Product>,
    pub mix: Mix,
    pub rate: f64,
    pub duration: Duration,
    pub max_in_flight: usize,
    /// Generic mode: the URL, the body template and extra headers.
    pub publish: Option<Publish>,
}

/// Generic mode's publishing.
#[derive(Debug, Clone)]
pub struct Publish {
    pub url: String,
    pub template: String,
    pub headers: Vec<(String, String)>,
}

/// Writes done so far (for the timeline).
pub static WRITES_DONE: AtomicU64 = AtomicU64::new(0);

impl Workload {
    /// Writes at the rate for the duration; returns when every request has answered.
    pub async fn run(self: Arc<Self>) -> Log {
        let log = Arc::new(Mutex::new(Log::default()));
        if self.rate <= 0.0 || self.duration.is_zero() {
            return unwrap_log(log);
        }
        let mut picker = Picker::new(&self.mix);
        let period = Duration::from_secs_f64(1.0 / self.rate);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let permits = Arc::new(Semaphore::new(self.max_in_flight.max(1)));
        let end = Instant::now() + self.duration;
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0u64.. {
            ticks.tick().await;
            if Instant::now() >= end {
                break;
            }
            let permit = permits.clone().acquire_owned().await.expect("never closed");
            let kind = if self.publish.is_some() {
                Kind::Publish
            } else {
                picker.next()
            };
            let (workload, log) = (self.clone(), log.clone());
            tasks.spawn(async move {
                let started = Instant::now();
                let (kind, result) = workload.write(kind, n, &log).await;
                let micros = started.elapsed().as_micros() as u64;
                let mut log = log.lock().expect("lock");
                match result {
                    Ok(()) => {
                        let _ = log
                            .latency
                            .entry(kind)
                            .or_insert_with(new_histogram)
                            .record(micros.max(1));
                        *log.counts.entry(kind).or_default() += 1;
                    }
                    Err(e) => {
                        *log.errors.entry(kind).or_default() += 1;
                        log.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
                WRITES_DONE.fetch_add(1, Ordering::Relaxed);
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        unwrap_log(log)
    }

    /// One write; the kind it turned out to be (a status change with no open order
    /// places one instead).
    async fn write(&self, kind: Kind, n: u64, log: &Mutex<Log>) -> (Kind, anyhow::Result<()>) {
        match kind {
            Kind::Stock => {
                let product = &self.products[n as usize % self.products.len()];
                let path = format!("/v1/products/{}/stock-adjustments", product.id);
                let result = self
                    .api
                    .post(
                        &path,
                        Some(&self.staff.token),
                        &json!({"delta": 1, "reason": "load test"}),
                    )
                    .await;
                (kind, result.map(drop))
            }
            Kind::Status => {
                let open = log.lock().expect("lock").open.pop_front();
                match open {
                    Some(order) => (kind, self.advance(order, log).await),
                    None => (Kind::Orders, self.place(n, log).await),
                }
            }
            Kind::Orders => (kind, self.place(n, log).await),
            Kind::Broadcast => {
                let body = format!("Load test broadcast {n} at {}", now_micros());
                let result = self
                    .api
                    .post(
                        "/v1/notifications/broadcast",
                        Some(&self.staff.token),
                        &json!({"title": "Load test", "body": body, "audience": "all"}),
                    )
                    .await;
                if result.is_ok() {
                    log.lock().expect("lock").broadcasts.push(body);
                }
                (kind, result.map(drop))
            }
            Kind::Notify => (kind, self.notify(n, log).await),
            Kind::Publish => (kind, self.publish(n, log).await),
        }
    }

    /// Notifies the next customer in turn, alone.
    async fn notify(&self, n: u64, log: &Mutex<Log>) -> anyhow::Result<()> {
        let customer = &self.customers[n as usize % self.customers.len()];
        let body = format!("Load test note {n} at {}", now_micros());
        self.api
            .post(
                "/v1/notifications/broadcast",
                Some(&self.staff.token),
                &json!({"title": "Load test", "body": body, "audience": [customer.id]}),
            )
            .await?;
        log.lock()
            .expect("lock")
            .notes
            .push((customer.id.clone(), body));
        Ok(())
    }

    /// Places an order of one unit as the next customer.
    async fn place(&self, n: u64, log: &Mutex<Log>) -> anyhow::Result<()> {
        let customer = &self.customers[n as usize % self.customers.len()];
        let product = &self.products[n as usize % self.products.len()];
        let response = self
            .api
            .client
            .post(self.api.url("/v1/orders"))
            .bearer_auth(&customer.token)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&json!({"items": [{"product_id": product.id, "quantity": 1}]}))
            .send()
            .await?;
        let status = response.status();
        let order: serde_json::Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "placing an order: {status}: {order}");
        let id = order["id"].as_str().unwrap_or_default().to_owned();
        let mut log = log.lock().expect("lock");
        log.order_events.push(OrderEvent {
            owner: customer.id.clone(),
            order_id: id.clone(),
            version: order["version"].as_i64().unwrap_or(1),
            notification: None,
        });
        log.open.push_back(OpenOrder {
            id,
            owner: customer.id.clone(),
            status: "pending",
        });
        Ok(())
    }

    /// Moves an order one step: pending → paid → shipped → delivered.
    async fn advance(&self, order: OpenOrder, log: &Mutex<Log>) -> anyhow::Result<()> {
        let next = match order.status {
            "pending" => "paid",
            "paid" => "shipped",
            _ => "delivered",
        };
        let path = format!("/v1/orders/{}/status", order.id);
        let changed = self
            .api
            .post(&path, Some(&self.staff.token), &json!({"status": next}))
            .await?;
        let mut log = log.lock().expect("lock");
        log.order_events.push(OrderEvent {
            owner: order.owner.clone(),
            order_id: order.id.clone(),
            version: changed["version"].as_i64().unwrap_or_default(),
            // The server's text (src/service/orders.rs), which keys the notification.
            notification: Some(format!("Your order {} is now {next}.", order.id)),
        });
        if next != "delivered" {
            log.open.push_back(OpenOrder {
                status: next,
                ..order
            });
        }
        Ok(())
    }

    /// Generic mode: the template with `{{ts}}` (µs since the epoch) and `{{n}}` filled in.
    async fn publish(&self, n: u64, log: &Mutex<Log>) -> anyhow::Result<()> {
        let publish = self
            .publish
            .as_ref()
            .expect("generic mode has a publish URL");
        let ts = now_micros();
        let body = publish
            .template
            .replace("{{ts}}", &ts.to_string())
            .replace("{{n}}", &n.to_string());
        let mut request = self.api.client.post(&publish.url).body(body);
        if !publish
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in &publish.headers {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "publishing: {}",
            response.status()
        );
        let key = if publish.template.contains("{{n}}") {
            n as i64
        } else {
            ts
        };
        log.lock().expect("lock").published.push(key);
        Ok(())
    }
}

fn unwrap_log(log: Arc<Mutex<Log>>) -> Log {
    Arc::try_unwrap(log)
        .ok()
        .expect("every write has finished")
        .into_inner()
        .expect("lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_parses_and_rejects_unknown_kinds() {
        let mix: Mix = "orders=1, stock=4,broadcast=0".parse().unwrap();
        assert_eq!(
            "notify".parse::<Mix>().unwrap(),
            Mix(vec![(Kind::Notify, 1)])
        );
        assert_eq!(mix, Mix(vec![(Kind::Orders, 1), (Kind::Stock, 4)]));
        assert_eq!(mix.to_string(), "orders=1,stock=4");
        assert!("refunds=1".parse::<Mix>().is_err());
        assert!("stock=0".parse::<Mix>().is_err());
    }

    #[test]
    fn kinds_are_picked_in_proportion_and_spread_out() {
        let mut picker = Picker::new(&"orders=1,stock=3".parse().unwrap());
        let picks: Vec<Kind> = (0..8).map(|_| picker.next()).collect();
        assert_eq!(picks.iter().filter(|k| **k == Kind::Orders).count(), 2);
        assert_ne!(picks[0], picks[1], "not all of one kind first: {picks:?}");
    }
}
