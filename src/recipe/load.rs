//! Reading a recipe file: YAML parsing with errors that name the key path and the line, and a
//! "did you mean" for misspelt keys.
//!
//! serde-saphyr reports what is wrong as a structured error ([`YamlError`]) with the position
//! where it found it, but without the key path. The path comes from a second parse of the same
//! text, only when the first fails: serde-saphyr reads it into a [`Node`] tree that keeps where
//! each key and value is written, and the path is the chain of keys leading to the error's
//! position. Flow mappings, nested lists and aliases are thus followed as the parser reads them,
//! with no counting of indentation and no reading of message text.
//!
//! One place needs more than the position. serde buffers the `model:` section to find its
//! `type:` first, and an error raised from the buffer carries the position of the section's
//! start or end. So the model type is read from the tree, and the text is read once more with
//! the section taken directly as that model's options, a plain struct: a wrong value there
//! (`n_layer: four`) is then reported at its own key and line, block or flow style alike; an
//! unknown key, which the error names, is looked up in the section's tree. A section that is
//! not a mapping, or has no `type:`, is said so with the list of model types.
//!
//! Validation runs on the resolved recipe, whose positions are gone. Each problem names its key
//! path first (src/recipe/validate.rs), and the loader adds where that key was given: its line
//! in the tree, or the `--set` that set it. A default is written nowhere and gets neither.

use super::Recipe;
use crate::error::{Error, Result};
use serde::de::value::MapAccessDeserializer;
use serde::de::{
    Deserialize, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use serde_saphyr::options::{DuplicateKeyPolicy, NonFiniteFloatPolicy};
use serde_saphyr::{Error as YamlError, Location, MessageFormatter, Spanned};
use std::path::{Path, PathBuf};

/// Read, parse, apply `--set` overrides, fill presets and defaults, make paths absolute and
/// validate. The result is the resolved recipe. Each validation problem says where its value
/// was given: the line in the file or the `--set`.
pub fn load_recipe(path: &Path, overrides: &[String]) -> Result<Recipe> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::Recipe(format!("recipe file {} does not exist", path.display()))
        }
        std::io::ErrorKind::InvalidData => Error::Recipe(format!(
            "recipe file {} is not valid UTF-8 text",
            path.display()
        )),
        std::io::ErrorKind::IsADirectory => Error::Recipe(format!(
            "{} is a folder; give the recipe file (an experiment folder keeps its recipe as \
             recipe.yaml)",
            path.display()
        )),
        _ => Error::io(format!("cannot read recipe {}", path.display()), e),
    })?;
    let origin = path.display().to_string();
    let recipe = parse_recipe(&text, &origin)?;
    let recipe = resolve(super::apply_overrides(recipe, overrides)?)?;
    let problems = super::validate::problems(&recipe);
    if problems.is_empty() {
        return Ok(recipe);
    }
    let tree = parse_tree(&text).ok();
    let mut message = format!("{origin}: invalid recipe:");
    for problem in &problems {
        message.push_str("\n  - ");
        if let Some(at) = given_at(problem, tree.as_ref(), overrides) {
            message.push_str(&format!("{at}: "));
        }
        message.push_str(problem);
    }
    Err(Error::Recipe(message))
}

/// Where the value a validation problem is about was given: the `--set` that set it, or its
/// line in the recipe's `tree`. `None` for a default (or a value a preset or `init_from`
/// fills): it is written nowhere.
fn given_at(problem: &str, tree: Option<&Spanned<Node>>, overrides: &[String]) -> Option<String> {
    // The problem's key path is the first thing it names (src/recipe/validate.rs).
    let key = problem.strip_prefix('`')?.split(['`', ':']).next()?;
    // The last `--set` wins; one that sets the key, a section holding it, or a part of it
    // decides its value.
    let set = (overrides.iter().rev()).find(|item| {
        let path = item.split_once('=').map_or(item.as_str(), |(path, _)| path);
        under(key, path) || under(path, key)
    });
    match set {
        Some(item) => Some(format!("--set {item}")),
        None => line_of(tree?, key).map(|line| format!("line {line}")),
    }
}

