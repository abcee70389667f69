//! `sink`: writes the collections wired into it as manifests under the pipeline's output
//! folder, one consistent snapshot per completed version: `<folder>/v000007/<input>.jsonl`
//! (and `.parquet`), then `<folder>/current` is switched to it. A version is written only
//! once the frontier has passed it, so every snapshot on disk is complete; all of a sink's
//! files for a version appear together, by renaming a finished folder into place.

use crate::operators::stats::NodeStats;
use crate::record::Digest;
use crate::store::contact_sheet::write_contact_sheets;
use crate::store::manifest::{write_snapshot, ManifestFormat, Row, TableKind};
use differential_dataflow::VecCollection;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
    /// The first version of this run: a snapshot is written for it even if it is empty.
    pub first_version: u64,
    /// The pipeline's output folder, when synthetic images should get contact sheets under
    /// `report/spectrum/`.
    pub report: Option<PathBuf>,
    pub stats: Arc<NodeStats>,
    /// Versions written, and the first error met writing, for the run summary.
    pub written: Arc<Mutex<SinkLog>>,
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
    /// stream carries no data; its frontier passes a version once that snapshot is written.
    fn sink_manifests(self, params: SinkParams) -> Stream<'scope, u64, Vec<()>>;
}

impl<'scope> SinkExt<'scope> for VecCollection<'scope, u64, (usize, Row)> {
    fn sink_manifests(self, params: SinkParams) -> Stream<'scope, u64, Vec<()>> {
        let name = format!("sink:{}", params.node);
        let mut pending: BTreeMap<u64, Vec<Update>> = BTreeMap::new();
        // Capabilities for the times not yet written: the sink's (empty) output, which the run
        // probes, cannot pass a version until its snapshot is on disk.
        let mut held: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
        let mut state: BTreeMap<(usize, Row), isize> = BTreeMap::new();
        let mut drawn = HashMap::new();
        // Every row is exchanged to worker 0, which alone writes.
        let writer = self.scope().index() == 0;
        let done: Stream<'scope, u64, Vec<()>> = self
            .inner
            .unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Exchange::new(|_: &((usize, Row), u64, isize)| 0),
                &name,
                move |initial, _info| {
                    // The first version is written even if it is empty.
                    let mut first = writer.then(|| initial.delayed(&params.first_version));
                    move |(input, frontier), _output| {
                        input.for_each_stamp(|cap, data| {
                            let cap = cap.retain_least(0).expect("a totally ordered stamp");
                            for batch in data {
                                for (row, time, diff) in batch.drain(..) {
                                    params.stats.records_in(diff);
                                    held.entry(time).or_insert_with(|| cap.delayed(&time));
                                    pending.entry(time).or_default().push((row, diff));
                                }
                            }
                        });
                        let frontier = frontier.frontier();
                        let complete: Vec<u64> = pending
                            .keys()
                            .copied()
                            .filter(|t| !frontier.less_equal(t))
                            .collect();
                        for time in complete {
                            for (row, diff) in pending.remove(&time).unwrap_or_default() {
                                *state.entry(row).or_insert(0) += diff;
                            }
                            state.retain(|_, count| *count != 0);
                            write(&params, time, &state, &mut drawn);
                            held.remove(&time);
                            first = None;
                        }
                        if first.is_some() && !frontier.less_equal(&params.first_version) {
                            write(&params, params.first_version, &state, &mut drawn);
                            first = None;
                        }
                    }
                },
            );
        done
    }
}

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
    let result = write_snapshot(
        &params.folder,
        version,
        &params.inputs,
        &params.kinds,
        &tables,
        &params.formats,
        params.keep_versions,
    );
    if let (Ok(()), Some(output)) = (&result, &params.report) {
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
    }
    params.stats.busy_since(started);
    let mut log = params.written.lock().expect("sink log");
    match result {
        Ok(()) => {
            params.stats.records_out(rows as isize);
            log.versions.push(version);
            log.last_rows = rows;
        }
        Err(e) => {
            params.stats.error(1);
            log.error.get_or_insert(e);
        }
    }
}
