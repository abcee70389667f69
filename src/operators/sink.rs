//! `sink`: writes the collections wired into it as manifests under the pipeline's output
//! folder, one consistent snapshot per completed version: `<folder>/v000007/<input>.jsonl`
//! (and `.parquet`), then `<folder>/current` is switched to it — by the sink itself, or, in a
//! pipeline, by one commit over all sinks ([`Publish`]). A version is written only once the
//! frontier has passed it, so every snapshot on disk is complete; all of a sink's files for a
//! version appear together, by renaming a finished folder into place.
//!
//! The writing (fsync, Parquet, contact sheets) runs on a writer thread of the sink's own, so
//! a slow disk never stalls a timely worker: the operator forwards each completed version's
//! updates, in order, and holds that version's capability until the writer says it is done.

use crate::operators::stats::NodeStats;
use crate::record::Digest;
use crate::store::contact_sheet::write_contact_sheets;
use crate::store::content::write_snapshot_if_changed;
use crate::store::failpoint;
use crate::store::manifest::{publish_snapshot, Layout, ManifestFormat, Row, TableKind};
use crossbeam_channel::{unbounded, Receiver, Sender, TryRecvError};
use differential_dataflow::VecCollection;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

/// A row of input `usize` and its change.
type Update = ((usize, Row), isize);

/// How a `sink` node writes.
#[derive(Clone)]
pub struct SinkParams {
    pub node: String,
    /// `<output>/<node>`.
    pub folder: PathBuf,
    /// File stem for each input, by input index.
    pub inputs: Vec<String>,
    /// The kind of record each input carries, by input index: it fixes the Parquet columns,
    /// also of an empty input.
    pub kinds: Vec<TableKind>,
    pub formats: Vec<ManifestFormat>,
    /// How many past versions to keep beside the current one.
    pub keep_versions: usize,
    /// The first version of this run: a snapshot is written for it even if it is empty, unless
    /// `current` already holds the same content (an earlier run wrote it).
    pub first_version: u64,
    /// The pipeline's output folder, when synthetic images should get contact sheets under
    /// `report/spectrum/`.
    pub report: Option<PathBuf>,
    pub stats: Arc<NodeStats>,
    /// Versions written, and the first error met writing, for the run summary.
    pub written: Arc<Mutex<SinkLog>>,
    /// What produced the snapshots (graph and model digests), for `_snapshot.json`.
    pub provenance: serde_json::Map<String, serde_json::Value>,
    /// Who makes a written version current.
    pub publish: Publish,
}

/// Who makes a version a sink has written the one readers see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// The sink itself, right after writing it (a sink used on its own).
    Itself,
    /// The pipeline, in one commit with every other sink once all have written the version
    /// (`store::commit`); the sink leaves `current` and older versions alone.
    AtCommit,
}

/// What a sink has written.
#[derive(Debug, Default)]
pub struct SinkLog {
    pub versions: Vec<u64>,
    /// Rows in the last snapshot written.
    pub last_rows: usize,
    pub error: Option<String>,
}

/// Adds `sink` to collections of (input index, row).
pub trait SinkExt<'scope> {
    /// Writes snapshots of the collection, split into one file per input index. The returned
    /// stream carries no data; its frontier passes a version once that snapshot is written
    /// (or writing it failed, which the [`SinkLog`] then says).
    fn sink_manifests(self, params: SinkParams) -> Stream<'scope, u64, Vec<()>>;
}