/// Whether the dotted key path `inner` is `outer` or lies under it.
fn under(inner: &str, outer: &str) -> bool {
    (inner.strip_prefix(outer)).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The line where the dotted key path `key` (`train.batch_size`) is written, if it is.
fn line_of(root: &Spanned<Node>, key: &str) -> Option<u64> {
    let mut node = root;
    let mut line = None;
    for part in key.split('.') {
        let step = children(node).into_iter().find(|s| s.key == part)?;
        line = Some(step.at.line());
        node = step.node;
    }
    line
}

/// Replayed events allowed for all aliases (`*name`) together. serde-saphyr's default is a
/// million, which lets a "billion laughs" recipe build a million values before it fails; a
/// recipe has a few hundred, so this cap still leaves room for every sane use of aliases.
const MAX_REPLAYED_EVENTS: usize = 10_000;

/// Parse recipe text; `origin` names the file in error messages.
pub fn parse_recipe(text: &str, origin: &str) -> Result<Recipe> {
    // A byte-order mark (Windows editors) and CRLF line ends need nothing: serde-saphyr reads
    // both (tests/bad_recipes.rs checks it).
    serde_saphyr::from_str_with_options::<Recipe>(text, typed_options())
        .map_err(|e| Error::Recipe(format!("{origin}: {}", describe(&e, text))))
}

/// The options of the typed parse.
fn typed_options() -> serde_saphyr::Options {
    let mut options = yaml_options();
    // A repeated key is an error (also serde-saphyr's default, stated because it matters): the
    // first value would otherwise be dropped without a word.
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    options
}

/// The options both parses share: serde-saphyr's budget on events, nodes and depth, and the
/// cap on alias replay.
fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.alias_limits.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    options.with_snippet = false;
    options
}

/// Fill the model preset and defaults and make paths absolute.
fn resolve(mut recipe: Recipe) -> Result<Recipe> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("cannot read current directory", e))?;
    let absolute = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = cwd.join(&*p);
        }
    };
    let output_dir = recipe.output_dir.get_or_insert_with(|| "exp".into());
    absolute(output_dir);
    absolute(&mut recipe.data.train);
    recipe.data.valid.as_mut().map(absolute);
    recipe.data.test.as_mut().map(absolute);
    let prepared = recipe
        .data
        .prepared_dir
        .get_or_insert_with(|| recipe.output_dir.clone().unwrap_or_default().join("data"));
    absolute(prepared);
    recipe.data.tokenizer.path.as_mut().map(absolute);
    if let Some(target) = recipe.data.target_tokenizer.as_mut() {
        target.path.as_mut().map(absolute);
    }
    recipe.init_from.as_mut().map(absolute);
    // A fine-tuning recipe takes the encoder's shape from the pretrained experiment. A resolved
    // recipe (an experiment's) already has it: then the pretrained folder is only read if it is
    // still there.
    if let Some(dir) = recipe.init_from.clone() {
        inherit_pretrained_shape(&mut recipe.model, &dir)?;
    }
    recipe.model.options_mut().resolve()?;
    Ok(recipe)
}

/// A fine-tuning recipe takes the model's shape from the pretrained model (an nlpkit experiment
/// or an HF folder). A resolved recipe (an experiment's) already has it: then the pretrained
/// folder is only read if it is still there.
fn inherit_pretrained_shape(model: &mut super::ModelSection, dir: &Path) -> Result<()> {
    use super::ModelSection;
    let hf = crate::hf::is_model_folder(dir);
    match model {
        ModelSection::Bert(options) => {
            let resolved = options.n_layer.is_some() && options.width.is_some();
            if resolved && !dir.exists() {
                return Ok(());
            }
            if hf {
                let config = crate::hf::read_config(dir)?;
                return options.inherit(&crate::hf::bert::options(&config, dir)?);
            }
            let (_, pretrained) = crate::experiment::Experiment::open(dir)?;
            let ModelSection::Bert(base) = &pretrained.model else {
                return Err(Error::Recipe(format!(
                    "`init_from: {}` is a {} experiment; fine-tuning bert starts from a bert one",
                    dir.display(),
                    pretrained.model.name()
                )));
            };
            options.inherit(base)
        }
        ModelSection::Gpt2(options) => {
            let resolved = options.n_layer.is_some() && options.n_embd.is_some();
            if resolved && !dir.exists() {
                return Ok(());
            }
            if !hf {
                return Err(Error::Recipe(format!(
                    "`init_from: {}` is not an HF model folder (no config.json); a gpt2 recipe \
                     fine-tunes an HF GPT-2 checkpoint",
                    dir.display()
                )));
            }
            let config = crate::hf::read_config(dir)?;
            options.inherit(&crate::hf::gpt2::options(&config, dir)?)
        }
        // Validation names the key: `init_from` is for bert and gpt2.
        _ => Ok(()),
    }
}

