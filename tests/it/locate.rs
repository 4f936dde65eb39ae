//! Location from topology, end to end (issue #9 proof): the ipmi_sim server (tests/peers/ipmi)
//! is polled over RMCP+ for its identity and BMC MAC; a top-of-rack switch, served by a private
//! snmpsim from our own recording (`tests/fixtures/snmpsim/gt-tor-switch.snmprec`), has learned
//! that MAC on port `Et12` in its Q-BRIDGE forwarding database. With the site map's `[[port]]`
//! entry for that switch port, the collector places the server in the port's rack and U — above
//! the server's own asset-tag text (`DC1-R07-U12`), which is weaker evidence.

use std::time::Duration;

use groundtruth_agent::driver::{Limits, PollCx, poll_all};
use groundtruth_agent::target::Target;
use groundtruth_collector::locate::{Located, locate};
use groundtruth_collector::reconcile::{Rules, evidence_for};
use groundtruth_collector::sitemap::SiteMap;
use groundtruth_tests::{Peers, TestDb};

groundtruth_tests::on_both_stores!(ipmi_servers_bmc_mac_in_a_switch_fdb_plus_the_site_map_port_places_it);

async fn ipmi_servers_bmc_mac_in_a_switch_fdb_plus_the_site_map_port_places_it(t: TestDb) {
    let p = Peers::load();
    let Some([ipmi, user, pass]) =
        p.require("locate_by_fdb", ["GT_IPMI_ADDR", "GT_IPMI_USER", "GT_IPMI_PASS"])
    else {
        return;
    };
    let Some(sim) = groundtruth_tests::PrivateSnmpsim::start() else {
        let msg = "SKIP: locate_by_fdb: snmpsim venv not installed (tests/peers/snmpsim/start.sh)";
        assert!(std::env::var("GT_REQUIRE_PEERS").as_deref() != Ok("1"), "{msg}");
        eprintln!("{msg}");
        return;
    };
    let cx = PollCx {
        limits: Limits {
            request_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        ..Default::default()
    };
    let pass: String = url::form_urlencoded::byte_serialize(pass.as_bytes()).collect();
    let (server, err) = poll_all(
        &Target::parse(&format!("ipmi://{user}:{pass}@{ipmi}")).unwrap(),
        &cx,
    )
    .await;
    assert!(err.is_none(), "ipmi_sim: {err:?}");
    let id = server[0].identity.clone().unwrap();
    assert!(
        id.macs.iter().any(|m| m.address == "02:47:54:00:00:01"),
        "the fixture's FDB entry expects the ipmi_sim BMC MAC 02:47:54:00:00:01: {:?}",
        id.macs
    );
    // snmpsim needs a moment to index the recording on its first request.
    let switch_target = Target::parse(&format!("snmp://gt-tor-switch@{}", sim.addr)).unwrap();
    let mut switch = Vec::new();
    for _ in 0..20 {
        let (r, err) = poll_all(&switch_target, &cx).await;
        if err.is_none() {
            switch = r;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(switch.len(), 1, "the private snmpsim did not answer");
    let sw = &switch[0];
    assert_eq!(sw.identity.as_ref().unwrap().serial_number, "GTTOR00001");
    assert_eq!(
        sw.topology.len(),
        1,
        "one learned MAC (the switch's own, status self, is skipped): {:?}",
        sw.topology
    );

    let store = t.store().await.unwrap();
    groundtruth_tests::commit_reports(
        &store,
        "locate-agent",
        "PLC",
        server.into_iter().chain(switch).collect(),
    )
    .await;
    let rules = Rules {
        site_map: SiteMap::parse(
            "[[rack]]\nsite = \"PLC\"\nroom = \"H2\"\nname = \"R12\"\n\n\
             [[port]]\nswitch = \"GTTOR00001\"\nport = \"Et12\"\nsite = \"PLC\"\nrack = \"R12\"\nu = 7\n",
            "site-map.toml",
        )
        .unwrap(),
        ..Rules::builtin("PLC")
    };
    let devices = store.devices().await.unwrap();
    let key = format!("serial:{}", id.serial_number);
    let d = devices.iter().find(|d| d.device_key == key).unwrap_or_else(|| {
        panic!(
            "{key} not in {:?}",
            devices.iter().map(|d| &d.device_key).collect::<Vec<_>>()
        )
    });
    let evidence = evidence_for(d, &rules);
    eprintln!("locate: {key} evidence {evidence:?}");
    match locate(&evidence, &d.asset_tag, &rules.patterns) {
        Located::At(e) => {
            assert_eq!(e.source, "LOCATION_SOURCE_TOPOLOGY", "{e:?}");
            assert_eq!(
                (e.site.as_str(), e.room.as_str(), e.rack.as_str(), e.u_position),
                ("PLC", "H2", "R12", Some(7))
            );
            assert!(e.via.contains("GTTOR00001") && e.via.contains("Et12"), "{e:?}");
        }
        other => panic!("not placed by the FDB: {other:?}"),
    }
    // Without the site map's port entry the same FDB entry places nothing, and the server
    // falls back to its asset-tag text (rack R07, U12).
    let bare = Rules::builtin("PLC");
    match locate(&evidence_for(d, &bare), &d.asset_tag, &bare.patterns) {
        Located::At(e) => assert_eq!((e.rack.as_str(), e.u_position), ("R07", Some(12)), "{e:?}"),
        other => panic!("{other:?}"),
    }
}
