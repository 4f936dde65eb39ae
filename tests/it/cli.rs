//! The one-shot CLI contract scripts rely on: `groundtruth-agent poll <target> --json` prints
//! the canonical JSON of a `DeviceReport` on stdout and exits 0; on failure it prints one line on
//! stderr and exits non-zero (1 device/network failure, 2 usage error).

use std::process::Command;

use groundtruth_tests::Peers;

fn agent() -> Option<std::path::PathBuf> {
    groundtruth_tests::require_binary("cli", "groundtruth-agent")
}

#[test]
fn poll_json_redfish_prints_canonical_json() {
    let Some([url, ca]) = Peers::load().require("cli_poll_json", ["GT_REDFISH_URL", "GT_REDFISH_CA"]) else {
        return;
    };
    let Some(bin) = agent() else { return };
    let target = url.replace("https://", "redfish://");
    let out = Command::new(bin)
        .args(["poll", &target, "--json", "--ca-file", &ca])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["identity"]["serialNumber"], "GTSRV0000001");
    assert_eq!(v["identity"]["protocol"], "PROTOCOL_REDFISH");
    assert_eq!(v["locations"][0]["uPosition"], 12);
    assert_eq!(v["status"]["outcome"], "POLL_OUTCOME_OK");
    // The canonical mapping parses back into the message.
    let back: groundtruth_proto::v1::DeviceReport =
        groundtruth_proto::json::from_str(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
    assert_eq!(back.identity.unwrap().model, "GT-R1000");
}