/// A YAML node as serde-saphyr reads it, with where each key and value is written.
#[derive(Debug)]
enum Node {
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    /// A scalar's value, written back as text (`~` for null).
    Scalar(String),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_i128<E>(self, v: i128) -> std::result::Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_u128<E>(self, v: u128) -> std::result::Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_unit<E>(self) -> std::result::Result<Node, E> {
        Ok(Node::Scalar("~".into()))
    }

    fn visit_none<E>(self) -> std::result::Result<Node, E> {
        Ok(Node::Scalar("~".into()))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Map(entries))
    }
}

/// The tree of `text`. Repeated keys are all kept, to name both lines, and `.nan` stays text:
/// the typed parse judges those.
fn parse_tree(text: &str) -> std::result::Result<Spanned<Node>, YamlError> {
    let mut options = yaml_options();
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    options.non_finite_float_policy = NonFiniteFloatPolicy::AsString;
    serde_saphyr::from_str_with_options(text, options)
}

/// One key of a key path (or `[i]` for a list item), where it is written and the node it holds.
struct Step<'a> {
    key: String,
    at: Location,
    node: &'a Spanned<Node>,
}

/// (line, column), to compare positions.
fn position(at: Location) -> (u64, u64) {
    (at.line(), at.column())
}

/// The entries of a mapping or the items of a list.
fn children(node: &Spanned<Node>) -> Vec<Step<'_>> {
    match &node.value {
        Node::Map(entries) => entries
            .iter()
            .map(|(key, node)| Step {
                key: match &key.value {
                    Node::Scalar(text) => text.clone(),
                    _ => "?".into(),
                },
                at: key.referenced,
                node,
            })
            .collect(),
        Node::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, node)| Step {
                key: format!("[{i}]"),
                at: node.referenced,
                node,
            })
            .collect(),
        Node::Scalar(_) => Vec::new(),
    }
}

/// An alias's nodes carry the anchor's positions, not those of the place that uses it.
fn is_alias(node: &Spanned<Node>) -> bool {
    node.referenced != node.defined
}

/// The keys leading to the position `at`: at each level the last entry written at or before
/// it (by position: a merge key's entries are listed after the mapping's own). The walk stops
/// at an alias, whose nodes are written elsewhere.
fn steps_to(root: &Spanned<Node>, at: (u64, u64)) -> Vec<Step<'_>> {
    let mut steps: Vec<Step> = Vec::new();
    let mut node = root;
    loop {
        let Some(step) = children(node)
            .into_iter()
            .filter(|s| position(s.at) <= at)
            .max_by_key(|s| position(s.at))
        else {
            return steps;
        };
        let child = step.node;
        steps.push(step);
        if is_alias(child) || position(child.referenced) > at {
            return steps;
        }
        node = child;
    }
}

/// Where `key` is written under `node` (its own entries first, then deeper), as steps from it.
fn find_key<'a>(node: &'a Spanned<Node>, key: &str) -> Option<Vec<Step<'a>>> {
    let mut entries = children(node);
    if let Some(i) = entries.iter().position(|s| s.key == key) {
        return Some(vec![entries.swap_remove(i)]);
    }
    entries.into_iter().find_map(|step| {
        let mut rest = find_key(step.node, key)?;
        rest.insert(0, step);
        Some(rest)
    })
}

/// `data.tokenizer.special_tokens[1]`.
fn dotted(steps: &[Step]) -> String {
    let mut path = String::new();
    for step in steps {
        if !path.is_empty() && !step.key.starts_with('[') {
            path.push('.');
        }
        path.push_str(&step.key);
    }
    path
}

