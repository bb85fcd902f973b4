//! The server's memory and CPU, from /proc when its PID is known or from its Prometheus
//! endpoint, and the tester's own CPU.

/// Where the server's process figures come from.
#[derive(Debug, Clone)]
pub enum Server {
    Pid(u32),
    /// A Prometheus endpoint, and the bearer token it wants, if any.
    Metrics {
        url: String,
        token: Option<String>,
    },
}

/// One sample of the server process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Proportional set size (or RSS when that is all there is), KiB.
    pub memory_kib: u64,
    /// CPU time used so far (user + system), seconds.
    pub cpu_seconds: f64,
}

impl Server {
    pub async fn sample(&self, client: &reqwest::Client) -> Option<Sample> {
        match self {
            Server::Pid(pid) => Some(Sample {
                memory_kib: pss_kib(*pid)?,
                cpu_seconds: cpu_seconds(&format!("/proc/{pid}/stat"))?,
            }),
            Server::Metrics { url, token } => {
                let mut request = client.get(url);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let text = request.send().await.ok()?.text().await.ok()?;
                let value = |name: &str| {
                    text.lines()
                        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<f64>().ok())
                };
                Some(Sample {
                    memory_kib: (value("process_resident_memory_bytes")? / 1024.0) as u64,
                    cpu_seconds: value("process_cpu_seconds_total")?,
                })
            }
        }
    }
}

/// The proportional set size of a process, in KiB (from `smaps_rollup`), or its RSS.
fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .or_else(|| rollup.lines().find(|l| l.starts_with("Rss:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}

/// CPU time this process has used (user + system), in seconds.
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds("/proc/self/stat")
}

fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux the tester runs on.
    Some(ticks / 100.0)
}
