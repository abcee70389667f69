//! The columns of each record kind's manifest table, borrowed from the rows: the schema is
//! fixed by the kind, so an empty table has the same columns as a full one.

use super::error::StoreError;
use super::manifest::{Row, TableKind};
use super::parquet_table::{encode, Column};
use crate::record::{ErrorRecord, Progress, Sample, Score, StageItem, StagePlan, Synthetic};
use std::borrow::Cow;

/// Encodes rows that all have the kind `kind` as a Parquet file with that kind's columns.
pub fn encode_rows(kind: TableKind, rows: &[&Row]) -> Result<Vec<u8>, StoreError> {
    match kind {
        TableKind::Sample => {
            let rows = narrow(kind, rows, |r| match r {
                Row::Sample(s) => Some(s),
                _ => None,
            })?;
            encode(&sample_columns(&rows))
        }
        TableKind::Score => {
            let rows = narrow(kind, rows, |r| match r {
                Row::Score(s) => Some(s),
                _ => None,
            })?;
            encode(&score_columns(&rows))
        }
        TableKind::Synthetic => {
            let rows = narrow(kind, rows, |r| match r {
                Row::Synthetic(s) => Some(s),
                _ => None,
            })?;
            encode(&synthetic_columns(&rows))
        }
        TableKind::Progress => {
            let rows = narrow(kind, rows, |r| match r {
                Row::Progress(p) => Some(p),
                _ => None,
            })?;
            encode(&progress_columns(&rows))
        }
        TableKind::StagePlan => {
            let rows = narrow(kind, rows, |r| match r {
                Row::StagePlan(p) => Some(p),
                _ => None,
            })?;
            encode(&plan_columns(&rows))
        }
        TableKind::StageItem => {
            let rows = narrow(kind, rows, |r| match r {
                Row::StageItem(i) => Some(i),
                _ => None,
            })?;
            encode(&stage_item_columns(&rows))
        }
        TableKind::Error => {
            let rows = narrow(kind, rows, |r| match r {
                Row::Error(e) => Some(e),
                _ => None,
            })?;
            encode(&error_columns(&rows))
        }
    }
}

/// The records inside `rows`, or an error naming the first row of another kind.
fn narrow<'a, T>(
    kind: TableKind,
    rows: &[&'a Row],
    pick: impl Fn(&'a Row) -> Option<&'a T>,
) -> Result<Vec<&'a T>, StoreError> {
    rows.iter()
        .map(|row| {
            pick(row).ok_or_else(|| StoreError::WrongRow {
                row: TableKind::of(row),
                table: kind,
            })
        })
        .collect()
}

pub(super) fn text<'a, T>(rows: &[&'a T], field: impl Fn(&'a T) -> &'a str) -> Column<'a> {
    Column::Text(rows.iter().map(|r| Cow::Borrowed(field(r))).collect())
}

fn sample_columns<'a>(rows: &[&'a Sample]) -> Vec<(&'static str, Column<'a>)> {
    vec![
        ("id", Column::U64(rows.iter().map(|r| r.id).collect())),
        ("name", text(rows, |r| &r.name)),
        ("label", text(rows, |r| &r.label)),
        ("path", text(rows, |r| &r.path)),
        ("digest", hex(rows.iter().map(|r| r.digest))),
    ]
}

fn score_columns<'a>(rows: &[&'a Score]) -> Vec<(&'static str, Column<'a>)> {
    vec![
        (
            "sample",
            Column::U64(rows.iter().map(|r| r.sample).collect()),
        ),
        (
            "checkpoint",
            Column::U64(rows.iter().map(|r| r.checkpoint).collect()),
        ),
        (
            "p_true",
            Column::F32(rows.iter().map(|r| r.p_true.0).collect()),
        ),
        ("loss", Column::F32(rows.iter().map(|r| r.loss.0).collect())),
        ("predicted", text(rows, |r| &r.predicted)),
    ]
}

