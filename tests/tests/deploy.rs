//! The deployment files (`Dockerfile`, `deploy/kubernetes/`, `deploy/grafana/`) against the
//! runtime's own word, so that they cannot drift from it: the settings as the example binary's
//! `--help` declares them (names, defaults), what its `describe` says about its consumer, the
//! paths its metrics listener serves, and the metric names of a real `/metrics` scrape.
//! scripts/check-deploy.sh validates the same files against the Kubernetes schemas (and lints
//! the Dockerfile); this test checks what a schema cannot: that they agree with the driver.

// A crate root: its modules are found next to it, not in deploy/, unless told.
#[path = "deploy/files.rs"]
mod files;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use conveyor_driver_tests::http::{free_port, get, poll};
use conveyor_driver_tests::pki;
use conveyor_driver_tests::process::{command, DriverProcess};
use conveyor_driver_tests::{Conveyor, NatsServer};
use files::*;
use serde_json::{json, Value};

#[test]
fn the_scaled_object_scales_on_the_drivers_consumer_of_the_messages_stream() {
    let text = read("deploy/kubernetes/scaledobject.yaml");
    let scaled: ScaledObject = serde_norway::from_str(&text).expect("a ScaledObject KEDA takes");
    assert_eq!(
        (scaled.api_version.as_str(), scaled.kind.as_str()),
        ("keda.sh/v1alpha1", "ScaledObject")
    );
    assert!(scaled.metadata.contains_key("name"));
    let spec = scaled.spec;
    assert_eq!(spec.scale_target_ref.name, deployment()["metadata"]["name"]);
    assert!(
        spec.min_replica_count >= 1,
        "the first pod registers the consumer"
    );
    assert!(spec.max_replica_count >= spec.min_replica_count);
    assert!(spec.polling_interval > 0 && spec.cooldown_period > 0);
    let [trigger] = spec.triggers.as_slice() else {
        panic!("one trigger");
    };
    assert_eq!(trigger.kind, "nats-jetstream");
    let metadata: BTreeMap<&str, &str> = trigger
        .metadata
        .iter()
        .map(|(key, value)| {
            let text = value.as_str();
            (
                key.as_str(),
                text.unwrap_or_else(|| panic!("{key}: {value} is not a string")),
            )
        })
        .collect();
    let keys: BTreeSet<&str> = metadata.keys().copied().collect();
    let required = [
        "account",
        "consumer",
        "lagThreshold",
        "natsServerMonitoringEndpoint",
        "stream",
    ];
    let optional = ["activationLagThreshold", "useHttps"];
    assert!(required.iter().all(|key| keys.contains(key)), "{keys:?}");
    assert!(
        keys.iter()
            .all(|key| required.contains(key) || optional.contains(key)),
        "not a nats-jetstream parameter in {keys:?}"
    );

    let described = describe();
    assert_eq!(described["consumer"]["stream"], metadata["stream"]);
    assert_eq!(
        described["consumer"]["config"]["durable_name"],
        metadata["consumer"]
    );
    assert_eq!(described["driver"], metadata["consumer"]);
    assert_eq!(metadata["account"], "$G");
    // One pod per `concurrency` pending events: each new pod gets a full set of slots.
    assert_eq!(metadata["lagThreshold"], effective("CONVEYOR_CONCURRENCY"));
}

