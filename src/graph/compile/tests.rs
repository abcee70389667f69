//! The compiler's phases on small graph files: every error at once, each placed.

use super::*;

fn errors(text: &str) -> Vec<String> {
    let graph = GraphFile::parse("g.toml", text).unwrap();
    compile(graph)
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect()
}

const HEAD: &str = "[pipeline]\nname = \"p\"\noutput = \"out\"\n[models.m]\npath = \"models/m\"\n";

#[test]
fn reports_three_different_mistakes_at_once() {
    let text = format!(
        "{HEAD}[nodes.train]\nop = \"source\"\nformat = \"image_folder\"\npath = \"d\"\n\
         [nodes.scores]\nop = \"clasify\"\ninputs = [\"train\"]\n\
         [nodes.hard]\nop = \"hard\"\ninputs = [\"train\", \"scorez\"]\nrules = [{{ misclassified = true }}]\n\
         [nodes.out]\nop = \"sink\"\ninputs = [\"hard\"]\nformat = [\"jsonl\"]\n"
    );
    let shown = errors(&text);
    assert_eq!(
        shown,
        vec![
            format!(
                "g.toml:11: node `scores`: unknown op `clasify` (expected one of {})",
                ops::names()
            ),
            "g.toml:15: node `hard`: input `scorez` is not a node".to_string(),
            "g.toml:20: node `out`: unknown field `format`, expected `formats` or `keep_versions`"
                .to_string(),
        ]
    );
}

#[test]
fn finds_cycles_and_type_errors() {
    let text = format!(
        "{HEAD}[nodes.a]\nop = \"hard\"\ninputs = [\"b\", \"b\"]\nrules = [{{ misclassified = true }}]\n\
         [nodes.b]\nop = \"hard\"\ninputs = [\"a\", \"a\"]\nrules = [{{ misclassified = true }}]\n"
    );
    let shown = errors(&text);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].contains("cycle: a → b → a"), "{shown:?}");
    let text = format!(
        "{HEAD}[nodes.train]\nop = \"source\"\nformat = \"image_folder\"\npath = \"d\"\n\
         [nodes.s]\nop = \"classify\"\ninputs = [\"train\"]\nmodel = \"nope\"\n\
         [nodes.h]\nop = \"hard\"\ninputs = [\"s\", \"train\"]\nrules = [{{ p_true_below = 2.0 }}]\n"
    );
    let shown = errors(&text);
    assert_eq!(shown.len(), 3, "{shown:?}");
    assert!(
        shown[0].starts_with("g.toml:13: node `s`: unknown model `nope`"),
        "{shown:?}"
    );
    assert!(
        shown[1].starts_with("g.toml:16: node `h`: takes [Sample, Score, ...]"),
        "{shown:?}"
    );
    assert!(
        shown[2].starts_with("g.toml:17: node `h`: p_true_below = 2 is not a probability"),
        "{shown:?}"
    );
}

#[test]
fn a_wrong_value_names_its_field_and_line_from_the_span() {
    let text = format!(
        "{HEAD}[nodes.train]\nop = \"source\"\nformat = \"image_folder\"\npath = \"d\"\n\
         [nodes.s]\nop = \"classify\"\ninputs = [\"train\"]\nmodel = \"m\"\nbatch_size = \"many\"\n\
         [nodes.g]\nop = \"generate\"\ninputs = [\"train\"]\nmodel = \"m\"\n\
         levels = [0.5, 1.5]\nscheduler = \"warp\"\n"
    );
    let errors = compile(GraphFile::parse("g.toml", &text).unwrap()).unwrap_err();
    let placed: Vec<(usize, Option<&str>)> = errors
        .iter()
        .map(|e| (e.line, e.field.as_deref()))
        .collect();
    assert_eq!(
        placed,
        vec![
            (14, Some("batch_size")),
            (19, Some("levels")),
            (20, Some("scheduler"))
        ]
    );
    assert!(
        errors[0].message.contains("invalid type: string \"many\""),
        "{errors:?}"
    );
    assert_eq!(
        errors[1].message,
        "field `levels`: level λ = 1.5 is outside [0, 1)"
    );
    assert!(
        errors[2].message.starts_with("field `scheduler`: "),
        "{errors:?}"
    );
}

#[test]
fn orders_nodes_by_dependency() {
    let text = format!(
        "{HEAD}[nodes.out]\nop = \"sink\"\ninputs = [\"s\"]\n\
         [nodes.s]\nop = \"classify\"\ninputs = [\"train\"]\nmodel = \"m\"\n\
         [nodes.train]\nop = \"source\"\nformat = \"image_folder\"\npath = \"d\"\n"
    );
    let compiled = compile(GraphFile::parse("g.toml", &text).unwrap()).unwrap();
    assert_eq!(
        compiled.nodes.keys().collect::<Vec<_>>(),
        vec!["train", "s", "out"]
    );
}

#[test]
fn five_wrong_fields_are_five_errors_each_naming_field_and_line() {
    let text = format!(
        "{HEAD}[nodes.train]\nop = \"source\"\nformat = \"image_folder\"\npath = \"d\"\n\
         [nodes.g]\nop = \"generate\"\ninputs = [\"train\"]\nmodel = \"m\"\n\
         levels = \"low\"\nseeds = \"four\"\nsteps = 2.5\nguidance_scale = \"high\"\nbatch_size = -1\n"
    );
    assert_eq!(
        errors(&text),
        vec![
            "g.toml:14: node `g`: field `levels`: invalid type: string \"low\", expected a sequence",
            "g.toml:15: node `g`: field `seeds`: invalid type: string \"four\", expected u32",
            "g.toml:16: node `g`: field `steps`: invalid type: floating point `2.5`, expected usize",
            "g.toml:17: node `g`: field `guidance_scale`: invalid type: string \"high\", expected f32",
            "g.toml:18: node `g`: field `batch_size`: invalid value: integer `-1`, expected usize",
        ]
    );
    let errors = compile(GraphFile::parse("g.toml", &text).unwrap()).unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_deref().unwrap()).collect();
    assert_eq!(
        fields,
        ["levels", "seeds", "steps", "guidance_scale", "batch_size"]
    );
}

#[test]
fn unknown_and_wrong_fields_together_and_a_missing_one() {
    // An inline-table node: an unknown field, a wrong type and a missing `model`, all at once;
    // the wrong `levels` left out is not reported again as missing.
    let text = format!(
        "{HEAD}[nodes]\ntrain = {{ op = \"source\", format = \"image_folder\", path = \"d\" }}\n\
         g = {{ op = \"generate\", inputs = [\"train\"], colour = \"red\",\n  levels = 3 }}\n"
    );
    assert_eq!(
        errors(&text),
        vec![
            "g.toml:8: node `g`: unknown field `colour`, expected one of `model`, `levels`, \
             `seeds`, `steps`, `guidance_scale`, `scheduler`, `batch_size`, `vae_latent`, \
             `prompt`, `prompts`, `classes_from`, `classes`, `quantize`, `attention`",
            "g.toml:8: node `g`: missing field `model`",
            "g.toml:9: node `g`: field `levels`: invalid type: integer `3`, expected a sequence",
        ]
    );
}