/// The nested `key` of a synthetic record is flattened into its first four columns.
/// Tables of a quality filter with retries add `attempt` and `first_seed` (an image without
/// retry information is a first attempt); other tables keep the columns they always had.
fn synthetic_columns<'a>(rows: &[&'a Synthetic]) -> Vec<(&'static str, Column<'a>)> {
    let mut columns = plain_synthetic_columns(rows);
    if rows.iter().any(|r| r.retry.is_some()) {
        let retry = |r: &Synthetic| {
            r.retry.unwrap_or(crate::record::Retry {
                attempt: 0,
                first_seed: r.key.seed,
            })
        };
        let attempts = rows.iter().map(|r| retry(r).attempt).collect();
        columns.push(("attempt", Column::U32(attempts)));
        let first = rows.iter().map(|r| retry(r).first_seed).collect();
        columns.push(("first_seed", Column::U32(first)));
    }
    columns
}

fn plain_synthetic_columns<'a>(rows: &[&'a Synthetic]) -> Vec<(&'static str, Column<'a>)> {
    vec![
        (
            "sample",
            Column::U64(rows.iter().map(|r| r.key.sample).collect()),
        ),
        (
            "level",
            Column::U16(rows.iter().map(|r| r.key.level).collect()),
        ),
        (
            "seed",
            Column::U32(rows.iter().map(|r| r.key.seed).collect()),
        ),
        ("prompt", text(rows, |r| &r.key.prompt)),
        ("label", text(rows, |r| &r.label)),
        ("path", text(rows, |r| &r.path)),
        ("digest", hex(rows.iter().map(|r| r.digest))),
        ("source", text(rows, |r| &r.source)),
        (
            "text_score",
            Column::OptionalF32(rows.iter().map(|r| r.text_score.map(|v| v.0)).collect()),
        ),
        (
            "image_score",
            Column::OptionalF32(rows.iter().map(|r| r.image_score.map(|v| v.0)).collect()),
        ),
    ]
}

fn error_columns<'a>(rows: &[&'a ErrorRecord]) -> Vec<(&'static str, Column<'a>)> {
    vec![
        ("node", text(rows, |r| &r.node)),
        ("location", text(rows, |r| &r.location)),
        ("message", text(rows, |r| &r.message)),
    ]
}

fn hex<'a>(digests: impl Iterator<Item = crate::record::Digest>) -> Column<'a> {
    Column::Text(digests.map(|d| Cow::Owned(d.to_hex())).collect())
}

fn progress_columns<'a>(rows: &[&'a Progress]) -> Vec<(&'static str, Column<'a>)> {
    vec![
        (
            "after_stages",
            Column::U32(rows.iter().map(|r| r.after_stages).collect()),
        ),
        (
            "sample",
            Column::U64(rows.iter().map(|r| r.sample).collect()),
        ),
        ("level", Column::U16(rows.iter().map(|r| r.level).collect())),
        (
            "p_true",
            Column::F32(rows.iter().map(|r| r.p_true.0).collect()),
        ),
    ]
}

fn plan_columns<'a>(rows: &[&'a StagePlan]) -> Vec<(&'static str, Column<'a>)> {
    vec![
        ("stage", Column::U32(rows.iter().map(|r| r.stage).collect())),
        (
            "levels",
            Column::ListU16(rows.iter().map(|r| r.levels.clone()).collect()),
        ),
        (
            "epochs",
            Column::U32(rows.iter().map(|r| r.epochs).collect()),
        ),
    ]
}

fn stage_item_columns<'a>(rows: &[&'a StageItem]) -> Vec<(&'static str, Column<'a>)> {
    vec![
        ("stage", Column::U32(rows.iter().map(|r| r.stage).collect())),
        ("epoch", Column::U32(rows.iter().map(|r| r.epoch).collect())),
        (
            "sample",
            Column::U64(rows.iter().map(|r| r.sample).collect()),
        ),
        ("level", Column::U16(rows.iter().map(|r| r.level).collect())),
        (
            "seed",
            Column::OptionalU32(rows.iter().map(|r| r.seed).collect()),
        ),
        (
            "prompt",
            Column::OptionalText(
                rows.iter()
                    .map(|r| r.prompt.as_deref().map(Cow::Borrowed))
                    .collect(),
            ),
        ),
        ("label", text(rows, |r| &r.label)),
        ("path", text(rows, |r| &r.path)),
        (
            "copies",
            Column::U32(rows.iter().map(|r| r.copies).collect()),
        ),
    ]
}
