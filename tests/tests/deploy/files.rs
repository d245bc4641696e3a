//! Reading the deployment files and what the example binary says about itself, for
//! `deploy.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use conveyor_driver_tests::process::command;
use serde::Deserialize;
use serde_json::Value;

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

pub fn read(path: &str) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The object of `kind` in deploy/kubernetes/`file` (one document per file).
pub fn manifest(file: &str, kind: &str) -> Value {
    let text = read(&format!("deploy/kubernetes/{file}"));
    let value: Value =
        serde_norway::from_str(&text).unwrap_or_else(|err| panic!("{file} is not YAML: {err}"));
    assert_eq!(value["kind"], kind, "{file}");
    value
}

pub fn deployment() -> Value {
    manifest("deployment.yaml", "Deployment")
}

/// The ConfigMap's variables.
pub fn config_map() -> BTreeMap<String, String> {
    let map = manifest("configmap.yaml", "ConfigMap");
    serde_json::from_value(map["data"].clone()).expect("ConfigMap data: strings only")
}

/// The example binary the manifests deploy (the Deployment's `app.kubernetes.io/instance`).
pub fn binary() -> String {
    deployment()
        .pointer("/metadata/labels/app.kubernetes.io~1instance")
        .and_then(Value::as_str)
        .expect("the Deployment's app.kubernetes.io/instance label names the example")
        .to_owned()
}

/// The binary's settings from its `--help`: variable → default.
pub fn settings() -> BTreeMap<String, String> {
    let out = command(&binary()).arg("--help").output().expect("--help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let field = |line: &str, key: &str| {
        let start = line.find(key)? + key.len();
        Some(line[start..].split(']').next()?.to_owned())
    };
    let settings: BTreeMap<_, _> = help
        .lines()
        .filter_map(|line| Some((field(line, "[env: ")?, field(line, "[default: ")?)))
        .collect();
    assert!(settings.contains_key("CONVEYOR_NATS_URL"), "{help}");
    settings
}

/// The value a pod gets for `variable`: the ConfigMap's, else the binary's default.
pub fn effective(variable: &str) -> String {
    config_map()
        .remove(variable)
        .or_else(|| settings().remove(variable))
        .unwrap_or_else(|| panic!("{variable} is not a setting"))
}

/// The binary's `describe` document.
pub fn describe() -> Value {
    let out = command(&binary())
        .arg("describe")
        .output()
        .expect("describe");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("describe prints JSON")
}

/// The init containers and the containers of the pod.
pub fn containers(deployment: &Value) -> Vec<&Value> {
    let spec = &deployment["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .flat_map(|key| spec[*key].as_array().into_iter().flatten())
        .collect()
}

pub fn container<'a>(deployment: &'a Value, section: &str, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"][section]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {section} named {name}"))
}

/// The port of the metrics address the pods get.
pub fn metrics_port() -> u16 {
    let addr: std::net::SocketAddr = effective("CONVEYOR_METRICS_ADDR")
        .parse()
        .expect("CONVEYOR_METRICS_ADDR is an address");
    assert!(
        addr.ip().is_unspecified(),
        "probes come from outside the pod: {addr}"
    );
    addr.port()
}

/// The fields of a KEDA ScaledObject these manifests may use, as KEDA's CRD types them: a
/// typo fails here, as the API server would reject it (the trigger's metadata, a map of
/// strings in the CRD, is checked by the test, YAML numbers being read as strings otherwise).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaledObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: BTreeMap<String, Value>,
    pub spec: ScaledObjectSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    pub scale_target_ref: ScaleTargetRef,
    pub min_replica_count: u32,
    pub max_replica_count: u32,
    pub polling_interval: u32,
    pub cooldown_period: u32,
    pub triggers: Vec<Trigger>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleTargetRef {
    pub name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    #[serde(rename = "type")]
    pub kind: String,
    pub metadata: BTreeMap<String, Value>,
}

/// `64Mi`, `1Gi`, plain bytes.
pub fn bytes(quantity: &str) -> u64 {
    let units = [("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)];
    let (number, unit) = units
        .iter()
        .find_map(|(suffix, unit)| Some((quantity.strip_suffix(suffix)?, *unit)))
        .unwrap_or((quantity, 1));
    number.parse::<u64>().expect("a whole quantity") * unit
}

/// The metric names in the dashboard's queries (panel targets and template variables).
pub fn dashboard_metrics() -> BTreeSet<String> {
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/conveyor-driver.json")).expect("JSON");
    let mut queries: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push(query.to_owned());
        }
    }
    let mut names = BTreeSet::new();
    for query in &queries {
        let mut rest = query.as_str();
        while let Some(start) = rest.find("conveyor_driver_") {
            let name: String = rest[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[start + name.len()..];
            names.insert(name);
        }
    }
    names
}
