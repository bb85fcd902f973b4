//! One run from start to verdict: users and products, the subscribers (in phases for
//! `idle`), the writes, the drain, and every figure merged into a [`Summary`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::api::{Api, Product, User};
use crate::expect::{self, Expected};
use crate::fleet::Fleet;
use crate::memory::{self, Server};
use crate::placement;
use crate::probe::new_histogram;
use crate::report::{self, Percentiles, Summary};
use crate::scenario::{Name, Scenario};
use crate::subscriber::{Spec, Tally, Target, Transport};
use crate::worker::{Command, Plan};
use crate::writes::{Kind, Publish, Workload};

pub async fn run(s: Scenario) -> anyhow::Result<Summary> {
    let generic = s.name == Name::Generic;
    let o = &s.options;
    let api = Api::new(&s.base_url)?;
    // With --expect-from something else writes: the tester only listens.
    let writing =
        s.rate > 0.0 && !s.duration.is_zero() && s.name != Name::Idle && o.expect_from.is_none();
    let needs = |kind: Kind| writing && !generic && s.mix.0.iter().any(|(k, _)| *k == kind);

    // Who acts: the admin writes and seeds; customers subscribe and place orders.
    let admin = match (&o.admin_email, &o.admin_password) {
        (Some(email), Some(password)) if !generic => Some(api.login(email, password).await?),
        _ => None,
    };
    let need_admin =
        !generic && (writing || o.tokens.is_none()) || o.staff_tokens.is_none() && s.staff > 0;
    anyhow::ensure!(
        admin.is_some() || !need_admin,
        "writes, registering users and making staff need --admin-email and --admin-password (or LOADTEST_ADMIN_EMAIL and LOADTEST_ADMIN_PASSWORD)"
    );
    let customers = match (&o.tokens, generic) {
        (_, true) => Vec::new(),
        (Some(path), _) => crate::api::read_tokens(path)?
            .into_iter()
            .take(s.users)
            .collect(),
        (None, _) => api.register(s.users, "customer", None).await?,
    };
    anyhow::ensure!(generic || !customers.is_empty(), "no users");
    let staff = match (&o.staff_tokens, s.staff) {
        (_, 0) => Vec::new(),
        (Some(path), n) => {
            let staff = crate::api::read_tokens(path)?;
            anyhow::ensure!(
                staff.len() >= n,
                "{} holds {} staff users; --staff {n} needs as many",
                path.display(),
                staff.len()
            );
            staff.into_iter().take(n).collect()
        }
        (None, n) => {
            api.register(n, "staff", admin.as_ref().map(|a| a.token.as_str()))
                .await?
        }
    };
    let products = if needs(Kind::Stock) || needs(Kind::Orders) || needs(Kind::Status) {
        let admin = admin.as_ref().expect("checked above");
        api.create_products(&admin.token, s.products).await?
    } else {
        Vec::new()
    };
    if !generic {
        eprintln!(
            "{} customers, {} staff and {} products ready",
            customers.len(),
            staff.len(),
            products.len()
        );
    }

    let specs = specs(&s, &customers, &staff);
    let target = if generic {
        let (ts_key, n_key) = template_keys(o.body.as_deref().unwrap_or_default());
        Target::Generic {
            ws_url: o.ws_url.clone(),
            sse_url: o.sse_url.clone(),
            ws_subscribe: o.ws_subscribe.clone(),
            ts_key,
            n_key,
        }
    } else {
        Target::Tidings {
            base: s.base_url.clone(),
        }
    };
    let server = o.server_pid.map(Server::Pid).or_else(|| {
        o.metrics_url.clone().map(|url| Server::Metrics {
            url,
            token: o.metrics_token.clone(),
        })
    });

    // Idle holds each transport in turn (the server may not hold both at once); the other
    // scenarios run everything in one phase.
    let phases: Vec<Vec<Spec>> = if s.name == Name::Idle && s.ws > 0 && s.sse > 0 {
        let (ws, sse): (Vec<Spec>, Vec<Spec>) = specs
            .into_iter()
            .partition(|p| p.transport == Transport::Ws);
        vec![ws, sse]
    } else {
        vec![specs]
    };
    let mut results = Vec::new();
    for (i, phase) in phases.into_iter().enumerate() {
        if i > 0 {
            // Let the server let go of the previous phase's connections.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let workload = Workload {
            api: api.clone(),
            staff: admin.clone().unwrap_or(User {
                id: String::new(),
                token: String::new(),
            }),
            customers: customers.clone(),
            products: products.clone(),
            mix: s.mix.clone(),
            rate: if writing { s.rate } else { 0.0 },
            duration: s.duration,
            max_in_flight: s.max_in_flight,
            publish: generic.then(|| Publish {
                url: o.publish_url.clone().unwrap_or_default(),
                template: o.body.clone().unwrap_or_default(),
                headers: headers(o.header.as_deref().unwrap_or_default()),
            }),
        };
        results.push(
            phase_run(
                &s,
                &api,
                target.clone(),
                phase,
                workload,
                server.as_ref(),
                admin.as_ref(),
            )
            .await?,
        );
    }
    Ok(summarize(&s, results))
}