/// Turn a YAML error into a message that says what, where and what to do.
fn describe(error: &YamlError, text: &str) -> String {
    let tree = match parse_tree(text) {
        Ok(tree) => Some(tree),
        // serde-saphyr reads as it parses, so a type error can come before a syntax error
        // further on (`[8` unclosed); the syntax error is the one to fix first.
        Err(syntax) if !too_big(&syntax) && !too_big(error) => return describe_at(&syntax, None),
        Err(_) => None,
    };
    if let Some(shape) = tree.as_ref().and_then(not_a_mapping) {
        return shape;
    }
    if let Some(model) = tree.as_ref().and_then(|root| in_model(error, root, text)) {
        return model;
    }
    describe_at(error, tree.as_ref().map(|root| (root, text)))
}

/// An error in the `model:` section, whose position serde's buffer loses (it is that of the
/// section's start or end). A section that is not a mapping, or lacks `type:`, is told with the
/// model types. In a mapping with a known type, the text is read again with the section taken
/// directly as that model's options ([`reread_model`]): the error found then has its own
/// position, and is the one described.
fn in_model(error: &YamlError, root: &Spanned<Node>, text: &str) -> Option<String> {
    let kind = error.without_snippet();
    if too_big(error) || matches!(kind, YamlError::DuplicateMappingKey { .. }) {
        return None;
    }
    let steps = steps_to(root, position(kind.location()?));
    let model = steps.first().filter(|s| s.key == "model")?;
    let line = model.at.line();
    let types = super::model::model_types();
    let valid = format!("valid values for `model.type`: {}", types.join(", "));
    let expected = |written: Option<&str>| {
        let example = (written.and_then(|v| nearest(v, &types)))
            .or(types.first().copied())
            .unwrap_or("gpt2");
        format!(
            "expected a mapping with the model's `type` and options, e.g. \
             `model: {{type: {example}}}`; {valid}"
        )
    };
    match &model.node.value {
        Node::Map(_) => {
            let Some(model_type) = children(model.node).into_iter().find(|s| s.key == "type")
            else {
                let missing = matches!(kind, YamlError::SerdeMissingField { field: "type", .. });
                return missing
                    .then(|| format!("{}; {valid}", describe_at(error, Some((root, text)))));
            };
            let Node::Scalar(name) = &model_type.node.value else {
                return None;
            };
            if !types.contains(&name.as_str()) {
                return None;
            }
            let error = reread_model(text, name).err()?;
            Some(describe_at(&error, Some((root, text))))
        }
        Node::Seq(_) => Some(format!(
            "`model` at line {line} is a list: {}",
            expected(None)
        )),
        Node::Scalar(v) if v == "~" => Some(format!(
            "`model` at line {line} is empty: {}",
            expected(None)
        )),
        Node::Scalar(v) => {
            let written = scalar_text(model.node, text).unwrap_or(v);
            Some(format!(
                "`model` at line {line} has `{written}`: {}",
                expected(Some(v))
            ))
        }
    }
}

/// Read `text` again with the `model:` section taken directly as the options of the model type
/// `name` (a known one), not through serde's buffer; the other sections are skipped.
fn reread_model(text: &str, name: &str) -> std::result::Result<(), YamlError> {
    serde_saphyr::with_deserializer_from_str_with_options(text, typed_options(), |d| {
        d.deserialize_map(Sections(name))
    })
}

/// The top-level mapping, of which only `model` is read, as the options of the model type.
struct Sections<'a>(&'a str);

