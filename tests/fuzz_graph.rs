//! A kept fuzzer for the graph compiler: graph files mutated from a corpus go through
//! `Pipeline::from_toml`, and then either every error is rendered or the graph is drawn and its
//! configuration listed — all without a panic, and each in well under a second. It runs without
//! nightly or libFuzzer (the mutations know TOML and discl's ops, fields and odd values), so CI
//! runs it on every change:
//!
//!   cargo test --test fuzz_graph                          # CI: the regressions, then 20,000 execs (~7 s)
//!   scripts/fuzz-graph.sh 600                             # ten minutes, release build
//!
//! `DISCL_FUZZ_EXECS` / `DISCL_FUZZ_SECONDS` set the budget, `DISCL_FUZZ_SEED` the first seed.
//! A crashing or slow input is written to `target/fuzz-graph/`; keep it under
//! `tests/fuzz/regressions/` once fixed, so it is replayed on every run.

use discl::Pipeline;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Where the last panic happened (the hook sees the location; the payload does not carry it).
static PANICKED_AT: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
/// An input slower than this is reported as a hang.
const SLOW: Duration = Duration::from_secs(2);

const KEYS: &[&str] = &[
    "op",
    "inputs",
    "path",
    "format",
    "model",
    "output",
    "name",
    "seed",
    "levels",
    "seeds",
    "steps",
    "guidance_scale",
    "scheduler",
    "threshold",
    "retries",
    "schedule",
    "level",
    "epochs_per_stage",
    "real_epochs",
    "stages",
    "start_level",
    "head_fraction",
    "tail_share",
    "oversample_real",
    "keep_versions",
    "batch_size",
    "classes_from",
    "rules",
    "like",
    "widths",
    "test",
    "fraction",
    "field",
    "equals",
    "not_equals",
    "threads",
    "sessions",
    "device",
    "template",
    "learning_rate",
    "lr_schedule",
    "many_above",
    "few_below",
    "keep",
];
const VALUES: &[&str] = &[
    "-1",
    "0",
    "1",
    "1e309",
    "-1e309",
    "nan",
    "inf",
    "-0.0",
    "18446744073709551616",
    "9223372036854775807",
    "4294967296",
    "\"\"",
    "\"/\"",
    "\".\"",
    "\"..\"",
    "\"../../..\"",
    "\"\\u0000\"",
    "\"é🦀\"",
    "[]",
    "{}",
    "[[]]",
    "[1, \"a\"]",
    "{ a = 1 }",
    "true",
    "0.5",
    "[0.0, 0.5, 1.0]",
    "[1.5]",
    "[-0.1]",
    "\"source\"",
    "\"sink\"",
    "\"generate\"",
    "\"curriculum\"",
    "\"mix\"",
    "\"train\"",
    "\"quality\"",
    "\"hard\"",
    "\"adaptive\"",
    "\"classify\"",
    "\"feedback\"",
    "\"filter\"",
    "\"sample\"",
    "[\"x.y.z\"]",
    "[\"train\", \"train\"]",
    "1979-05-27T07:32:00Z",
    "'''\nmulti\n'''",
];
const OPS: &[&str] = &[
    "source",
    "classify",
    "feedback",
    "hard",
    "generate",
    "quality",
    "curriculum",
    "mix",
    "sink",
    "train",
    "filter",
    "sample",
];
const SPLINTERS: &[&str] = &[
    "é",
    "🦀",
    "\r",
    "\t",
    "\0",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "=",
    ".",
    "#",
    "\n[nodes.",
    "\\",
    "\u{feff}",
    "\u{202e}",
];

/// xorshift64*: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

