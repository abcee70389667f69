//! The `discl` command line: run, validate and draw pipelines.

use clap::{Parser, Subcommand};
use discl::pipeline::{write_summary, Pipeline, RunOptions};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            file,
            summary_json,
            workers,
            timely,
        } => {
            let result = Pipeline::from_file(&file).and_then(|pipeline| {
                let mut timely_args = vec!["-w".to_string(), workers.to_string()];
                timely_args.extend(timely);
                pipeline.run(&RunOptions {
                    timely_args,
                    progress: std::io::stderr().is_terminal(),
                })
            });
            match result {
                Ok(summary) => {
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
