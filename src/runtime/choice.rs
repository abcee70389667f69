//! Reading a setting that names one of a few choices (`quantize = "int8"`), with the one error
//! text every such setting gives: what was written and what would have been understood.

/// The value `text` names among `choices`; otherwise
/// ``unknown {what} `{text}` (expected "a", "b" or "c")``.
pub fn one_of<T: Copy>(what: &str, text: &str, choices: &[(&str, T)]) -> Result<T, String> {
    if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
        return Ok(*value);
    }
    let names: Vec<String> = choices
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(format!("unknown {what} `{text}` (expected {expected})"))
}

#[cfg(test)]
mod tests {
    use super::one_of;

    #[test]
    fn names_what_was_written_and_every_choice() {
        let choices = [("a", 1), ("b", 2), ("c", 3)];
        assert_eq!(one_of("letter", "b", &choices), Ok(2));
        assert_eq!(
            one_of("letter", "B", &choices),
            Err("unknown letter `B` (expected \"a\", \"b\" or \"c\")".to_string())
        );
        assert_eq!(
            one_of("x", "z", &[("y", ())]),
            Err("unknown x `z` (expected \"y\")".to_string())
        );
    }
}