fn corpus() -> Vec<String> {
    let mut files: Vec<PathBuf> = Vec::new();
    for folder in ["pipelines", "tests/fuzz/corpus"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(Path::new(REPO).join(folder))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.append(&mut found);
    }
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

/// The nearest char boundary at or below `at`.
fn boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn mutate(rng: &mut Rng, text: &str, corpus: &[String]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let line = rng.below(lines.len());
    match rng.below(10) {
        0 if !lines.is_empty() => {
            lines.remove(line);
        }
        1 if !lines.is_empty() => {
            let copy = lines[line].clone();
            lines.insert(rng.below(lines.len() + 1), copy);
        }
        2 if !lines.is_empty() => {
            let other = rng.below(lines.len());
            lines.swap(line, other);
        }
        3 if !lines.is_empty() => {
            // A value replaced by an odd one.
            if let Some(eq) = lines[line].find('=') {
                lines[line] = format!("{}= {}", &lines[line][..eq], rng.pick(VALUES));
            }
        }
        4 if !lines.is_empty() => {
            // A key replaced by another field's name.
            if let Some(eq) = lines[line].find('=') {
                lines[line] = format!("{} {}", rng.pick(KEYS), &lines[line][eq..]);
            }
        }
        5 => {
            // A new node of any op reading an existing name (or itself).
            let names: Vec<String> = lines
                .iter()
                .filter_map(|l| {
                    l.strip_prefix("[nodes.")?
                        .strip_suffix(']')
                        .map(str::to_string)
                })
                .collect();
            let id = rng.below(1000);
            let read = names
                .get(rng.below(names.len()))
                .cloned()
                .unwrap_or_else(|| format!("x{id}"));
            let read = if rng.below(8) == 0 {
                format!("x{id}")
            } else {
                read
            };
            lines.push(format!(
                "\n[nodes.x{id}]\nop = \"{}\"\ninputs = [\"{read}\"]",
                rng.pick(OPS)
            ));
            for _ in 0..rng.below(3) {
                lines.push(format!("{} = {}", rng.pick(KEYS), rng.pick(VALUES)));
            }
        }
        6 => {
            // Spliced with another corpus file.
            let other = &corpus[rng.below(corpus.len())];
            let joined = lines.join("\n");
            let head = boundary(&joined, rng.below(joined.len() + 1));
            let tail = boundary(other, rng.below(other.len() + 1));
            return format!("{}{}", &joined[..head], &other[tail..]);
        }
        7 => {
            let joined = lines.join("\n");
            return joined[..boundary(&joined, rng.below(joined.len() + 1))].to_string();
        }
        8 => {
            let joined = lines.join("\n");
            let at = boundary(&joined, rng.below(joined.len() + 1));
            return format!("{}{}{}", &joined[..at], rng.pick(SPLINTERS), &joined[at..]);
        }
        _ => {
            // A byte flipped (kept only if the text stays UTF-8, as a file read as text must).
            let mut bytes = lines.join("\n").into_bytes();
            if !bytes.is_empty() {
                let at = rng.below(bytes.len());
                bytes[at] = (rng.next() & 0x7f) as u8;
            }
            return String::from_utf8(bytes).unwrap_or_default();
        }
    }
    lines.join("\n")
}

/// Everything the compiler offers on `text` (true: it compiled); a panic or a slow input is
/// returned as its cause.
fn exercise(text: &str) -> Result<bool, String> {
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        match Pipeline::from_toml("fuzz.toml", text) {
            Ok(pipeline) => {
                let dot = pipeline.dot();
                assert!(dot.starts_with("digraph"), "{dot}");
                let _ = pipeline.configuration();
                true
            }
            Err(error) => {
                let message = error.to_string();
                assert!(!message.trim().is_empty(), "an error with no text");
                false
            }
        }
    }));
    let took = started.elapsed();
    match outcome {
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            let at = PANICKED_AT.lock().unwrap().take().unwrap_or_default();
            Err(format!("{message} at {at}"))
        }
        Ok(_) if took > SLOW => Err(format!("took {took:?}")),
        Ok(compiled) => Ok(compiled),
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

fn main() {
    // `cargo test` passes harness flags (`--quiet`, filters); a listing asks for no tests.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        *PANICKED_AT.lock().unwrap() = info.location().map(|l| l.to_string());
    }));
    let mut failures: Vec<(String, String)> = Vec::new();

    let regressions = Path::new(REPO).join("tests/fuzz/regressions");
    let mut kept: Vec<PathBuf> = std::fs::read_dir(&regressions)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    kept.sort();
    for file in &kept {
        let text = std::fs::read_to_string(file).unwrap();
        if let Err(cause) = exercise(&text) {
            failures.push((cause, text));
        }
    }

    let corpus = corpus();
    let execs = env_number("DISCL_FUZZ_EXECS").unwrap_or(20_000);
    let seconds = env_number("DISCL_FUZZ_SECONDS");
    let mut rng = Rng(env_number("DISCL_FUZZ_SEED").unwrap_or(0x5eed) | 1);
    let started = Instant::now();
    let mut done = 0u64;
    let mut accepted = 0u64;
    loop {
        let budget_left = match seconds {
            Some(s) => started.elapsed() < Duration::from_secs(s),
            None => done < execs,
        };
        if !budget_left {
            break;
        }
        let mut text = corpus[rng.below(corpus.len())].clone();
        for _ in 0..1 + rng.below(4) {
            text = mutate(&mut rng, &text, &corpus);
        }
        match exercise(&text) {
            Ok(compiled) => accepted += u64::from(compiled),
            Err(cause) => failures.push((cause, text)),
        }
        done += 1;
    }
    let took = started.elapsed().as_secs_f64();
    let _ = std::panic::take_hook();
    println!(
        "fuzz_graph: {} regressions, {done} execs in {took:.1} s ({:.0}/s), {accepted} compiled, {} failures",
        kept.len(),
        done as f64 / took.max(1e-9),
        failures.len()
    );
    if failures.is_empty() {
        return;
    }
    let out = Path::new(REPO).join("target/fuzz-graph");
    std::fs::create_dir_all(&out).unwrap();
    for (cause, text) in &failures {
        let name = blake3::hash(text.as_bytes()).to_hex()[..16].to_string();
        std::fs::write(out.join(format!("{name}.toml")), text).unwrap();
        eprintln!("{name}.toml: {cause}");
    }
    eprintln!("inputs written to {}", out.display());
    std::process::exit(1);
}