impl<'de> Visitor<'de> for Sections<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping of sections")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "model" {
                map.next_value_seed(ModelOptionsSeed(self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `model:` mapping read as the options of the model type it holds.
struct ModelOptionsSeed<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for ModelOptionsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ModelOptionsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "the options of model type {}", self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<(), A::Error> {
        let options = MapAccessDeserializer::new(WithoutType(map));
        match super::ModelSection::read_options(self.0, options) {
            Some(section) => section.map(drop),
            None => Err(serde::de::Error::unknown_variant(self.0, &[])),
        }
    }
}

/// A mapping without its `type` entry: what serde gives a model's options after taking the
/// type.
struct WithoutType<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for WithoutType<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> std::result::Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.0.next_key::<String>()? {
            if key != "type" {
                return seed.deserialize(key.into_deserializer()).map(Some);
            }
            self.0.next_value::<IgnoredAny>()?;
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> std::result::Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

/// Whether an error is a breach of the limits on size and alias expansion.
fn too_big(error: &YamlError) -> bool {
    matches!(
        without_alias(error).0,
        YamlError::AliasReplayLimitExceeded { .. }
            | YamlError::AliasExpansionLimitExceeded { .. }
            | YamlError::AliasReplayStackDepthExceeded { .. }
            | YamlError::AliasReplayCounterOverflow { .. }
            | YamlError::Budget { .. }
    )
}

/// The error itself, and where the alias that led to it is used and its anchor written.
fn without_alias(error: &YamlError) -> (&YamlError, Option<serde_saphyr::Locations>) {
    match error.without_snippet() {
        YamlError::AliasError {
            error, locations, ..
        } => (error.without_snippet(), Some(*locations)),
        error => (error, None),
    }
}

/// The message for `error`, with its key path when the `tree` of the text is known.
fn describe_at(error: &YamlError, tree: Option<(&Spanned<Node>, &str)>) -> String {
    let (error, alias) = without_alias(error);
    let Some(at) = error.location() else {
        return message(error);
    };
    let mut steps = tree
        .map(|(root, _)| steps_to(root, position(at)))
        .unwrap_or_default();
    let mut through = String::new();
    if let (Some(alias), Some((root, _))) = (alias, tree) {
        // The error is inside an anchor's value used through an alias: its path is the alias's
        // followed by the keys from the anchored node down to the error.
        let (used, defined) = (alias.reference_location, alias.defined_location);
        let inside = (steps.iter())
            .position(|s| position(s.node.referenced) == position(defined))
            .map_or(Vec::new(), |anchor| steps.split_off(anchor + 1));
        steps = steps_to(root, position(used));
        steps.extend(inside);
        through = if steps.last().is_some_and(|s| s.at.line() == used.line()) {
            format!(" (an alias of line {})", defined.line())
        } else {
            format!(" (through the alias at line {})", used.line())
        };
    }
    let path = dotted(&steps);
    let line = steps.last().map_or(at.line(), |s| s.at.line());
    let at_line = format!(" at line {line}{through}");
    match error {
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => {
            let steps = match tree {
                Some((root, _)) => with_key(root, steps, field),
                None => steps,
            };
            let mut path = dotted(&steps);
            if steps.last().is_none_or(|s| s.key != *field) {
                path = join(&path, field);
            }
            let line = steps.last().map_or(at.line(), |s| s.at.line());
            unknown_key(&path, &format!(" at line {line}{through}"), field, expected)
        }
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => unknown_value(variant, &path, &at_line, expected),
        YamlError::DuplicateMappingKey { key, .. } => {
            let key = key.as_deref().unwrap_or("?");
            // The tree keeps both entries; the first is in the mapping that holds the second.
            let first = match (tree, steps.len()) {
                (None, _) | (_, 0) => None,
                (Some((root, _)), 1) => children(root).into_iter().find(|s| s.key == key),
                (_, n) => children(steps[n - 2].node)
                    .into_iter()
                    .find(|s| s.key == key),
            };
            let (path, twice) = match first {
                Some(first) if first.at.line() != line => {
                    (path, format!("at lines {} and {line}", first.at.line()))
                }
                Some(first) => (
                    path,
                    format!(
                        "at line {line}, columns {} and {}",
                        first.at.column(),
                        at.column()
                    ),
                ),
                None => (key.to_string(), format!("at line {}", at.line())),
            };
            format!("duplicate key `{path}` {twice}; keep one")
        }
        YamlError::SerdeMissingField { field, .. } => {
            // The error is at the last key of the mapping that lacks the field (or at the
            // mapping itself when it is empty).
            let at_key = steps.last().is_some_and(|s| position(s.at) == position(at));
            let section = &steps[..steps.len() - usize::from(at_key)];
            match section.last() {
                Some(s) => format!(
                    "missing key `{}` in `{}` at line {}",
                    join(&dotted(section), field),
                    dotted(section),
                    s.at.line()
                ),
                None => format!("missing key `{field}` at the top level"),
            }
        }
        YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. }
        | YamlError::AliasReplayCounterOverflow { .. } => format!(
            "line {}: the aliases (`*name`) expand to more than {MAX_REPLAYED_EVENTS} YAML \
             values, far more than a recipe holds; write the values out",
            at.line()
        ),
        YamlError::Budget { breach, .. } => format!(
            "line {}: the YAML is too large or too deeply nested for a recipe ({breach:?})",
            at.line()
        ),
        _ => match (steps.last(), tree) {
            (Some(last), Some((_, text))) => {
                let value = scalar_text(last.node, text)
                    .map(|v| format!(" has `{v}`"))
                    .unwrap_or_default();
                format!("`{path}`{at_line}{value}: {}", message(error))
            }
            _ => format!(
                "line {}, column {}: {}",
                at.line(),
                at.column(),
                message(error)
            ),
        },
    }
}

/// A scalar as written in the text (`1e400`, not the `.inf` it reads as), from its span.
fn scalar_text<'t>(node: &Spanned<Node>, text: &'t str) -> Option<&'t str> {
    let Node::Scalar(_) = node.value else {
        return None;
    };
    let span = node.defined.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    text.get(start..start + len).map(str::trim)
}