impl<'scope> SinkExt<'scope> for VecCollection<'scope, u64, (usize, Row)> {
    fn sink_manifests(self, params: SinkParams) -> Stream<'scope, u64, Vec<()>> {
        let name = format!("sink:{}", params.node);
        let scope = self.scope();
        // Every row is exchanged to worker 0, which alone writes.
        let is_writer = scope.index() == 0;
        self.inner
            .unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Exchange::new(|_: &((usize, Row), u64, isize)| 0),
                &name,
                move |initial, info| {
                    let first_version = params.first_version;
                    let stats = Arc::clone(&params.stats);
                    // The first version is written even if it is empty.
                    let mut first = is_writer.then(|| initial.delayed(&first_version));
                    let mut writer = is_writer.then(|| {
                        let activator = scope.worker().sync_activator_for(info.address.to_vec());
                        Writer::start(params, move || {
                            let _ = activator.activate();
                        })
                    });
                    let mut pending: BTreeMap<u64, Vec<Update>> = BTreeMap::new();
                    // Capabilities for the times with input not yet sent to the writer.
                    let mut held: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
                    move |(input, frontier), _output| {
                        input.for_each_stamp(|cap, data| {
                            let cap = cap.retain_least(0).expect("a totally ordered stamp");
                            for batch in data {
                                for (row, time, diff) in batch.drain(..) {
                                    stats.records_in(diff);
                                    held.entry(time).or_insert_with(|| cap.delayed(&time));
                                    pending.entry(time).or_default().push((row, diff));
                                }
                            }
                        });
                        let Some(writer) = writer.as_mut() else {
                            // Rows only ever reach worker 0.
                            return;
                        };
                        let frontier = frontier.frontier();
                        // Times complete in increasing order, so versions go out in order.
                        while let Some(entry) = pending.first_entry() {
                            if frontier.less_equal(entry.key()) {
                                break;
                            }
                            let (time, updates) = entry.remove_entry();
                            let mut caps: Vec<_> = held.remove(&time).into_iter().collect();
                            caps.extend(first.take());
                            writer.submit(time, updates, caps);
                        }
                        if !frontier.less_equal(&first_version) {
                            if let Some(cap) = first.take() {
                                writer.submit(first_version, Vec::new(), vec![cap]);
                            }
                        }
                        writer.release_written();
                    }
                },
            )
    }
}

/// A completed version for the writer: the updates at that time, to apply before writing.
struct Job {
    version: u64,
    updates: Vec<Update>,
}

/// The operator's end of a sink's writer thread.
struct Writer {
    jobs: Option<Sender<Job>>,
    /// Versions the writer has finished, in order.
    written: Receiver<u64>,
    /// Capabilities of versions sent and not yet written, by version.
    waiting: BTreeMap<u64, Vec<Capability<u64>>>,
    thread: Option<JoinHandle<()>>,
    log: Arc<Mutex<SinkLog>>,
    stats: Arc<NodeStats>,
}

impl Writer {
    /// Starts the thread; `wake` schedules the operator again once a version is written.
    fn start(params: SinkParams, wake: impl Fn() + Send + 'static) -> Self {
        let (jobs, queue) = unbounded();
        let (done, written) = unbounded();
        let (log, stats) = (Arc::clone(&params.written), Arc::clone(&params.stats));
        let spawned = std::thread::Builder::new()
            .name(format!("sink:{}", params.node))
            .spawn(move || write_versions(params, queue, done, wake));
        let mut writer = Writer {
            jobs: None,
            written,
            waiting: BTreeMap::new(),
            thread: None,
            log,
            stats,
        };
        match spawned {
            Ok(thread) => {
                writer.jobs = Some(jobs);
                writer.thread = Some(thread);
            }
            Err(e) => writer.fail(format!("cannot start the writer thread: {e}")),
        }
        writer
    }

    /// Queues a version; `caps` are released once it is written.
    fn submit(&mut self, version: u64, updates: Vec<Update>, caps: Vec<Capability<u64>>) {
        let sent = self
            .jobs
            .as_ref()
            .map(|jobs| jobs.send(Job { version, updates }));
        match sent {
            Some(Ok(())) => self.waiting.entry(version).or_default().extend(caps),
            // The thread is gone and its error logged: drop the capabilities, never hang.
            _ => self.fail(format!("version {version} not written: the writer stopped")),
        }
    }

