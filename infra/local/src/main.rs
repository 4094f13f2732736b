//! `stemvault-local`: the local runner.
//!
//! * `stemvault-local [run]` (`make run`): provision the emulator, serve ingest + results on
//!   127.0.0.1:$PORT, consume the download queue, print each event on the bus as one line
//!   (and deliver webhooks with `NOTIFY_URL` set), until Ctrl-C.
//! * `stemvault-local demo` (`make demo`): post the 12-stem demo callback to the running
//!   runner (or to one started in-process), wait, print the files, the manifest and the
//!   task's events.
//! * `stemvault-local status`: exit 0 when something answers on 127.0.0.1:$PORT (PORT unset:
//!   the port of the live runner `.local/run.json` describes, else 3000).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use stemvault_local::demo::{self, DemoTarget};
use stemvault_local::pipeline::{DEFAULT_POLLERS, Pipeline, PipelineOptions};
use stemvault_local::run_info::{self, RESOURCE_BASE, RunInfo};
use stemvault_local::settings::{self, file_server_origin};
use stemvault_local::shutdown::{Shutdown, interrupted, orphaned};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "usage: stemvault-local [run|demo|status]   (PORT, default 3000; the demo file server uses PORT+1)";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The stack of each runtime thread: the functions' handlers run here as a debug build, whose
/// futures and frames are many times a release build's; Lambda runs them (release) on its
/// 8 MiB main thread. Tokio's own default is 2 MiB.
const THREAD_STACK_BYTES: usize = 8 << 20;