#[test]
fn probes_ports_and_scrape_annotations_use_the_metrics_address_of_the_settings() {
    let port = metrics_port();
    let deployment = deployment();
    let driver = container(&deployment, "containers", "driver");
    let ports = driver["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["name"], "metrics");
    assert_eq!(ports[0]["containerPort"], port);
    let probe_port = |probe: &str| &driver[probe]["httpGet"]["port"];
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(driver[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(*probe_port(probe), "metrics", "{probe}");
    }

    let service = manifest("service.yaml", "Service");
    let annotations = &service["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(service["spec"]["selector"], *selector);
    let pdb = manifest("pdb.yaml", "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *selector);

    // The image serves on the same port when run without the ConfigMap.
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains(&format!("\nEXPOSE {port}\n")),
        "EXPOSE {port}"
    );
    assert!(dockerfile.contains(&format!("ENV CONVEYOR_METRICS_ADDR=0.0.0.0:{port}\n")));
}

#[test]
fn every_variable_set_is_a_setting_of_the_binary_and_its_value_is_valid() {
    let settings = settings();
    let deployment = deployment();
    let mut names: Vec<String> = config_map().into_keys().collect();
    for container in containers(&deployment) {
        for env in container["env"].as_array().into_iter().flatten() {
            names.push(env["name"].as_str().expect("env name").to_owned());
        }
    }
    for name in names.iter().filter(|name| name.starts_with("CONVEYOR_")) {
        assert!(
            settings.contains_key(name),
            "{name} is not a setting of the binary"
        );
    }
    // The ConfigMap's values as the binary reads them: `describe` loads every setting and
    // builds the API client from the TLS files, so real ones stand in for the Secret's.
    let secret = tempfile::tempdir().expect("temp dir");
    let ca = pki::Ca::new("deploy test CA");
    let (cert, key) = ca
        .client("driver", pki::KeyKind::P256)
        .write(secret.path(), "client");
    let files = [
        ("CONVEYOR_TLS_CERT", cert),
        ("CONVEYOR_TLS_KEY", key),
        ("CONVEYOR_TLS_CA", ca.write(secret.path(), "ca")),
    ];
    let mut env = config_map();
    for (name, file) in files {
        assert!(env.contains_key(name), "{name}");
        env.insert(name.to_owned(), file.display().to_string());
    }
    let out = command(&binary())
        .envs(env)
        .arg("describe")
        .output()
        .expect("describe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_init_container_registers_the_consumer_with_the_drivers_settings() {
    let deployment = deployment();
    let register = container(&deployment, "initContainers", "register");
    let driver = container(&deployment, "containers", "driver");
    assert_eq!(register["args"], json!(["register"]));
    assert_eq!(driver["args"], json!(["run"]));
    assert_eq!(register["image"], driver["image"]);
    assert_eq!(register["envFrom"], driver["envFrom"]);
    assert_eq!(register["volumeMounts"], driver["volumeMounts"]);
    let help = command(&binary()).arg("--help").output().expect("--help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("\n  register  "), "{help}");
    let kustomization = manifest("kustomization.yaml", "Kustomization");
    assert_eq!(kustomization["images"][0]["name"], driver["image"]);
    assert_eq!(driver["image"], format!("conveyor-driver-{}", binary()));
}

#[test]
fn the_grace_period_covers_the_shutdown_timeout_and_the_hand_back() {
    let shutdown = humantime::parse_duration(&effective("CONVEYOR_SHUTDOWN_TIMEOUT"))
        .expect("CONVEYOR_SHUTDOWN_TIMEOUT is a duration");
    let grace = deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .map(Duration::from_secs)
        .expect("terminationGracePeriodSeconds");
    // The hand-back of unfinished events takes under 2 s (README, RELIABILITY.md); the rest is
    // room for the drain and a slow node.
    assert!(
        grace >= shutdown + Duration::from_secs(5),
        "grace {grace:?} leaves no room after the shutdown timeout {shutdown:?}"
    );
}

#[test]
fn the_memory_limit_has_room_for_the_log_buffer_and_the_tls_files_come_from_the_secret() {
    let deployment = deployment();
    let driver = container(&deployment, "containers", "driver");
    let resources = &driver["resources"];
    let limit = bytes(
        resources["limits"]["memory"]
            .as_str()
            .expect("memory limit"),
    );
    let request = bytes(
        resources["requests"]["memory"]
            .as_str()
            .expect("memory request"),
    );
    let buffer: u64 = effective("CONVEYOR_LOG_BUFFER").parse().expect("bytes");
    // Measured: 41 MiB peak with the 16 MiB buffer full (RELIABILITY.md), so about 25 MiB
    // besides the buffer.
    assert!(
        limit >= buffer + (32 << 20),
        "limit {limit} for a {buffer}-byte log buffer"
    );
    assert!(request <= limit && request >= 16 << 20);

    let spec = &deployment["spec"]["template"]["spec"];
    let secret_volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|volume| volume["secret"]["secretName"].is_string())
        .filter_map(|volume| volume["name"].as_str())
        .collect();
    let config = config_map();
    let tls: Vec<&String> = ["CONVEYOR_TLS_CERT", "CONVEYOR_TLS_KEY", "CONVEYOR_TLS_CA"]
        .iter()
        .filter_map(|name| config.get(*name))
        .collect();
    assert_eq!(tls.len(), 3, "mutual TLS is configured");
    for container in containers(&deployment) {
        let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
        for path in &tls {
            assert!(
                mounts.iter().any(|mount| secret_volumes
                    .iter()
                    .any(|volume| mount["name"] == *volume)
                    && path.starts_with(mount["mountPath"].as_str().unwrap_or("-"))),
                "{path} is not in a Secret mounted in {}",
                container["name"]
            );
        }
    }
}

#[test]
fn the_image_matches_the_workspace_and_the_pods_security_context() {
    let dockerfile = read("Dockerfile");
    let workspace = read("Cargo.toml");
    let rust_version = workspace
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .expect("workspace rust-version");
    assert!(
        dockerfile.contains(&format!(
            "\nARG RUST_VERSION={}\n",
            rust_version.trim_matches('"')
        )),
        "the image builds with rust-version {rust_version}"
    );
    assert!(dockerfile.contains("\nSTOPSIGNAL SIGTERM\n"));
    let user = deployment()["spec"]["template"]["spec"]["securityContext"]["runAsUser"].clone();
    assert!(
        dockerfile.contains(&format!("\nUSER {user}:{user}\n")),
        "USER {user}"
    );

    // Every manifest of the directory is applied.
    let kustomization = manifest("kustomization.yaml", "Kustomization");
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    assert_eq!(listed, files.iter().map(String::as_str).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_in_a_real_scrape_and_the_probes_answer() {
    let metrics = dashboard_metrics();
    assert!(metrics.len() >= 10, "{metrics:?}");
    let server = NatsServer::start();
    let conveyor = Conveyor::new(&server).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let url = server.url();
    // Every driver has the same metrics (the runtime's); `echo` can be made to fail.
    let _driver = DriverProcess::start_with(
        "echo",
        &[
            ("CONVEYOR_NATS_URL", &url),
            ("CONVEYOR_METRICS_ADDR", &addr),
        ],
        &[],
    );
    let base = format!("http://{addr}");
    let deployment = deployment();
    let driver = container(&deployment, "containers", "driver");
    let readiness = driver["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .expect("path");
    poll(&format!("{base}{readiness}"), "readiness", |status, _| {
        status == 200
    })
    .await;
    let liveness = driver["livenessProbe"]["httpGet"]["path"]
        .as_str()
        .expect("path");
    assert_eq!(
        get(&format!("{base}{liveness}")).await.map(|r| r.0),
        Some(200)
    );

    // One success and one failure, so that the histogram has observations.
    let mut tap = conveyor.tap().await;
    let ok = conveyor.create("echo-resource", "ok", json!({})).await;
    let bad = conveyor
        .create("echo-resource", "bad", json!({"fail": true}))
        .await;
    tap.result(&ok).await;
    tap.result(&bad).await;

    let path = manifest("service.yaml", "Service")["metadata"]["annotations"]["prometheus.io/path"]
        .as_str()
        .expect("prometheus.io/path")
        .to_owned();
    let scrape = poll(
        &format!("{base}{path}"),
        "both reconciles counted",
        |status, body| {
            status == 200
                && body.contains(
                    r#"conveyor_driver_reconcile_duration_seconds_count{driver="echo"} 2"#,
                )
        },
    )
    .await;
    let samples: BTreeSet<&str> = scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = metrics
        .iter()
        .filter(|name| !samples.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the scrape: {missing:?}\n{scrape}"
    );
    assert!(
        scrape.contains(r#"driver="echo""#),
        "the dashboard filters on `driver`"
    );
}
