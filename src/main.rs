//! The `discl` command line: run, validate and draw pipelines.

use clap::{Parser, Subcommand};
use discl::pipeline::{write_summary, Pipeline, PipelineError, RunOptions, RunSummary};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// mimalloc: differential's batches and merges allocate and free many small values; glibc's
/// malloc spent a third of absorbing a feedback change in its free lists (`cargo bench --bench
/// curriculum`: 0.077 → 0.058 s). Embedders keep whatever allocator they choose.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "discl",
    version,
    about = "Diffusion curricula as a dataflow engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline once and write its manifests.
    Run {
        /// The graph file.
        file: PathBuf,
        /// Write the run summary (per node: records, errors, model calls, seconds) here.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// Keep running: rescan sources and feedback every `--interval` seconds and write a
        /// new snapshot whenever something changed; Ctrl-C or SIGTERM stops cleanly.
        #[arg(long)]
        watch: bool,
        /// Seconds between rescans in watch mode (a positive number; fractions allowed).
        #[arg(long, default_value = "5", value_parser = parse_interval)]
        interval: Duration,
        /// Timely workers in this process.
        #[arg(short, long, default_value_t = 1)]
        workers: usize,
        /// Further timely arguments for a cluster (`-n` processes, `-p` index, `-h` hostfile).
        #[arg(last = true)]
        timely: Vec<String>,
    },
    /// Check a graph file, its files and models; exit 1 on any error.
    Validate { file: PathBuf },
    /// Print a graph file as Graphviz DOT.
    Graph { file: PathBuf },
    /// List the generated images and contact sheets in the pipeline's output folder that no
    /// kept snapshot refers to; remove them only with `--delete`.
    Gc {
        /// The graph file (its `output` is the folder looked at).
        file: PathBuf,
        /// Remove what is listed (refused while a run uses the output folder).
        #[arg(long)]
        delete: bool,
    },
}

/// `discl gc`: lists (and with `delete` removes) what no kept snapshot refers to.
fn collect_garbage(file: &std::path::Path, delete: bool) -> Result<String, String> {
    use discl::store::gc;
    let pipeline = Pipeline::from_file(file).map_err(|e| e.to_string())?;
    let output = &pipeline.compiled().pipeline.output;
    let garbage = gc::find(output, &models_in_use(&pipeline)?).map_err(|e| e.to_string())?;
    for path in garbage
        .images
        .iter()
        .chain(&garbage.sheets)
        .chain(&garbage.models)
    {
        println!("{path}");
    }
    let what = format!(
        "{} image(s), {} contact sheet(s) and {} rewritten UNet(s), {:.1} MiB",
        garbage.images.len(),
        garbage.sheets.len(),
        garbage.models.len(),
        garbage.bytes as f64 / (1024.0 * 1024.0)
    );
    let read = format!("{} snapshot(s) read", garbage.snapshots);
    if !delete {
        return Ok(format!(
            "{}: {what} that nothing kept refers to ({read}); --delete removes them",
            output.display()
        ));
    }
    gc::remove(output, &garbage).map_err(|e| e.to_string())?;
    Ok(format!("{}: removed {what} ({read})", output.display()))
}

/// The folders under `state/models/` the graph's nodes ask for: a rewritten UNet per model
/// digest and form. A model folder that cannot be read is an error (nothing is listed then).
fn models_in_use(pipeline: &Pipeline) -> Result<Vec<String>, String> {
    let compiled = pipeline.compiled();
    let mut names = Vec::new();
    for node in compiled.nodes.values() {
        let (Some(model), Some(form)) = (node.op.model(), node.op.unet_form()) else {
            continue;
        };
        // The UNet as exported has no folder there: no need to hash the model for it.
        if form.variant().is_none() {
            continue;
        }
        let folder = &compiled.models[model].0.path;
        let digest = discl::runtime::diffusion::digest::folder_digest(folder).map_err(|e| {
            format!("model `{model}`: {e}; cannot tell which rewritten UNets are in use")
        })?;
        names.extend(discl::runtime::rewrite::folder_name(&digest, form));
    }
    Ok(names)
}

