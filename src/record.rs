//! The records that flow between operators. All are serde + bincode serialisable so timely can
//! exchange them between processes, and totally ordered so differential can arrange them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A content hash (blake3) of a file's bytes, written as hex in manifests.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }
    /// The hex form used in manifests and file names.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    /// Parses the hex form.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Digest(out))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let hex = String::deserialize(d)?;
            Digest::from_hex(&hex).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
        } else {
            <[u8; 32]>::deserialize(d).map(Digest)
        }
    }
}

/// A stable sample id: a hash of the dataset-relative path or of the manifest's own id.
pub type SampleId = u64;

/// Derives the stable id of a sample from its dataset-relative name.
pub fn sample_id(name: &str) -> SampleId {
    let hash = blake3::hash(name.as_bytes());
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A real training image.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sample {
    /// Stable id (see [`sample_id`]).
    pub id: SampleId,
    /// The dataset-relative name the id was derived from (relative path, or the manifest's id).
    pub name: String,
    /// Class name.
    pub label: String,
    /// Where the image is read from.
    pub path: String,
    /// Content hash of the image file.
    pub digest: Digest,
}

/// A probability or loss that can live inside an ordered, hashed record.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Value(pub f32);

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for Value {}
impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Value {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}

/// What a classifier (ours, or the user's trainer) says about one sample at one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Score {
    /// The sample scored.
    pub sample: SampleId,
    /// The checkpoint (model version) that scored it; later checkpoints supersede earlier ones.
    pub checkpoint: u64,
    /// Probability of the true class.
    pub p_true: Value,
    /// Cross-entropy loss of the true class.
    pub loss: Value,
    /// The predicted class name.
    pub predicted: String,
}

/// Guidance level λ in per mille: levels are integers in keys, never floats.
pub type Level = u16;

/// One synthetic image to make: a sample, a guidance level, a seed index and a prompt.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GenKey {
    pub sample: SampleId,
    /// λ in per mille (0 = text only, towards 1000 = the real image).
    pub level: Level,
    /// Seed index, 0..seeds.
    pub seed: u32,
    /// The prompt (or, for class-conditional models, the class name) it is conditioned on.
    pub prompt: String,
}

/// A synthetic image that was made (or found in the store).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct Synthetic {
    pub key: GenKey,
    /// Class name (the source sample's label).
    pub label: String,
    /// Where the PNG is.
    pub path: String,
    /// Content hash of the PNG.
    pub digest: Digest,
    /// The real image it was guided by.
    pub source: String,
    /// Image–text score from a quality filter, once scored.
    pub text_score: Option<Value>,
    /// Image–real-image similarity, once scored.
    pub image_score: Option<Value>,
    /// Set by a quality filter with retries: which attempt of its (sample, λ, seed) this image
    /// is; `key.seed` is then the seed that made it (derived for attempts after the first).
    #[serde(default)]
    pub retry: Option<Retry>,
}

/// Which attempt of a quality filter's retries made an image (METHOD §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Retry {
    /// 0 for the image the generator made first, k for its k-th regeneration.
    pub attempt: u32,
    /// The seed index of the first attempt.
    pub first_seed: u32,
}

/// JSON (the manifests) leaves out a missing `retry`, so a pipeline without retries writes the
/// same lines as before they existed; bincode, which has no field names, always writes it.
impl Serialize for Synthetic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Fields<'a> {
            key: &'a GenKey,
            label: &'a str,
            path: &'a str,
            digest: &'a Digest,
            source: &'a str,
            text_score: &'a Option<Value>,
            image_score: &'a Option<Value>,
            #[serde(skip_serializing_if = "RetryField::omitted")]
            retry: RetryField<'a>,
        }
        #[derive(Serialize)]
        #[serde(transparent)]
        struct RetryField<'a> {
            value: &'a Option<Retry>,
            #[serde(skip)]
            omit_none: bool,
        }
        impl RetryField<'_> {
            fn omitted(&self) -> bool {
                self.omit_none && self.value.is_none()
            }
        }
        Fields {
            key: &self.key,
            label: &self.label,
            path: &self.path,
            digest: &self.digest,
            source: &self.source,
            text_score: &self.text_score,
            image_score: &self.image_score,
            retry: RetryField {
                value: &self.retry,
                omit_none: s.is_human_readable(),
            },
        }
        .serialize(s)
    }
}

/// A record that could not be processed, reported with where it came from instead of crashing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// The graph node that met the error.
    pub node: String,
    /// The file (and line, where there is one) the error is about.
    pub location: String,
    /// What went wrong.
    pub message: String,
}

/// The level a real image stands at on the guidance spectrum (λ = 1) in stage manifests.
pub const REAL_LEVEL: Level = 1000;

