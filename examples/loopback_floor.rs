//! The floor under fan-out latency on this machine: what one thread pays to write one small
//! message to each of many loopback TCP sockets, with nothing else around it (no HTTP, no
//! WebSocket, no database, no tasks). Tidings' hub makes the same one `send` per connection
//! per event, so this is what a fan-out to that many connections costs at the least.
//!
//! ```sh
//! ulimit -n 20000
//! cargo run --release --example loopback_floor -- 10000 100 20
//! ```
//!
//! The arguments are the sockets, the bytes per message and the rounds (one round every
//! 100 ms, as 10 changes/s). The writer runs pinned to core 0; a reader process (this
//! program again, one tokio thread reading every socket as the load tester does) is pinned
//! to core 1. Loopback runs the receiving side's TCP processing and wake-up in the writer's
//! system call, as it does for the server in the benchmarks. For each round it prints how
//! long writing to every socket took, and at the end the median and the worst round.
//!
//! `FLOOR_READER=epoll` reads with plain epoll instead of tokio, and `FLOOR_READER=spin`
//! with epoll that never sleeps, so that no send has to wake the reader: on this VM that
//! saves about a tenth of the writer's time, so the wake-ups are not what makes the floor.

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

fn parse(number: &str) -> usize {
    number.parse().expect("numbers: sockets, bytes, rounds")
}

/// Connects `sockets` sockets to `addr` and reads `each` bytes from every one; the bytes read.
fn read(addr: std::net::SocketAddr, sockets: usize, each: usize) -> usize {
    pin(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let mut tasks = Vec::with_capacity(sockets);
        for _ in 0..sockets {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = 0;
                while got < each {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                got
            }));
        }
        let mut got = 0;
        for task in tasks {
            got += task.await.expect("a reader");
        }
        got
    })
}

/// The same reading with plain epoll on nonblocking sockets: `spin` polls without ever
/// sleeping (timeout 0), so the writer's send never has to wake this process.
fn read_epoll(addr: std::net::SocketAddr, sockets: usize, each: usize, spin: bool) -> usize {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    pin(1);
    let mut streams = Vec::with_capacity(sockets);
    // SAFETY: plain epoll calls on descriptors this function owns for its whole run.
    let epoll = unsafe { libc::epoll_create1(0) };
    for i in 0..sockets {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_nonblocking(true).expect("nonblocking");
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: as above.
        unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut event) };
        streams.push(stream);
    }
    let total = sockets * each;
    let mut got = 0;
    let mut buf = vec![0u8; 4096];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    while got < total {
        // SAFETY: as above; `events` outlives the call.
        let n = unsafe {
            libc::epoll_wait(epoll, events.as_mut_ptr(), 1024, if spin { 0 } else { -1 })
        };
        for event in &events[..n.max(0) as usize] {
            let mut stream = &streams[event.u64 as usize];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(_) => break,
                }
            }
        }
    }
    got
}

fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity take
    // pointers to it that live for the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [mode, addr, sockets, total] = &args[..]
        && mode == "--read"
    {
        // The reader, in a process of its own: each side holds as many sockets as allowed.
        let (addr, sockets, total) = (
            addr.parse().expect("an address"),
            parse(sockets),
            parse(total),
        );
        let got = match std::env::var("FLOOR_READER").as_deref() {
            Ok("spin") => read_epoll(addr, sockets, total, true),
            Ok("epoll") => read_epoll(addr, sockets, total, false),
            _ => read(addr, sockets, total),
        };
        println!("{got}");
        return Ok(());
    }
    let numbers: Vec<usize> = args.iter().map(|a| parse(a)).collect();
    let (sockets, bytes, rounds) = match numbers[..] {
        [s, b, r] => (s, b, r),
        _ => (10_000, 100, 20),
    };
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let total = sockets * rounds * bytes;
    let reader = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--read",
            &addr.to_string(),
            &sockets.to_string(),
            &(rounds * bytes).to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;

    pin(0);
    let mut streams = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let (stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        streams.push(stream);
    }
    let message = vec![b'x'; bytes];
    let mut per_round = Vec::with_capacity(rounds);
    let mut next = Instant::now() + Duration::from_millis(100);
    for round in 0..rounds {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += Duration::from_millis(100);
        let start = Instant::now();
        for stream in &streams {
            write_all(stream, &message)?;
        }
        let took = start.elapsed();
        println!("round {round:3}: {:7.2} ms", took.as_secs_f64() * 1e3);
        per_round.push(took);
    }
    let output = reader.wait_with_output()?;
    let got: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    per_round.sort();
    let median = per_round[per_round.len() / 2];
    let worst = per_round[per_round.len() - 1];
    println!(
        "{sockets} sockets x {bytes} B: median {:.1} ms per round ({:.2} µs per write), worst {:.1} ms; read {got} of {total} bytes",
        median.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e6 / sockets as f64,
        worst.as_secs_f64() * 1e3,
    );
    Ok(())
}

/// One `send` per message, as the hub does (`MSG_NOSIGNAL`, no VFS layer); waits only if
/// the socket is full (it never is).
fn write_all(stream: &TcpStream, mut message: &[u8]) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    while !message.is_empty() {
        match socket.send_with_flags(message, libc::MSG_NOSIGNAL) {
            Ok(n) => message = &message[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