/// A watch interval: positive, finite seconds that fit a `Duration` (no busy loop, no panic).
fn parse_interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds".to_string())?;
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err("expected a positive, finite number of seconds".into());
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| "too many seconds".into())
}

/// A flag that SIGINT (Ctrl-C), SIGTERM and SIGHUP raise instead of killing the process, so a
/// run finishes the version in hand, writes its summary and exits 0 whichever signal stops it.
/// A second signal abandons the version at once (exit 130): the store survives any kill, and
/// the next run resumes from what was finished.
fn stop_on_signals() -> Result<Arc<AtomicBool>, PipelineError> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("discl: stopped; the version in hand is abandoned");
            std::process::exit(130);
        }
        eprintln!("discl: stopping after the version in hand (signal again to abandon it)");
    })
    .map_err(|e| PipelineError::Run(format!("cannot catch Ctrl-C and SIGTERM: {e}")))?;
    Ok(stop)
}

/// Refreshes until a stop signal, printing a line for every version that wrote something.
fn watch_pipeline(
    pipeline: &Pipeline,
    options: &RunOptions,
    interval: Duration,
    stop: &AtomicBool,
) -> Result<RunSummary, PipelineError> {
    let mut running = pipeline.start(options)?;
    // A train node trains its stages first (refreshing after each), then the watch goes on.
    let training = pipeline.train(&mut running, options)?;
    let mut written = 0;
    while !stop.load(Ordering::SeqCst) {
        let version = running.refresh()?;
        let summary = running.summary();
        if summary.versions_written.len() > written {
            written = summary.versions_written.len();
            println!("version {version}: {}", summary.line());
        }
        // An interval past the end of time waits for Ctrl-C.
        let until = Instant::now().checked_add(interval);
        while until.is_none_or(|until| Instant::now() < until) && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut summary = running.stop()?;
    summary.training = training;
    Ok(summary)
}

fn main() -> ExitCode {
    // Before any thread starts: ONNX Runtime would write outside the output folder otherwise.
    discl::runtime::onnx::disable_telemetry();
    match Cli::parse().command {
        Command::Run {
            file,
            summary_json,
            watch,
            interval,
            workers,
            timely,
        } => {
            let result = Pipeline::from_file(&file).and_then(|pipeline| {
                for line in pipeline.configuration() {
                    eprintln!("{line}");
                }
                eprintln!("timely: {workers} worker(s) in this process");
                let mut timely_args = vec!["-w".to_string(), workers.to_string()];
                timely_args.extend(timely);
                // A one-shot run catches the signals too: it finishes its one version.
                let stop = stop_on_signals()?;
                let options = RunOptions {
                    timely_args,
                    progress: std::io::stderr().is_terminal(),
                    stop: Some(Arc::clone(&stop)),
                };
                if watch {
                    watch_pipeline(&pipeline, &options, interval, &stop)
                } else {
                    pipeline.run(&options)
                }
            });
            match result {
                Ok(summary) => {
                    if let Some(training) = &summary.training {
                        print!("{}", training.table());
                        if let Some(model) = &training.model {
                            println!("learner exported to {model}");
                        }
                    }
                    println!("{}", summary.line());
                    if let Some(path) = summary_json {
                        if let Err(e) = write_summary(&summary, &path) {
                            eprintln!("error: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { file } => match Pipeline::from_file(&file).and_then(|p| p.validate()) {
            Ok(()) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Gc { file, delete } => match collect_garbage(&file, delete) {
            Ok(line) => {
                eprintln!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Graph { file } => match Pipeline::from_file(&file) {
            Ok(pipeline) => {
                print!("{}", pipeline.dot());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}