/// The steps to `key`: those given when they end there, else the first place it is written
/// under their deepest node that has it (serde's buffered `model:` section reports its
/// unknown keys at the section's start or end).
fn with_key<'a>(root: &'a Spanned<Node>, mut steps: Vec<Step<'a>>, key: &str) -> Vec<Step<'a>> {
    if steps.last().is_some_and(|s| s.key == key) {
        return steps;
    }
    for depth in (0..=steps.len()).rev() {
        let node = if depth == 0 {
            root
        } else {
            steps[depth - 1].node
        };
        if let Some(found) = find_key(node, key) {
            steps.truncate(depth);
            steps.extend(found);
            return steps;
        }
    }
    steps
}

/// A recipe that is not a mapping of sections, said plainly.
fn not_a_mapping(root: &Spanned<Node>) -> Option<String> {
    let what = match &root.value {
        Node::Map(_) => return None,
        Node::Seq(_) => format!("a list (line {})", root.referenced.line()),
        Node::Scalar(v) if v == "~" => {
            return Some(
                "the recipe is empty; it needs at least the `data` and `model` sections".into(),
            );
        }
        Node::Scalar(v) => format!("the single value `{v}`"),
    };
    Some(format!(
        "the recipe is {what}; it must be a mapping of sections (`data:`, `model:`, `train:`, ...)"
    ))
}