/// Every subscriber: `ws` then `sse` customers (cycling over the users), then the staff.
fn specs(s: &Scenario, customers: &[User], staff: &[User]) -> Vec<Spec> {
    let customer = |i: usize, transport| {
        let user = (!customers.is_empty()).then(|| &customers[i % customers.len()]);
        Spec {
            transport,
            token: user.map(|u| u.token.clone()),
            topics: s.topics.clone(),
            user_id: user.map(|u| u.id.clone()),
            staff: false,
        }
    };
    let mut specs: Vec<Spec> = (0..s.ws).map(|i| customer(i, Transport::Ws)).collect();
    specs.extend((s.ws..s.ws + s.sse).map(|i| customer(i, Transport::Sse)));
    specs.extend(staff.iter().map(|u| Spec {
        transport: Transport::Ws,
        token: Some(u.token.clone()),
        topics: s.topics.clone(),
        user_id: Some(u.id.clone()),
        staff: true,
    }));
    specs
}

/// The keys before `{{ts}}` and `{{n}}` in a body template: `{"ts":"{{ts}}"}` gives `ts`.
fn template_keys(template: &str) -> (String, Option<String>) {
    let key_before = |marker: &str| {
        let at = template.find(marker)?;
        let before = template[..at].trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_');
        let start = before
            .rfind(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(0, |i| i + 1);
        Some(before[start..].to_owned()).filter(|k| !k.is_empty())
    };
    (
        key_before("{{ts}}").unwrap_or_else(|| "ts".into()),
        key_before("{{n}}"),
    )
}

fn headers(given: &[String]) -> Vec<(String, String)> {
    given
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// What one phase measured.
struct PhaseResult {
    specs: Vec<Spec>,
    tallies: Vec<Tally>,
    connect_seconds: f64,
    connect_us: hdrhistogram::Histogram<u64>,
    connect_errors: u64,
    latency: hdrhistogram::Histogram<u64>,
    deliveries_seen: u64,
    measured: Duration,
    memory_growth_kib: Option<u64>,
    server_cpu: Option<f64>,
    tester_cpu_seconds: Option<f64>,
    expected: Expected,
    log: crate::writes::Log,
    timeline: Vec<report::Point>,
    dropped: Option<usize>,
    recovery: Option<f64>,
}

async fn phase_run(
    s: &Scenario,
    api: &Api,
    target: Target,
    specs: Vec<Spec>,
    workload: Workload,
    server: Option<&Server>,
    admin: Option<&User>,
) -> anyhow::Result<PhaseResult> {
    let generic = s.name == Name::Generic;
    let products = workload.products.clone();
    let before = match server {
        Some(server) => server.sample(&api.client).await,
        None => None,
    };
    let started = Instant::now();
    let (specs, mut plans) = plans(s, target, specs);
    for plan in plans.iter_mut().skip(1) {
        plan.inject_loss = false;
    }
    let workers = plans.len();
    let plan_sizes: Vec<usize> = plans.iter().map(|p| p.specs.len()).collect();
    let fleet = Fleet::start(plans)?;
    let total = specs.len();
    let patience =
        Duration::from_secs_f64(total as f64 / s.ramp.max(1.0)) + Duration::from_secs(60);
    let connected = fleet
        .wait_for(patience, |m| m.connected.iter().all(Option::is_some))
        .await?;
    anyhow::ensure!(
        connected,
        "the subscribers did not all connect within {patience:?}"
    );
    {
        let merged = fleet.merged.lock().expect("lock");
        let failed: usize = merged.connected.iter().flatten().map(|c| c.1).sum();
        let why = merged.connected.iter().flatten().find_map(|c| c.2.clone());
        anyhow::ensure!(
            failed == 0,
            "{failed} of {total} subscribers could not connect: {}",
            why.unwrap_or_default()
        );
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let after = match server {
        Some(server) => server.sample(&api.client).await,
        None => None,
    };
    eprintln!("{total} subscribers live in {connect_seconds:.1} s over {workers} worker(s)");

    if let Some(settle) = s.options.settle {
        tokio::time::sleep(settle.0).await;
    }
    // Measure.
    eprintln!("writing");
    let writes_per_second = Arc::new(Mutex::new(Vec::new()));
    fleet.send(Command::Measure).await;
    let progress = report::progress(fleet.merged.clone(), writes_per_second.clone());
    let cpu_before = memory::own_cpu_seconds();
    let measuring = Instant::now();
    let dropper = s.drop.map(|(fraction, after)| {
        let commands = fleet.commander();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            eprintln!("dropping {:.0}% of the connections", fraction * 100.0);
            commands.send(Command::Drop { fraction }).await;
        })
    });
    let log = if let Some(path) = &s.options.expect_from {
        let mut log = crate::writes::Log::default();
        log.notes = expect::wait_for_notes(path, s.duration).await?;
        eprintln!(
            "{} notifications expected from {}",
            log.notes.len(),
            path.display()
        );
        log
    } else if s.name == Name::Idle {
        tokio::time::sleep(s.duration).await;
        crate::writes::Log::default()
    } else {
        Arc::new(workload).run().await
    };
    if let Some(dropper) = dropper {
        dropper.await?;
    }
    let product_versions = final_versions(api, admin, &products).await?;
    let expected = Expected::new(&log, &product_versions);
    let want = expect::total(&expected, &specs, generic);
    let storm = s.drop.is_some();
    fleet
        .wait_for(s.drain, |m| {
            m.deliveries >= want && (!storm || m.recovered.iter().all(Option::is_some))
        })
        .await?;
    let measured = measuring.elapsed();
    let tester_cpu = cpu_before
        .zip(memory::own_cpu_seconds())
        .map(|(a, b)| b - a);
    let server_end = match server {
        Some(server) => server.sample(&api.client).await,
        None => None,
    };
    progress.abort();
    let merged = fleet.merged.clone();
    let dones = fleet.stop().await?;

    let merged = merged.lock().expect("lock");
    let mut connect_us = new_histogram();
    let mut tallies = Vec::with_capacity(total);
    let mut connect_errors = 0;
    let mut children_cpu: Option<f64> = None;
    for done in &dones {
        done.connect_us.add_to(&mut connect_us);
        connect_errors += done.connect_errors;
        if let Some(cpu) = done.cpu_seconds {
            *children_cpu.get_or_insert(0.0) += cpu;
        }
    }
    for done in dones {
        tallies.extend(done.tallies);
    }
    let recovery = storm
        .then(|| {
            merged
                .recovered
                .iter()
                .copied()
                .collect::<Option<Vec<f64>>>()
        })
        .flatten()
        .map(|all| all.into_iter().fold(0.0, f64::max));
    let dropped = s.drop.map(|(fraction, _)| {
        plan_sizes
            .iter()
            .map(|&n| {
                (0..n)
                    .filter(|&i| crate::worker::dropped(i, fraction))
                    .count()
            })
            .sum()
    });
    let writes_per_second = writes_per_second.lock().expect("lock").clone();
    Ok(PhaseResult {
        timeline: report::timeline(&merged, &writes_per_second),
        latency: merged.latency.clone(),
        deliveries_seen: merged.deliveries,
        specs,
        tallies,
        connect_seconds,
        connect_us,
        connect_errors,
        measured,
        memory_growth_kib: before
            .zip(after)
            .map(|(b, a)| a.memory_kib.saturating_sub(b.memory_kib)),
        server_cpu: after
            .zip(server_end)
            .map(|(a, b)| (b.cpu_seconds - a.cpu_seconds) / measured.as_secs_f64()),
        tester_cpu_seconds: tester_cpu.map(|own| own + children_cpu.unwrap_or(0.0)),
        expected,
        log,
        dropped,
        recovery,
    })
}

/// The workers' plans, and the specs in the order the workers hold them (their tallies
/// come back in that order): `workers` even parts of the specs on the target, or with
/// `--subscribe-urls` one worker per URL holding the subscribers of the users placed there.
fn plans(s: &Scenario, target: Target, specs: Vec<Spec>) -> (Vec<Spec>, Vec<Plan>) {
    let plan = |target: Target, specs: Vec<Spec>, workers: usize| Plan {
        target,
        specs,
        ramp: s.ramp / workers as f64,
        source_addrs: s.options.source_addrs.clone().unwrap_or_default(),
        inject_loss: s.options.inject_loss,
    };
    let urls = s.options.subscribe_urls.clone().unwrap_or_default();
    if urls.is_empty() {
        let chunk = specs.len().div_ceil(s.workers).max(1);
        let plans = specs
            .chunks(chunk)
            .map(|part| plan(target.clone(), part.to_vec(), s.workers))
            .collect();
        return (specs, plans);
    }
    let partitions = s.options.place_partitions.unwrap_or(64);
    let mut placed: Vec<Vec<Spec>> = vec![Vec::new(); urls.len()];
    for spec in specs {
        let user = spec.user_id.as_deref().unwrap_or_default();
        placed[placement::instance_of(user, partitions, urls.len())].push(spec);
    }
    let ordered = placed.concat();
    let plans = urls
        .into_iter()
        .zip(placed)
        .map(|(base, specs)| plan(Target::Tidings { base }, specs, s.workers.max(1)))
        .collect();
    (ordered, plans)
}

/// Each product's versions before and after the writes.
async fn final_versions(
    api: &Api,
    admin: Option<&User>,
    products: &[Product],
) -> anyhow::Result<Vec<(String, i64, i64)>> {
    let mut versions = Vec::with_capacity(products.len());
    for product in products {
        let token = &admin.context("reading products needs the admin")?.token;
        let now = api.product_version(token, &product.id).await?;
        versions.push((product.id.clone(), product.version, now));
    }
    Ok(versions)
}

fn summarize(s: &Scenario, results: Vec<PhaseResult>) -> Summary {
    let generic = s.name == Name::Generic;
    let mut latency = new_histogram();
    let mut connect = new_histogram();
    let mut write_latency = new_histogram();
    let mut by_kind: BTreeMap<String, hdrhistogram::Histogram<u64>> = BTreeMap::new();
    let mut writes_by_kind = BTreeMap::new();
    let (mut writes, mut write_errors) = (0, 0);
    let mut first_write_error = None;
    let mut verdicts = expect::Verdict::default();
    let (mut measured, mut seen, mut connect_seconds, mut connect_errors) = (0.0, 0, 0.0, 0);
    let mut tester_cpu: Option<f64> = None;
    let mut timeline = Vec::new();
    for r in &results {
        latency.add(&r.latency).expect("same bounds");
        connect.add(&r.connect_us).expect("same bounds");
        for (kind, h) in &r.log.latency {
            write_latency.add(h).expect("same bounds");
            by_kind
                .entry(kind.name().to_owned())
                .or_insert_with(new_histogram)
                .add(h)
                .expect("same bounds");
        }
        for (kind, n) in &r.log.counts {
            *writes_by_kind.entry(kind.name().to_owned()).or_insert(0) += n;
            writes += n;
        }
        write_errors += r.log.errors.values().sum::<u64>();
        first_write_error = first_write_error.or(r.log.first_error.clone());
        let pairs: Vec<(&Spec, &Tally)> = r.specs.iter().zip(&r.tallies).collect();
        let v = expect::check(&r.expected, &pairs, generic);
        verdicts.expected_deliveries += v.expected_deliveries;
        verdicts.received += v.received;
        verdicts.lost += v.lost;
        verdicts.unexpected += v.unexpected;
        verdicts.duplicates += v.duplicates;
        verdicts.out_of_order += v.out_of_order;
        verdicts.mismatched_subscribers += v.mismatched_subscribers;
        verdicts.reconnects += v.reconnects;
        verdicts.resets += v.resets;
        measured += r.measured.as_secs_f64();
        seen += r.deliveries_seen;
        connect_seconds += r.connect_seconds;
        connect_errors += r.connect_errors;
        if let Some(cpu) = r.tester_cpu_seconds {
            *tester_cpu.get_or_insert(0.0) += cpu;
        }
        let offset = timeline.last().map_or(0.0, |p: &report::Point| p.t);
        timeline.extend(r.timeline.iter().cloned().map(|mut p| {
            p.t += offset;
            p
        }));
    }
    let per_connection = |r: &PhaseResult| {
        r.memory_growth_kib
            .map(|kib| kib as f64 / r.specs.len().max(1) as f64)
    };
    let phase_of = |t: Transport| {
        results
            .iter()
            .find(|r| r.specs.iter().all(|p| p.transport == t) && !r.specs.is_empty())
    };
    let growth: Option<u64> = results.iter().map(|r| r.memory_growth_kib).sum();
    let connections: usize = results.iter().map(|r| r.specs.len()).sum();
    let mut summary = Summary {
        scenario: s.name.as_str().to_owned(),
        subscribers: connections,
        ws: s.ws,
        sse: s.sse,
        staff: s.staff,
        topics: s.topics.clone(),
        workers: s.workers,
        connect_seconds,
        connect_ms: Percentiles::of(&connect),
        connect_errors,
        rate: s.rate,
        mix: if generic {
            "publish=1".into()
        } else {
            s.mix.to_string()
        },
        writes,
        write_errors,
        writes_by_kind,
        first_write_error,
        measured_seconds: measured,
        expected_deliveries: 0,
        deliveries: 0,
        deliveries_per_second: seen as f64 / measured.max(1e-9),
        lost: 0,
        duplicates: 0,
        out_of_order: 0,
        unexpected: 0,
        mismatched_subscribers: 0,
        reconnects: 0,
        resets: 0,
        delivery_latency_ms: Percentiles::of(&latency),
        write_latency_ms: Percentiles::of(&write_latency),
        write_latency_by_kind_ms: by_kind
            .iter()
            .map(|(k, h)| (k.clone(), Percentiles::of(h)))
            .collect(),
        server_kib_per_connection: growth.map(|kib| kib as f64 / connections.max(1) as f64),
        server_kib_per_ws_connection: phase_of(Transport::Ws).and_then(per_connection),
        server_kib_per_sse_connection: phase_of(Transport::Sse).and_then(per_connection),
        server_cpu_cores: results
            .iter()
            .map(|r| r.server_cpu)
            .sum::<Option<f64>>()
            .map(|c| c / results.len() as f64),
        tester_cpu_cores: tester_cpu.map(|cpu| cpu / measured.max(1e-9)),
        tester_cpu_us_per_delivery: tester_cpu
            .filter(|_| seen > 0)
            .map(|cpu| cpu * 1e6 / seen as f64),
        dropped: results.iter().find_map(|r| r.dropped),
        recovery_seconds: results.iter().find_map(|r| r.recovery),
        timeline,
    };
    summary.verdict_fields(&verdicts);
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_keys_are_the_names_before_the_markers() {
        assert_eq!(
            template_keys(r#"{"ts":"{{ts}}","n":{{n}}}"#),
            ("ts".to_owned(), Some("n".to_owned()))
        );
        assert_eq!(template_keys("sent={{ts}}"), ("sent".to_owned(), None));
    }

    #[test]
    fn headers_split_at_the_first_colon() {
        assert_eq!(
            headers(&["Authorization: Bearer a:b".to_owned()]),
            vec![("Authorization".to_owned(), "Bearer a:b".to_owned())]
        );
    }
}
