//! Memory budgets: how much a model's sessions may hold. On the CPU a model is opened once and
//! its runners (one per core by default) call that one session at once, so its weights count
//! once (measured at about 1.2× the model's ONNX files) and each runner adds its activations; a
//! generator's grow with its batch. A budget caps the default number of runners and a
//! generator's batch before anything runs; an allocation failure while running halves the
//! batch (see `diffusion::shrink`).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// A number of bytes, written in a graph file as `"6 GiB"`, `"800 MB"`, `"1.5G"` or bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = (&t[..split], t[split..].trim());
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a size (expected e.g. \"6 GiB\", \"800 MB\")"))?;
        let scale: f64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0f64.powi(4),
            _ => {
                return Err(format!(
                    "`{text}`: unknown unit `{unit}` (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
                ))
            }
        };
        let bytes = value * scale;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(format!("`{text}` is not a usable size"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gib = self.0 as f64 / (1024.0 * 1024.0 * 1024.0);
        if gib >= 1.0 {
            write!(f, "{gib:.1} GiB")
        } else {
            write!(f, "{:.0} MiB", self.0 as f64 / (1024.0 * 1024.0))
        }
    }
}

/// The machine's memory (`MemTotal`), where the system says.
pub fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The share of the machine's memory the models of a graph may use together when no model
/// names a budget; each of the `models` gets an even part of it.
pub const DEFAULT_SHARE: f64 = 0.6;

/// The budget of one model when the graph names none: [`DEFAULT_SHARE`] of the machine's
/// memory, split evenly among the graph's `models` (8 GiB in all when the machine says nothing).
pub fn default_budget(models: usize) -> ByteSize {
    let total = machine_memory().unwrap_or(8 << 30) as f64 * DEFAULT_SHARE;
    ByteSize((total / models.max(1) as f64) as u64)
}

/// The bytes of a model folder's ONNX files (`*.onnx`, and external data named after them) in
/// the folder and its direct subfolders (the diffusers layout: `unet/model.onnx`), followed
/// through file links (a hub cache's snapshots) but never into linked or deeper folders, so a
/// mistaken path such as `/` costs one listing, not a walk of the disk.
pub fn onnx_bytes(folder: &Path) -> u64 {
    files_in(folder, 1)
}

fn files_in(folder: &Path, depth: usize) -> u64 {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if depth > 0 {
                total += files_in(&entry.path(), depth - 1);
            }
        } else if entry.file_name().to_string_lossy().contains(".onnx") {
            // A link is followed to its file; a link to a folder counts nothing.
            total +=
                std::fs::metadata(entry.path())
                    .map_or(0, |m| if m.is_file() { m.len() } else { 0 });
        }
    }
    total
}

/// What a CPU session of a model holds, weights included, estimated from its files (measured:
/// ~1.2×).
pub fn session_bytes(folder: &Path) -> u64 {
    onnx_bytes(folder) / 4 * 5
}