/// A Redfish service holding several devices (an enclosure and its four blades) prints a JSON
/// array, one report per device.
#[test]
fn poll_json_redfish_enclosure_prints_an_array_of_reports() {
    let Some([base, names]) = Peers::load().require(
        "cli_poll_json_array",
        ["GT_REDFISH_SHARED_BASE_PORT", "GT_REDFISH_SHARED_MOCKUPS"],
    ) else {
        return;
    };
    let Some(bin) = agent() else { return };
    let i = names.split(',').position(|n| n == "dmtf-public-bladed").unwrap();
    let port = base.parse::<usize>().unwrap() + i;
    let out = Command::new(bin)
        .args([
            "poll",
            &format!("redfish://127.0.0.1:{port}?insecure"),
            "--json",
            "--log",
            "off",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = v.as_array().expect("an array for several devices");
    assert_eq!(reports.len(), 5);
    assert_eq!(reports[0]["identity"]["serialNumber"], "528QB1654R1");
    assert_eq!(reports[0]["identity"]["deviceClass"], "DEVICE_CLASS_ENCLOSURE");
    assert_eq!(
        reports[1]["identity"]["attributes"]["enclosure_serial"],
        "528QB1654R1"
    );
    for r in reports {
        let back: groundtruth_proto::v1::DeviceReport =
            groundtruth_proto::json::from_str(&r.to_string()).unwrap();
        assert!(back.identity.unwrap().endpoint_key.contains('#'));
    }
}

#[test]
fn poll_snmp_with_community_from_env() {
    let Some([addr, community]) =
        Peers::load().require("cli_poll_snmp", ["GT_SNMPD_ADDR", "GT_SNMPD_COMMUNITY"])
    else {
        return;
    };
    let Some(bin) = agent() else { return };
    let out = Command::new(bin)
        .args([
            "poll",
            &format!("snmp://{addr}"),
            "--json",
            "--password-env",
            "GT_TEST_COMMUNITY",
        ])
        .env("GT_TEST_COMMUNITY", &community)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["identity"]["protocol"], "PROTOCOL_SNMP");
    assert!(v["identity"]["macs"].as_array().is_some_and(|m| !m.is_empty()));
}

#[test]
fn unreachable_device_exits_1_with_one_line_naming_it() {
    let Some(bin) = agent() else { return };
    // A closed port on loopback: connection refused at once.
    let port = groundtruth_tests::free_port();
    let out = Command::new(bin)
        .args([
            "poll",
            &format!("redfish+http://u:s3cretpw@127.0.0.1:{port}"),
            "--json",
            "--log",
            "off",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&format!("redfish://127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("s3cretpw"), "secret leaked: {err}");
}

#[test]
fn bad_target_is_a_usage_error() {
    let Some(bin) = agent() else { return };
    let out = Command::new(bin)
        .args(["poll", "gopher://x", "--log", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scheme 'gopher'"));
}

#[test]
fn poll_json_ipmi_prints_identity_readings_and_keeps_the_password_out() {
    let Some([addr, user, pass]) =
        Peers::load().require("cli_poll_ipmi", ["GT_IPMI_ADDR", "GT_IPMI_USER", "GT_IPMI_PASS"])
    else {
        return;
    };
    let Some(bin) = agent() else { return };
    let out = Command::new(bin)
        .args([
            "poll",
            &format!("ipmi://{user}@{addr}"),
            "--json",
            "--password-env",
            "GT_TEST_IPMI_PASS",
        ])
        .env("GT_TEST_IPMI_PASS", &pass)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(&pass), "password in output");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["identity"]["protocol"], "PROTOCOL_IPMI");
    assert_eq!(v["identity"]["serialNumber"], "GTPRD000001");
    assert_eq!(v["identity"]["assetTag"], "DC1-R07-U12");
    assert_eq!(v["identity"]["macs"][0]["address"], "02:47:54:00:00:01");
    assert_eq!(v["status"]["outcome"], "POLL_OUTCOME_OK");
    let metrics: Vec<&str> = v["readings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["metric"].as_str())
        .collect();
    for m in ["temperature", "fan_speed", "voltage", "power", "status"] {
        assert!(metrics.contains(&m), "{m} missing: {metrics:?}");
    }
}

#[test]
fn discover_finds_and_identifies_the_loopback_peers() {
    let Some([snmpd, community, redfish, sparse]) = Peers::load().require(
        "cli_discover",
        [
            "GT_SNMPD_ADDR",
            "GT_SNMPD_COMMUNITY",
            "GT_REDFISH_URL",
            "GT_REDFISH_SPARSE_URL",
        ],
    ) else {
        return;
    };
    let Some(bin) = agent() else { return };
    let port = |a: &str| a.rsplit(':').next().unwrap().trim_end_matches('/').to_owned();
    let dir = tempfile::tempdir().unwrap();
    let communities = dir.path().join("communities");
    // A wrong community first: discovery must move on to the next one.
    std::fs::write(
        &communities,
        format!("# tried in order\nwrong-one\n{community}\n"),
    )
    .unwrap();
    let closed = groundtruth_tests::free_port();
    let out = Command::new(bin)
        .args([
            "discover",
            "127.0.0.1",
            "--snmp-ports",
            &port(&snmpd),
            "--community-file",
            communities.to_str().unwrap(),
            "--redfish-ports",
            &format!("{},{},{closed}", port(&redfish), port(&sparse)),
            "--insecure",
            "--timeout",
            "500ms",
            "--json",
            "--log",
            "off",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let endpoints: Vec<&str> = found.iter().map(|f| f["endpoint"].as_str().unwrap()).collect();
    assert_eq!(found.len(), 3, "{endpoints:?}");
    let by = |e: String| found.iter().find(|f| f["endpoint"] == e.as_str()).unwrap();
    let server = by(format!("redfish://127.0.0.1:{}", port(&redfish)));
    assert_eq!(server["identity"]["serialNumber"], "GTSRV0000001");
    let snmp = by(format!("snmp://{snmpd}"));
    assert_eq!(snmp["credential"], "community #2");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&community),
        "community leaked into the output"
    );
}

/// `poll … | head -1`: a closed stdout ends the program quietly, not with a panic.
#[test]
fn closed_stdout_pipe_is_not_a_panic() {
    let Some([url]) = Peers::load().require("cli_closed_pipe", ["GT_REDFISH_HTTP_URL"]) else {
        return;
    };
    let Some(bin) = agent() else { return };
    let mut child = Command::new(bin)
        .args(["poll", &url.replace("http://", "redfish+http://"), "--log", "off"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before the first line is written
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{:?} {err}", out.status);
}

/// `groundtruth-collector plan`, `apply` and its alias `sync` against the NetBox peer with an
/// empty store: they run, `plan` says it is a dry run, `exceptions` lists (no) dead letters.
#[test]
fn collector_plan_apply_and_sync_alias_run_against_netbox() {
    let Some(bin) = groundtruth_tests::require_binary("cli_collector_plan", "groundtruth-collector") else {
        return;
    };
    let peers = Peers::load();
    let Some([url, token]) = peers.require("cli_collector_plan", ["GT_NETBOX_URL", "GT_NETBOX_TOKEN"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("collector.toml");
    std::fs::write(
        &cfg,
        format!(
            "[collector]\ndatabase = {:?}\ndefault_site = \"DC1\"\nlisten_http = \"off\"\n\n[netbox]\nurl = {url:?}\ntoken = {{ env = \"GT_CLI_NB_TOKEN\" }}\nrate_limit = 50\n\n[netbox.ownership]\nasset_tag = \"never\"\npower_deadband_percent = 10\n",
            dir.path().join("state.db")
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&bin)
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .args(["--log", "off"])
            .env("GT_CLI_NB_TOKEN", &token)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let plan = run(&["plan"]);
    assert!(plan.contains("planned (dry run)"), "{plan}");
    let apply = run(&["apply"]);
    assert!(
        apply.contains("applied") && apply.contains("HTTP request(s)"),
        "{apply}"
    );
    let sync = run(&["sync", "--dry-run"]);
    assert!(sync.contains("planned (dry run)"), "{sync}");
    let exc = run(&["exceptions"]);
    assert!(!exc.contains("dead_letter"), "{exc}");
}

/// Protected mode (issue #19), through the real binary: `check-config` refuses each listener
/// that is reachable from the network without authentication, naming the key and the fix (exit
/// 2), accepts it with `allow_unauthenticated = true` and says so, and `serve` refuses to start
/// on such a config before it binds anything.
#[test]
fn check_config_and_serve_refuse_unauthenticated_network_listeners() {
    let Some(bin) = groundtruth_tests::require_binary("cli_protected_mode", "groundtruth-collector") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let run = |cmd: &str, body: &str| {
        let cfg = dir.path().join("collector.toml");
        std::fs::write(&cfg, format!("[collector]\ndatabase = {db:?}\n{body}")).unwrap();
        // `check-config FILE`, `serve --config FILE`.
        let mut c = Command::new(&bin);
        c.arg(cmd);
        if cmd == "serve" {
            c.arg("--config");
        }
        c.arg(&cfg).output().unwrap()
    };
    for (body, key, fix) in [
        (
            "listen_grpc = \"0.0.0.0:50051\"\n",
            "collector.listen_grpc",
            "client_ca",
        ),
        (
            "listen_http = \"0.0.0.0:9470\"\n",
            "collector.listen_http",
            "api_token",
        ),
    ] {
        for cmd in ["check-config", "serve"] {
            let out = run(cmd, body);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {body}: {err}");
            assert!(err.contains(key) && err.contains(fix), "{cmd} {body}: {err}");
        }
    }
    assert!(!db.exists(), "serve refused before opening its store");
    let out = run(
        "check-config",
        "listen_grpc = \"0.0.0.0:50051\"\nallow_unauthenticated = true\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning:") && err.contains("collector.listen_grpc"),
        "{err}"
    );
}
