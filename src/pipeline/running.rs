//! A started pipeline: timely workers waiting for commands. Each `refresh` makes every worker
//! rescan its sources and feedback folders, push what changed at a new version, and step
//! until that version is complete everywhere — so each sink writes one consistent snapshot
//! per version that changed something. `stop` closes the inputs, drains and joins.

use super::feed::{feed, scan, Pushed};
use super::summary::{progress_message, spinner, RunSummary};
use super::PipelineError;
use crate::graph::build::sink_folders;
use crate::graph::build::{build, Shared};
use crate::operators::source::worker_for;
use crate::record::{Progress, Sample, Score};
use crate::store::commit::commit;
use crate::store::state::RunState;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use timely::communication::initialize::WorkerGuards;
use timely::worker::Worker;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Command {
    Idle,
    Refresh(u64),
    Stop,
}

#[derive(Debug)]
struct ControlState {
    /// Bumped for every command, so each worker runs each command once.
    seq: u64,
    command: Command,
    /// Local workers that finished the current command.
    done: usize,
}

/// The commands the controller gives the workers of this process.
struct Control {
    state: Mutex<ControlState>,
    pushed: Mutex<Pushed>,
    changed: Condvar,
}

impl Control {
    fn new() -> Self {
        Control {
            state: Mutex::new(ControlState {
                seq: 0,
                command: Command::Idle,
                done: 0,
            }),
            pushed: Mutex::default(),
            changed: Condvar::new(),
        }
    }
    fn issue(&self, command: Command) {
        let mut state = self.state.lock().expect("control");
        state.seq += 1;
        state.command = command;
        state.done = 0;
        self.changed.notify_all();
    }
    fn next(&self, seen: &mut u64) -> Option<Command> {
        let state = self.state.lock().expect("control");
        (state.seq > *seen).then(|| {
            *seen = state.seq;
            state.command
        })
    }
    /// What one worker feeds of what was pushed through the API: the samples of its share of
    /// the sources (`worker_for`), so its source can tell them from the folder's copies; the
    /// first worker of each process takes the feedback and samples of other processes' shares.
    fn take_pushed(&self, index: usize, peers: usize, local_workers: usize) -> Pushed {
        let first = index - index % local_workers.max(1);
        let local = first..first + local_workers.max(1);
        let mut pushed = self.pushed.lock().expect("pushed");
        let all = std::mem::take(&mut pushed.samples);
        let (samples, rest) = all.into_iter().partition(|(_, sample, _)| {
            let owner = worker_for(sample.id, peers);
            owner == index || (index == first && !local.contains(&owner))
        });
        pushed.samples = rest;
        let (feedback, progress) = if index == first {
            (
                std::mem::take(&mut pushed.feedback),
                std::mem::take(&mut pushed.progress),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        Pushed {
            samples,
            feedback,
            progress,
        }
    }
    fn finished(&self) {
        self.state.lock().expect("control").done += 1;
        self.changed.notify_all();
    }
}

/// A running pipeline (see the module header).
pub struct RunningPipeline {
    shared: Arc<Shared>,
    control: Arc<Control>,
    guards: Option<WorkerGuards<()>>,
    local_workers: usize,
    next_version: u64,
    versions: Vec<u64>,
    /// The last committed version and each sink's snapshot in it.
    committed: RunState,
    started: Instant,
}

impl RunningPipeline {
    pub(super) fn start(
        shared: Shared,
        config: timely::Config,
        progress: bool,
        committed: RunState,
    ) -> Result<RunningPipeline, PipelineError> {
        use timely::CommunicationConfig as C;
        let local_workers = match &config.communication {
            C::Thread => 1,
            C::Process(n) | C::ProcessBinary(n) => *n,
            C::Cluster { threads, .. } => *threads,
        };
        let next_version = shared.run.first_version;
        let shared = Arc::new(shared);
        let control = Arc::new(Control::new());
        let (worker_shared, worker_control) = (Arc::clone(&shared), Arc::clone(&control));
        let guards = timely::execute(config, move |worker| {
            serve(
                worker,
                &worker_shared,
                &worker_control,
                progress,
                local_workers,
            )
        })
        .map_err(PipelineError::Run)?;
        Ok(RunningPipeline {
            shared,
            control,
            guards: Some(guards),
            local_workers,
            next_version,
            versions: Vec::new(),
            committed,
            started: Instant::now(),
        })
    }

    /// Rescans every source and feedback folder and computes the new version; returns it once
    /// every sink has written it (sinks write only versions that changed something).
    pub fn refresh(&mut self) -> Result<u64, PipelineError> {
        let version = self.next_version;
        self.control.issue(Command::Refresh(version));
        self.wait_for_workers()?;
        self.next_version += 1;
        self.commit()?;
        Ok(version)
    }

    /// Queues sample updates (+1 insert, -1 retract) for a `source` node; they enter the
    /// dataflow at the next refresh. A sample the node's folder or manifest also has is present
    /// once (the rule is `SourceState::push`'s).
    pub fn push_samples(
        &self,
        source: &str,
        updates: impl IntoIterator<Item = (Sample, isize)>,
    ) -> Result<(), PipelineError> {
        self.expect_op(source, "source")?;
        let mut pushed = self.control.pushed.lock().expect("pushed");
        pushed
            .samples
            .extend(updates.into_iter().map(|(s, d)| (source.to_string(), s, d)));
        Ok(())
    }

    /// Queues trainer scores (+1 / -1) for a `feedback` node, as if read from its folder;
    /// unknown samples are reported as `api:<node>`.
    pub fn push_feedback(
        &self,
        feedback: &str,
        updates: impl IntoIterator<Item = (Score, isize)>,
    ) -> Result<(), PipelineError> {
        self.expect_op(feedback, "feedback")?;
        let mut pushed = self.control.pushed.lock().expect("pushed");
        pushed.feedback.extend(
            updates
                .into_iter()
                .map(|(s, d)| (feedback.to_string(), s, d)),
        );
        Ok(())
    }

    /// Queues validation progress (+1 / -1) for a `feedback` node's `progress` output, as if
    /// read from its folder's `progress-N.jsonl` files.
    pub fn push_progress(
        &self,
        feedback: &str,
        updates: impl IntoIterator<Item = (Progress, isize)>,
    ) -> Result<(), PipelineError> {
        self.expect_op(feedback, "feedback")?;
        let mut pushed = self.control.pushed.lock().expect("pushed");
        pushed.progress.extend(
            updates
                .into_iter()
                .map(|(p, d)| (feedback.to_string(), p, d)),
        );
        Ok(())
    }

    /// The rows of one input of a sink's committed snapshot, as JSON values.
    pub fn snapshot(
        &self,
        sink: &str,
        input: &str,
    ) -> Result<Vec<serde_json::Value>, PipelineError> {
        self.expect_op(sink, "sink")?;
        // The committed snapshot (what `current` points at once the commit is published).
        let folder = (self.committed.snapshots.get(sink).cloned())
            .unwrap_or_else(|| format!("{sink}/current"));
        let output = &self.shared.compiled.pipeline.output;
        let file = output.join(folder).join(format!("{input}.jsonl"));
        let text = std::fs::read_to_string(&file)
            .map_err(|e| PipelineError::Run(format!("{}: {e}", file.display())))?;
        text.lines()
            .map(|line| {
                serde_json::from_str(line)
                    .map_err(|e| PipelineError::Run(format!("{}: {e}", file.display())))
            })
            .collect()
    }

    fn expect_op(&self, node: &str, what: &str) -> Result<(), PipelineError> {
        match self.shared.compiled.nodes.get(node) {
            Some(n) if n.op.kind() == what => Ok(()),
            Some(_) => Err(PipelineError::Run(format!("node `{node}` is not a {what}"))),
            None => Err(PipelineError::Run(format!(
                "no node `{node}` in this pipeline"
            ))),
        }
    }

    /// The summary so far.
    pub fn summary(&self) -> RunSummary {
        RunSummary::collect(
            &self.shared,
            self.versions.clone(),
            self.started.elapsed().as_secs_f64(),
        )
    }

    /// Closes the inputs, lets the dataflow drain, joins the workers; returns the summary.
    pub fn stop(mut self) -> Result<RunSummary, PipelineError> {
        self.control.issue(Command::Stop);
        if let Some(guards) = self.guards.take() {
            for result in guards.join() {
                result.map_err(|e| PipelineError::Run(format!("a worker failed: {e}")))?;
            }
        }
        self.commit()?;
        Ok(self.summary())
    }

    fn wait_for_workers(&self) -> Result<(), PipelineError> {
        let mut state = self.control.state.lock().expect("control");
        while state.done < self.local_workers {
            let (next, _) = self
                .control
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .expect("control");
            state = next;
            let crashed = self
                .guards
                .as_ref()
                .is_some_and(|g| g.guards().iter().any(|h| h.is_finished()));
            if crashed && state.done < self.local_workers {
                return Err(PipelineError::Run(
                    "a worker stopped unexpectedly (see the message above)".into(),
                ));
            }
        }
        Ok(())
    }

    /// Commits what the sinks wrote for the version just completed, for all of them at once:
    /// `state/run.json` names each sink's snapshot, then each `current` is switched
    /// (`store::commit`). Only the process holding worker 0 writes manifests, so only it has
    /// anything to commit.
    fn commit(&mut self) -> Result<(), PipelineError> {
        let mut versions = Vec::new();
        let mut state = self.committed.clone();
        for (sink, log) in self.shared.sink_logs() {
            let log = log.lock().expect("sink log");
            if let Some(error) = &log.error {
                return Err(PipelineError::Run(format!(
                    "sink `{sink}` could not write: {error}"
                )));
            }
            if let Some(last) = log.versions.last() {
                state.set_snapshot(sink, *last);
            }
            versions.extend(log.versions.iter().copied());
        }
        versions.sort_unstable();
        versions.dedup();
        state.last_version = state.last_version.max(versions.last().copied());
        if state != self.committed {
            let output = &self.shared.compiled.pipeline.output;
            let sinks = sink_folders(&self.shared.compiled);
            commit(output, &state, &sinks).map_err(|e| PipelineError::Run(e.to_string()))?;
            self.committed = state;
        }
        self.versions = versions;
        Ok(())
    }
}

impl Drop for RunningPipeline {
    fn drop(&mut self) {
        if let Some(guards) = self.guards.take() {
            self.control.issue(Command::Stop);
            drop(guards.join());
        }
    }
}

/// One worker's life: build the dataflow, then run commands until told to stop.
fn serve(
    worker: &mut Worker,
    shared: &Shared,
    control: &Control,
    progress: bool,
    local_workers: usize,
) {
    let mut handles = worker.dataflow::<u64, _, _>(|scope| build(scope, shared));
    let mut seen = 0;
    loop {
        match control.next(&mut seen) {
            None | Some(Command::Idle) => {
                // Keep the dataflow moving for workers elsewhere while waiting.
                worker.step_or_park(Some(Duration::from_millis(5)));
            }
            Some(Command::Refresh(version)) => {
                let pushed = control.take_pushed(worker.index(), worker.peers(), local_workers);
                let scans = scan(worker, &mut handles);
                feed(&mut handles, shared, version, pushed, scans);
                let probe = handles.probe.clone();
                step_while(worker, shared, progress, || probe.less_equal(&version));
                control.finished();
            }
            Some(Command::Stop) => {
                let probe = handles.probe.clone();
                drop(handles);
                step_while(worker, shared, progress, || !probe.done());
                control.finished();
                return;
            }
        }
    }
}

fn step_while(
    worker: &mut Worker,
    shared: &Shared,
    progress: bool,
    mut busy: impl FnMut() -> bool,
) {
    let bar = (progress && worker.index() == 0).then(|| spinner(&shared.compiled.pipeline.name));
    while busy() {
        worker.step_or_park(Some(Duration::from_millis(20)));
        if let Some(bar) = &bar {
            bar.set_message(progress_message(shared));
            bar.tick();
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