/// What one image (its guided and unguided rows) adds to a UNet call's activations, estimated
/// from the model folder's `unet/config.json`: the attention maps of its first attention block
/// (positions² × heads, three alive at once, at that block's resolution) and its widest feature
/// maps at full latent resolution. `None` when the config does not say enough.
pub fn unet_image_bytes(folder: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(folder.join("unet/config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let (h, w) = match &config["sample_size"] {
        serde_json::Value::Number(n) => (n.as_u64()?, n.as_u64()?),
        serde_json::Value::Array(a) if a.len() == 2 => (a[0].as_u64()?, a[1].as_u64()?),
        _ => return None,
    };
    let channels: Vec<u64> = config["block_out_channels"]
        .as_array()?
        .iter()
        .map(|c| c.as_u64())
        .collect::<Option<_>>()?;
    let width = *channels.first()?;
    let area = h.checked_mul(w)?;
    let attention = match first_attention(&config, channels.len()) {
        Some(level) => {
            let positions = area >> (2 * level.min(31));
            let heads = attention_heads(&config, channels[level.min(channels.len() - 1)], level);
            positions
                .checked_mul(positions)?
                .checked_mul(heads.checked_mul(3)?)?
        }
        None => 0,
    };
    let maps = area.checked_mul(width)?.checked_mul(32)?;
    let floats = attention.checked_add(maps)?;
    floats.checked_mul(2 * 4)
}

/// The level (0 = full latent resolution) of a UNet's first attention: the first down block
/// whose type has attention (`CrossAttnDownBlock2D`, `AttnDownBlock2D`; all of them when the
/// config lists none), else its middle block at the lowest level, else none.
fn first_attention(config: &serde_json::Value, levels: usize) -> Option<usize> {
    let Some(blocks) = config["down_block_types"].as_array() else {
        return Some(0);
    };
    let down = blocks
        .iter()
        .position(|b| b.as_str().is_some_and(|t| t.contains("Attn")));
    let middle = match config["mid_block_type"].as_str() {
        Some(t) if t.contains("Attn") => true,
        Some("UNetMidBlock2D") | None => config["add_attention"].as_bool() != Some(false),
        Some(_) => false,
    };
    down.or_else(|| middle.then(|| levels.saturating_sub(1)))
}

/// Attention heads at a level of `channels`, as diffusers reads the config: a conditional UNet's
/// `num_attention_heads`, else its `attention_head_dim` (which that class takes as the number of
/// heads); an unconditional `UNet2DModel`'s `attention_head_dim` is each head's width.
fn attention_heads(config: &serde_json::Value, channels: u64, level: usize) -> u64 {
    let at_level = |value: &serde_json::Value| match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::Array(a) => a.get(level).or(a.last()).and_then(|v| v.as_u64()),
        _ => None,
    };
    let heads = match config["_class_name"].as_str() {
        Some("UNet2DModel") => {
            at_level(&config["attention_head_dim"]).map(|dim| channels / dim.max(1))
        }
        _ => at_level(&config["num_attention_heads"])
            .or_else(|| at_level(&config["attention_head_dim"])),
    };
    heads.unwrap_or(8).max(1)
}

/// What activations a measured default batch may hold: the model's session (its weights) or
/// [`MEASURED_FLOOR`], whichever is more. Batching pays on a CPU where the weights dominate
/// (each call reads them once for all its images) or per-call overhead does (tiny models); where
/// one image's activations outweigh the weights, more images per call only multiply memory.
pub fn measured_batch_most(session: u64, image: u64) -> usize {
    (session.max(MEASURED_FLOOR) / image.max(1)).clamp(1, usize::MAX as u64) as usize
}

/// Activations a measured default batch may always hold, however small the model: 256 MiB.
pub const MEASURED_FLOOR: u64 = 256 << 20;

/// The largest batch whose activations fit what `budget` leaves beside a session of `session`
/// bytes, with `runners` calls at once, each of batches of `image` bytes per image (at least one).
pub fn batch_within(budget: ByteSize, runners: usize, session: u64, image: u64) -> usize {
    let free = budget.0.saturating_sub(session);
    let per = image.saturating_mul(runners as u64).max(1);
    (free / per).clamp(1, usize::MAX as u64) as usize
}