/// serde-saphyr's own words for an error, without its position (we say where), with the
/// expected types said in recipe terms.
fn message(error: &YamlError) -> String {
    let expected = match error {
        YamlError::InvalidScalar { ty, .. } => match *ty {
            "u64" | "usize" => format!("a whole number from 0 to {}", u64::MAX),
            ty if ty.starts_with('u') => "a whole number (0 or more)".into(),
            ty if ty.starts_with('i') => "a whole number".into(),
            "floating point" | "f64" | "f32" => "a number (at most about 1.8e308)".into(),
            "boolean" | "bool" => "true or false".into(),
            ty => return format!("invalid {ty}"),
        },
        YamlError::Unexpected { expected, .. } => match *expected {
            "string scalar" | "scalar" => "a single value, not a list or a mapping".into(),
            "mapping start" => "a mapping (`key: value` entries)".into(),
            "sequence start" => "a list".into(),
            expected => expected.to_string(),
        },
        _ => {
            return serde_saphyr::UserMessageFormatter
                .format_message(error)
                .into_owned();
        }
    };
    format!("expected {expected}")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// "unknown key `path` at line N; did you mean `x`?" (or the valid keys when none is close).
pub(super) fn unknown_key(path: &str, at: &str, key: &str, expected: &[&str]) -> String {
    let hint = match nearest(key, expected) {
        // Only some models have LoRA: say which rather than guess a key.
        _ if path == "model.lora" => "; LoRA (`model.lora`) is for bert and gpt2 models".into(),
        Some(best) => format!("; did you mean `{best}`?"),
        None if !expected.is_empty() => format!("; valid keys here: {}", expected.join(", ")),
        None => String::new(),
    };
    format!("unknown key `{path}`{at}{hint}")
}

/// "unknown value `v` for `path` at line N; did you mean `x`? valid values: a, b".
pub(super) fn unknown_value(value: &str, path: &str, at: &str, expected: &[&str]) -> String {
    let hint = match nearest(value, expected) {
        Some(best) => format!("did you mean `{best}`? "),
        None => String::new(),
    };
    format!(
        "unknown value `{value}` for `{path}`{at}; {hint}valid values: {}",
        expected.join(", ")
    )
}

/// The closest valid name, if it is close enough to be a plausible typo.
pub(crate) fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "seed: 1\ntrain:\n  max_steps: 10\n  bach_size: 4\nmodel:\n  type: gpt2\n";

    fn error_of(text: &str) -> String {
        parse_recipe(text, "r.yaml").unwrap_err().to_string()
    }

    #[test]
    fn the_path_follows_the_parser_not_the_indentation() {
        let tree =
            parse_tree("seed: 1\ntrain: {max_steps: 10,\n  bach_size: [4, [5, 6]]}\n").unwrap();
        let at = |line, column| dotted(&steps_to(&tree, (line, column)));
        assert_eq!(at(1, 7), "seed");
        assert_eq!(at(2, 16), "train.max_steps");
        assert_eq!(at(3, 3), "train.bach_size");
        assert_eq!(at(3, 18), "train.bach_size[1]");
        assert_eq!(at(3, 19), "train.bach_size[1][0]");
    }

    #[test]
    fn merged_keys_are_placed_where_they_are_written() {
        let tree = parse_tree("model:\n  <<: {type: gpt2}\n  n_layer: four\n").unwrap();
        assert_eq!(dotted(&steps_to(&tree, (3, 12))), "model.n_layer");
        assert_eq!(dotted(&steps_to(&tree, (2, 14))), "model.type");
    }

    #[test]
    fn misspelt_key_gets_a_suggestion() {
        let out = error_of(TEXT);
        assert!(
            out.contains(
                "r.yaml: unknown key `train.bach_size` at line 4; did you mean `batch_size`?"
            ),
            "{out}"
        );
    }

    #[test]
    fn a_problem_is_placed_at_its_line_or_at_the_override_that_set_it() {
        let tree = parse_tree("train:\n  batch_size: 0\ndata: {split: {train: 2}}\n").unwrap();
        let at = |problem: &str, sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            given_at(problem, Some(&tree), &sets)
        };
        let batch = "`train.batch_size` must be at least 1";
        assert_eq!(at(batch, &[]).as_deref(), Some("line 2"));
        assert_eq!(
            at("`data.split.train` must be positive", &[]).as_deref(),
            Some("line 3")
        );
        assert_eq!(
            at("`data.split` ratios must sum to 1", &[]).as_deref(),
            Some("line 3")
        );
        assert_eq!(at("`train.accum_grad` must be at least 1", &[]), None);
        assert_eq!(at("`model.share_embeddings: true` needs", &[]), None);
        // The last override of the key, of a section holding it, or of a part of it.
        let sets = ["train.batch_size=4", "train={batch_size: 0}", "seed=1"];
        assert_eq!(
            at(batch, &sets).as_deref(),
            Some("--set train={batch_size: 0}")
        );
        let part = at("`data.split` ratios must sum to 1", &["data.split.train=2"]);
        assert_eq!(part.as_deref(), Some("--set data.split.train=2"));
        assert_eq!(
            at(batch, &["train.batch_size_x=1"]).as_deref(),
            Some("line 2")
        );
    }

    #[test]
    fn unrelated_key_lists_valid_keys() {
        assert_eq!(nearest("zzzzzz", &["batch_size"]), None);
    }
}