    /// Releases the capabilities of every version written so far.
    fn release_written(&mut self) {
        loop {
            match self.written.try_recv() {
                Ok(version) => {
                    while let Some(entry) = self.waiting.first_entry() {
                        if *entry.key() > version {
                            break;
                        }
                        entry.remove();
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // Only a panic ends the thread while the operator lives.
                    if self.jobs.take().is_some() {
                        self.fail("the writer thread stopped".into());
                    }
                    self.waiting.clear();
                    break;
                }
            }
        }
    }

    fn fail(&mut self, message: String) {
        self.stats.error(1);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.error.get_or_insert(message);
    }
}

impl Drop for Writer {
    /// Closes the queue and waits for the versions already sent to be written.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Wakes the operator when dropped, so it also notices a writer thread that panicked.
struct WakeOnExit<F: Fn()>(F);

impl<F: Fn()> Drop for WakeOnExit<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// The writer thread: owns the sink's accumulated rows, applies each version's updates and
/// writes its snapshot unless it equals the current one, until the operator closes the queue.
fn write_versions(
    params: SinkParams,
    queue: Receiver<Job>,
    done: Sender<u64>,
    wake: impl Fn() + Send + 'static,
) {
    let wake = WakeOnExit(wake);
    let mut state: BTreeMap<(usize, Row), isize> = BTreeMap::new();
    let mut drawn = HashMap::new();
    for Job { version, updates } in queue {
        for (row, diff) in updates {
            *state.entry(row).or_insert(0) += diff;
        }
        state.retain(|_, count| *count != 0);
        write(&params, version, &state, &mut drawn);
        if done.send(version).is_err() {
            break;
        }
        (wake.0)();
    }
}

/// Writes one snapshot and records the outcome in the sink's log before it is reported done.
fn write(
    params: &SinkParams,
    version: u64,
    state: &BTreeMap<(usize, Row), isize>,
    drawn: &mut HashMap<(String, u64), Digest>,
) {
    let started = std::time::Instant::now();
    let mut tables: Vec<Vec<(&Row, isize)>> = vec![Vec::new(); params.inputs.len()];
    for ((input, row), count) in state {
        tables[*input].push((row, *count));
    }
    let rows: usize = tables
        .iter()
        .flatten()
        .map(|(_, c)| (*c).max(0) as usize)
        .sum();
    let layout = Layout {
        inputs: &params.inputs,
        kinds: &params.kinds,
        formats: &params.formats,
        keep: params.keep_versions,
        provenance: &params.provenance,
    };
    // A snapshot equal to the current one (this run's or an earlier run's) is not written.
    let result =
        write_snapshot_if_changed(&params.folder, version, &layout, &tables).and_then(|wrote| {
            if wrote && params.publish == Publish::Itself {
                publish_snapshot(&params.folder, version, params.keep_versions)?;
            }
            Ok(wrote)
        });
    if let Ok(true) = result {
        failpoint::reached(&format!("sink-written:{}", params.node));
    }
    if let (Ok(true), Some(output)) = (&result, &params.report) {
        let synthetic = tables.iter().flatten().filter_map(|(row, _)| match row {
            Row::Synthetic(s) => Some(s),
            _ => None,
        });
        // Pictures are a report: failing to draw one does not undo a committed snapshot.
        if let Err(e) = write_contact_sheets(output, synthetic, drawn) {
            eprintln!(
                "warning: sink `{}`: contact sheets for version {version} not written: {e}",
                params.node
            );
        }
        let (node, inputs, provenance) = (&params.node, &params.inputs, &params.provenance);
        crate::store::plots::write_plots(output, node, inputs, provenance, &tables, drawn);
    }
    params.stats.busy_since(started);
    let mut log = params.written.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(written) => {
            if written {
                params.stats.records_out(rows as isize);
                log.versions.push(version);
            }
            log.last_rows = rows;
        }
        Err(e) => {
            params.stats.error(1);
            log.error.get_or_insert(e.to_string());
        }
    }
}