/// How many of `wanted` runners of a session of `session` bytes fit `budget` when each needs
/// `per_run` bytes of activations (unknown: all of them; at least one).
pub fn runners_within(
    budget: ByteSize,
    session: u64,
    per_run: Option<u64>,
    wanted: usize,
) -> usize {
    let Some(per_run) = per_run.filter(|&p| p > 0) else {
        return wanted.max(1);
    };
    let fit = budget.0.saturating_sub(session) / per_run;
    (fit.min(usize::MAX as u64) as usize).clamp(1, wanted.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_decimal_and_binary_units() {
        let parse = |t: &str| t.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(parse("6 GiB"), Ok(6 << 30));
        assert_eq!(parse("800 MB"), Ok(800_000_000));
        assert_eq!(parse("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse(" 2 mib "), Ok(2 << 20));
        assert!(parse("six GiB").unwrap_err().contains("not a size"));
        assert!(parse("6 GB/s").unwrap_err().contains("unknown unit `GB/s`"));
        assert!(parse("0").is_err());
        assert_eq!(ByteSize(6 << 30).to_string(), "6.0 GiB");
        assert_eq!(ByteSize(300 << 20).to_string(), "300 MiB");
    }

    #[test]
    fn runners_fit_beside_one_session_and_never_fall_to_zero() {
        let gib = 1u64 << 30;
        // 10 GiB, a 2 GiB session: 8 GiB for runners of 1.5 GiB each.
        assert_eq!(
            runners_within(ByteSize(10 * gib), 2 * gib, Some(gib / 2 * 3), 16),
            5
        );
        assert_eq!(runners_within(ByteSize(10 * gib), 2 * gib, Some(gib), 2), 2);
        assert_eq!(runners_within(ByteSize(gib), 2 * gib, Some(gib), 16), 1);
        // Activations unknown (a classifier): one per core, as asked.
        assert_eq!(runners_within(ByteSize(gib), 2 * gib, None, 3), 3);
    }

    #[test]
    fn batches_fit_what_the_sessions_leave() {
        let gib = 1u64 << 30;
        // The session's weights count once: 8 GiB left for 2 runners of 0.5 GiB an image.
        assert_eq!(batch_within(ByteSize(10 * gib), 2, 2 * gib, gib / 2), 8);
        assert_eq!(batch_within(ByteSize(3 * gib), 2, 2 * gib, gib), 1);
        // SD 1.x at 512²: 64×64 latents, 8 heads, 320 channels: about 3.5 GB an image.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("unet")).unwrap();
        let config =
            r#"{"sample_size": 64, "attention_head_dim": 8, "block_out_channels": [320, 640]}"#;
        std::fs::write(dir.path().join("unet/config.json"), config).unwrap();
        assert_eq!(
            unet_image_bytes(dir.path()),
            Some(8 * (4096 * 4096 * 24 + 4096 * 320 * 32))
        );
    }

    #[test]
    fn attention_is_counted_where_the_config_puts_it() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        // UNet2DModel, attention from its third level (28² → 7², 49 positions), heads of
        // width 32 over 64 channels: 2.
        assert_eq!(
            unet_image_bytes(&repo.join("models/fashion-unet")),
            Some(8 * (49 * 49 * 2 * 3 + 784 * 32 * 32))
        );
        // Attention from its second level (14², 196 positions), 32 channels / 8 = 4 heads.
        assert_eq!(
            unet_image_bytes(&repo.join("models/tiny-pixel-unet")),
            Some(8 * (196 * 196 * 4 * 3 + 784 * 16 * 32))
        );
        // A conditional UNet's attention_head_dim is its number of heads, from the first level.
        assert_eq!(
            unet_image_bytes(&repo.join("models/tiny-sd")),
            Some(8 * (256 * 256 * 8 * 3 + 256 * 16 * 32))
        );
        // No attention in any block or the middle: feature maps only.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("unet")).unwrap();
        let config = r#"{"_class_name": "UNet2DModel", "sample_size": 8, "block_out_channels": [4, 8],
            "down_block_types": ["DownBlock2D", "DownBlock2D"], "add_attention": false}"#;
        std::fs::write(dir.path().join("unet/config.json"), config).unwrap();
        assert_eq!(unet_image_bytes(dir.path()), Some(8 * 64 * 4 * 32));
        // A size past what 64 bits hold is no estimate, not a wrapped one.
        let config = r#"{"sample_size": 4294967296, "block_out_channels": [320]}"#;
        std::fs::write(dir.path().join("unet/config.json"), config).unwrap();
        assert_eq!(unet_image_bytes(dir.path()), None);
    }

    #[test]
    fn a_measured_batch_holds_at_most_the_weights_in_activations() {
        let mib = 1u64 << 20;
        // SD 1.5 at 512²: ~5 GiB of session, ~3.5 GB an image: nothing to measure.
        assert_eq!(measured_batch_most(5 << 30, 3_560_000_000), 1);
        // Weights dominate (SD at 64²): far more than the 8 a measurement tries.
        assert_eq!(measured_batch_most(2 << 30, 4 * mib), 512);
        // A tiny model batches within the floor: 256 MiB of 7 MiB images.
        assert_eq!(measured_batch_most(6 * mib, 7 * mib), 36);
        assert_eq!(measured_batch_most(0, 0), MEASURED_FLOOR as usize);
    }

    #[test]
    fn the_shipped_tiny_sd_files_are_counted() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-sd");
        let bytes = onnx_bytes(&folder);
        let unet = std::fs::metadata(folder.join("unet/model.onnx"))
            .unwrap()
            .len();
        assert!(bytes > unet && bytes < 20 << 20, "{bytes}");
        assert_eq!(session_bytes(&folder), bytes / 4 * 5);
    }
}