fn main() -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(THREAD_STACK_BYTES).build() {
        Ok(runtime) => runtime.block_on(run_command()),
        Err(e) => {
            eprintln!("stemvault-local: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run the command the arguments name.
async fn run_command() -> ExitCode {
    stemvault_aws::logging::init();
    let command = std::env::args().nth(1);
    let result = match command.as_deref() {
        None | Some("run") => run().await,
        Some("demo") => run_demo().await,
        Some("status") => status().await,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("stemvault-local: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The HTTP port and the file server's (PORT+1).
fn ports() -> Result<(u16, u16), String> {
    let port = settings::port(&env).map_err(|e| e.to_string())?;
    Ok((port, port + 1))
}

/// The ports `demo` and `status` talk to: PORT's; with PORT unset, those of the runner
/// `.local/run.json` describes while its process lives and its port answers (a `PORT=4000
/// make run` beside a plain `make demo`; not a file a killed runner left), else the default.
async fn runner_ports() -> Result<(u16, u16), String> {
    if settings::port_is_set(&env) {
        return ports();
    }
    match run_info::live_runner() {
        Some(info) if info.port < u16::MAX && answers(info.port).await => Ok((info.port, info.port + 1)),
        _ => ports(),
    }
}

async fn answers(port: u16) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(("127.0.0.1", port))).await, Ok(Ok(_)))
}

/// What to do about a port that is taken.
const OTHER_PORTS: &str = "set PORT to use other ports";

/// Listen on 127.0.0.1:`port` for `what`, `remedy` saying what to do when the port is taken
/// (but by an earlier runner).
async fn listen_or(port: u16, what: &str, remedy: &str) -> Result<TcpListener, String> {
    TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| match described_runner(port) {
        Some(earlier) => format!(
            "{what} cannot listen on 127.0.0.1:{port}: {e}: a runner from an earlier `make run` (pid {}) holds it: stop \
             it (`kill {}`), or {OTHER_PORTS}",
            earlier.pid, earlier.pid
        ),
        None => format!("{what} cannot listen on 127.0.0.1:{port}: {e} ({remedy})"),
    })
}

/// `print_events`: each event on the bus as one line (`make run`, not the in-process demo).
async fn start_pipeline(port: u16, file_port: u16, print_events: bool) -> Result<Pipeline, String> {
    let options = PipelineOptions {
        base: RESOURCE_BASE.to_owned(),
        listener: listen_or(port, "the callback server", OTHER_PORTS).await?,
        file_server_origin: file_server_origin(file_port),
        pollers: DEFAULT_POLLERS,
        print_events,
    };
    Pipeline::start(options, env).await.map_err(|e| e.to_string())
}

async fn run() -> Result<(), String> {
    let (port, file_port) = ports()?;
    let info_path = run_info::default_path()?;
    let started = start_pipeline(port, file_port, true).await;
    if let Ok(pipeline) = &started
        && let Err(e) = run_info::write(&pipeline.info, &info_path)
    {
        eprintln!("warning: could not write {} ({e}); `make demo` will not know the key", info_path.display());
    }
    // Described (or failed to start): no longer on its way (`make run` wrote the note before
    // building; a demo waiting on it reads run.json next).
    let _ = std::fs::remove_file(run_info::starting_path()?);
    let pipeline = started?;
    // Checked now, not when `make demo` comes: the one local download source this runner
    // allows is the demo's file server on PORT+1.
    if std::net::TcpListener::bind(("127.0.0.1", file_port)).is_err() {
        eprintln!(
            "warning: 127.0.0.1:{file_port} (PORT+1) is in use: `make demo` serves its files there, the one local \
             source this runner allows; free it before `make demo`, or restart with another PORT"
        );
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    println!(
        "{}",
        stemvault_local::banner::banner(
            &pipeline.info,
            pipeline.generated_key.as_deref(),
            &pipeline.allowed_source_hosts,
            now
        )
    );
    if let Some(notify) = &pipeline.notify {
        println!("{}", stemvault_local::banner::webhooks(notify));
    }

    tokio::select! {
        _ = interrupted() => {}
        _ = orphaned() => {
            let _ = writeln!(std::io::stderr(), "the script that started this runner is gone (killed?)");
        }
    }
    // First, and no eprintln!: after a hangup (the terminal closed) writing to it fails, and
    // eprintln! would panic before the file is removed.
    run_info::remove_own(&info_path);
    let _ = writeln!(std::io::stderr(), "stopping (Ctrl-C again to quit at once)");
    tokio::spawn(async {
        interrupted().await;
        std::process::exit(130);
    });
    pipeline.stop().await;
    let _ = writeln!(std::io::stderr(), "stopped");
    Ok(())
}

/// What the demo talks to: the runner described by `.local/run.json`, one the environment
/// describes, or (nothing answering) a pipeline started here.
async fn demo_target(port: u16, file_port: u16) -> Result<(DemoTarget, Option<Pipeline>), String> {
    if !answers(port).await {
        // `make demo` runs outside the emulator's script when a runner answered its status
        // check: one that stopped since leaves no emulator to start a pipeline on.
        if env("AWS_ENDPOINT_URL").is_none() {
            return Err(format!(
                "nothing answers on 127.0.0.1:{port}, and no emulator to start the pipeline on (AWS_ENDPOINT_URL \
                 unset): if a `make run` answered a moment ago, it stopped; run `make demo` again"
            ));
        }
        println!("nothing answers on 127.0.0.1:{port}: starting the pipeline in this process");
        let pipeline = start_pipeline(port, file_port, false).await?;
        return Ok((DemoTarget::from_run_info(&pipeline.info).await, Some(pipeline)));
    }
    if let Some(info) = described_runner(port) {
        println!("using the runner on {} (pid {})", info.base_url, info.pid);
        return Ok((DemoTarget::from_run_info(&info).await, None));
    }
    let info = run_info::described_by_environment(&env, port, file_server_origin(file_port))?;
    Ok((DemoTarget::from_run_info(&info).await, None))
}

/// The live runner `.local/run.json` describes on `port`, if any.
fn described_runner(port: u16) -> Option<RunInfo> {
    run_info::live_runner().filter(|info| info.port == port)
}

/// A runner still building or starting: wait (a minute at most) until it has described
/// itself, so that its port is read from what it wrote (`PORT=4000 make run` and `make demo`
/// typed at once). A run.json older than the note is an earlier runner's (one killed outright
/// leaves it).
async fn wait_for_a_starting_runner() {
    let Some((info, note)) = run_info::default_path().ok().zip(run_info::starting_path().ok()) else { return };
    let ready = || {
        !run_info::runner_starting(&note)
            || run_info::live_runner().is_some() && run_info::described_since(&info, &note)
    };
    if ready() {
        return;
    }
    println!("a `make run` is starting (.local/run.starting): waiting up to a minute for it");
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if ready() {
            return;
        }
    }
}

async fn run_demo() -> Result<(), String> {
    wait_for_a_starting_runner().await;
    let (port, file_port) = runner_ports().await?;
    let (target, pipeline) = demo_target(port, file_port).await?;
    let file_server = Shutdown::new();
    // A runner of its own allows downloads from its PORT+1 only: another PORT here would talk
    // to no runner.
    let remedy = match pipeline {
        Some(_) => OTHER_PORTS.to_owned(),
        None => format!(
            "the runner on {port} allows downloads from it only: free it, or restart `make run` with another PORT"
        ),
    };
    let served = match listen_or(file_port, "the demo file server", &remedy).await {
        Ok(listener) => Ok(tokio::spawn(stemvault_local::file_server::serve(listener, file_server.signal()))),
        Err(e) => Err(e),
    };
    let outcome = match &served {
        Ok(_) => {
            demo::run(&target, &file_server_origin(file_port), demo::DEFAULT_TIMEOUT).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.clone()),
    };
    file_server.stop();
    if let Ok(task) = served {
        let _ = task.await;
    }
    // The callback demo's report, then (its pipeline still running) the recovery demo.
    let reported = outcome.and_then(|outcome| {
        println!("{}", demo::report(&outcome));
        outcome.check(demo::STEMS)
    });
    let recovered = match reported {
        Ok(()) => recovery_demo(&target).await,
        Err(e) => Err(e),
    };
    if let Some(pipeline) = pipeline {
        pipeline.stop().await;
    }
    recovered
}

/// The task recovered by the reconciler from the runner's built-in fake provider (skipped when
/// the runner polls a real provider).
async fn recovery_demo(target: &DemoTarget) -> Result<(), String> {
    let Some(fake) = &target.fake_provider else {
        println!("(the runner polls PROVIDER_BASE_URL, not the built-in fake provider: no recovery demo)");
        return Ok(());
    };
    let outcome = demo::run_recovery(target, fake, demo::RECOVERY_TIMEOUT).await.map_err(|e| e.to_string())?;
    println!("Recovered by the reconciler (no callback was sent):{}", demo::report(&outcome));
    outcome.check(demo::RECOVERED_FILES)
}

async fn status() -> Result<(), String> {
    let (port, _) = runner_ports().await?;
    if answers(port).await {
        println!("something answers on 127.0.0.1:{port}");
        Ok(())
    } else {
        Err(format!("nothing answers on 127.0.0.1:{port}"))
    }
}