/// A trainer's evaluation of one validation image at one guidance level: p(true class) after
/// `after_stages` training stages (0: before any training). The adaptive curriculum reads the
/// change between consecutive evaluations.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Progress {
    pub after_stages: u32,
    /// The validation image.
    pub sample: SampleId,
    /// Its guidance level in per mille (`REAL_LEVEL` for the real image).
    pub level: Level,
    pub p_true: Value,
}

/// A curriculum's decision for one training stage: which guidance levels' synthetic images
/// enter it (none: real data only) and how many epochs it lasts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StagePlan {
    pub stage: u32,
    /// Levels in per mille, ascending; empty for a real-only stage.
    pub levels: Vec<Level>,
    pub epochs: u32,
}

/// One row of a stage's training manifest: a real image or a synthetic one, and how many
/// copies of it the epoch holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StageItem {
    pub stage: u32,
    pub epoch: u32,
    /// The real sample (for a synthetic image: the sample it was guided by).
    pub sample: SampleId,
    /// λ in per mille; `REAL_LEVEL` (1000) for a real image.
    pub level: Level,
    /// Seed index of a synthetic image (`None` for a real image).
    pub seed: Option<u32>,
    /// Prompt of a synthetic image (`None` for a real image).
    pub prompt: Option<String>,
    /// Class name.
    pub label: String,
    /// Where the image is.
    pub path: String,
    pub copies: u32,
}

/// The kinds of record a node can produce; the graph compiler checks wiring with these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Sample,
    Score,
    Synthetic,
    Progress,
    StagePlan,
    StageItem,
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::Sample => "Sample",
            RecordKind::Score => "Score",
            RecordKind::Synthetic => "Synthetic",
            RecordKind::Progress => "Progress",
            RecordKind::StagePlan => "StagePlan",
            RecordKind::StageItem => "StageItem",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_through_hex_and_bincode() {
        let d = Digest::of(b"hello");
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", d.to_hex()));
        let bytes = bincode::serialize(&d).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(bincode::deserialize::<Digest>(&bytes).unwrap(), d);
    }

    #[test]
    fn records_round_trip_through_bincode() {
        let s = Sample {
            id: sample_id("coat/a.png"),
            name: "coat/a.png".into(),
            label: "coat".into(),
            path: "/data/coat/a.png".into(),
            digest: Digest::of(b"x"),
        };
        let back: Sample = bincode::deserialize(&bincode::serialize(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let score = Score {
            sample: s.id,
            checkpoint: 3,
            p_true: Value(0.25),
            loss: Value(1.386),
            predicted: "shirt".into(),
        };
        let back: Score = bincode::deserialize(&bincode::serialize(&score).unwrap()).unwrap();
        assert_eq!(back, score);
    }

    #[test]
    fn synthetic_json_leaves_out_a_missing_retry_and_bincode_keeps_it() {
        let mut image = Synthetic {
            key: GenKey {
                sample: 7,
                level: 300,
                seed: 1,
                prompt: "a bag".into(),
            },
            label: "bag".into(),
            path: "synthetic/ab.png".into(),
            digest: Digest::of(b"png"),
            source: "/d/bag/7.png".into(),
            text_score: Some(Value(0.25)),
            image_score: None,
            retry: None,
        };
        let json = serde_json::to_string(&image).unwrap();
        assert!(
            json.ends_with(r#""text_score":0.25,"image_score":null}"#),
            "{json}"
        );
        for retry in [
            None,
            Some(Retry {
                attempt: 2,
                first_seed: 1,
            }),
        ] {
            image.retry = retry;
            let bytes = bincode::serialize(&image).unwrap();
            assert_eq!(bincode::deserialize::<Synthetic>(&bytes).unwrap(), image);
            let json = serde_json::to_string(&image).unwrap();
            assert_eq!(serde_json::from_str::<Synthetic>(&json).unwrap(), image);
        }
        assert!(serde_json::to_string(&image)
            .unwrap()
            .ends_with(r#""retry":{"attempt":2,"first_seed":1}}"#));
    }

    #[test]
    fn sample_ids_are_stable() {
        assert_eq!(sample_id("coat/a.png"), sample_id("coat/a.png"));
        assert_ne!(sample_id("coat/a.png"), sample_id("coat/b.png"));
    }

    /// Ids persist in users' feedback files and stores: any change to [`sample_id`] must be a
    /// deliberate, announced migration, so the exact values are pinned here.
    #[test]
    fn sample_ids_match_their_golden_values() {
        let golden: [(&str, u64); 5] = [
            ("coat/a.png", 14628364177254782285),
            ("tshirt-top/000123.png", 15801963349620199318),
            ("img-42", 6027360304714487254),
            ("sandale/ÉtéÜ–日本.png", 10044638373308782500),
            ("", 12007152915317330863),
        ];
        for (name, id) in golden {
            assert_eq!(sample_id(name), id, "sample_id({name:?})");
        }
    }
}
