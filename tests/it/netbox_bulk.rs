//! Bulk creates against the real NetBox: one bad object in a bulk request fails alone (NetBox
//! refuses the whole request; the sync splits it until the bad item stands alone), and rooms
//! become NetBox locations under the site. Included from `netbox.rs`.

use super::*;

#[tokio::test]
async fn bulk_create_isolates_the_bad_object_and_places_racks_in_the_room() {
    let Some(p) = peer("netbox_bulk") else { return };
    let t = tag();
    let site = format!("GT-Bulk-{t}");
    let slug = format!("gt-bulk-{}", t.to_lowercase());
    let room = format!("Hall {t}");
    let s = p
        .post(
            "api/dcim/sites/",
            &json!({"name": site, "slug": slug, "status": "active"}),
        )
        .await;
    let site_id = s["id"].as_u64().unwrap();
    // An operator's rack without a room, and one in another room.
    let br0 = p
        .post(
            "api/dcim/racks/",
            &json!({"name": "BR0", "site": site_id, "u_height": 42}),
        )
        .await["id"]
        .as_u64()
        .unwrap();
    let other = p
        .post(
            "api/dcim/locations/",
            &json!({"name": format!("Other {t}"), "slug": format!("other-{}", t.to_lowercase()), "site": site_id}),
        )
        .await["id"]
        .as_u64()
        .unwrap();
    let bx = p
        .post(
            "api/dcim/racks/",
            &json!({"name": "BX", "site": site_id, "location": other, "u_height": 42}),
        )
        .await["id"]
        .as_u64()
        .unwrap();

    let n = 60u32;
    let input: Vec<DesiredDevice> = (0..n)
        .map(|i| {
            let mut d = desired(&format!("{t}{i:03}"), &site, i % 30 + 1, &random_mac());
            let l = d.location.as_mut().unwrap();
            l.room = Some(room.clone());
            l.rack = if i == n - 1 {
                "BX".into()
            } else {
                format!("BR{}", i / 30)
            };
            d
        })
        .collect();
    let mut input = input;
    // NetBox limits serials and asset tags to 50 characters: a real 400 for one object each.
    input[17].serial = format!("GTBULKLONG{}", "0123456789ABCDEFGHJK".repeat(3));
    input[41].asset_tag = Some(format!("AT-{}", "Y".repeat(60)));
    let bad = input[17].key.clone();

    let nb = p.netbox();
    let r = nb.sync(&input, false).await.unwrap();
    eprintln!("bulk: {} writes, {} requests", r.writes, r.requests);
    assert_eq!(r.failures.len(), 1, "{}", summary(&r));
    assert_eq!(r.failures[0].0, bad, "{}", summary(&r));
    assert!(r.failures[0].1.contains("serial"), "{}", summary(&r));
    let kinds: Vec<(&str, &str)> = r
        .exceptions
        .iter()
        .map(|e| (e.device_key.as_str(), e.kind.as_str()))
        .collect();
    assert!(
        kinds.contains(&(input[41].key.as_str(), "asset_tag_in_use")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(input[59].key.as_str(), "rack_location_differs")),
        "{kinds:?}"
    );
    // One request per object would be at least 4 × 59 writes.
    assert!(r.writes < 60, "{}", summary(&r));

    let devices = p
        .list(&format!("api/dcim/devices/?site_id={site_id}&limit=1000"))
        .await;
    assert_eq!(devices.len(), 59);
    assert!(devices.iter().all(|d| d["serial"] != input[17].serial.as_str()));
    let loc = p
        .list(&format!(
            "api/dcim/locations/?site_id={site_id}&name={}",
            room.replace(' ', "%20")
        ))
        .await;
    assert_eq!(loc.len(), 1, "room {room} as a NetBox location");
    let room_id = loc[0]["id"].as_u64().unwrap();
    assert_eq!(
        p.get(&format!("api/dcim/racks/{br0}/")).await["location"]["id"],
        room_id
    );
    let br1 = p
        .list(&format!("api/dcim/racks/?site_id={site_id}&name=BR1"))
        .await;
    assert_eq!(br1.len(), 1);
    assert_eq!(br1[0]["location"]["id"], room_id);
    assert_eq!(
        p.get(&format!("api/dcim/racks/{bx}/")).await["location"]["id"],
        other
    );
    for d in &devices {
        let want = if d["rack"]["id"] == bx { other } else { room_id };
        assert_eq!(d["location"]["id"], want, "{}", d["name"]);
        let ifaces = p
            .list(&format!("api/dcim/interfaces/?device_id={}", d["id"]))
            .await;
        assert_eq!(ifaces.len(), 1, "{}", d["name"]);
        assert!(ifaces[0]["primary_mac_address"].is_object(), "{}", d["name"]);
        if d["serial"] == input[41].serial.as_str() {
            assert!(d["asset_tag"].is_null(), "{}", d["asset_tag"]);
        }
    }

    // Rerun: only the two refused writes are tried again.
    let again = nb.sync(&input, false).await.unwrap();
    assert_eq!(again.failures.len(), 1, "{}", summary(&again));
    assert!(again.changes.is_empty(), "{}", summary(&again));
    assert!(again.writes <= 2, "{}", summary(&again));
}
