//! Page rendering for the web UI: pure functions from store rows to HTML, unit-tested without a
//! server. Every piece of device-reported text (serials, models, hostnames, sysLocation, raw
//! evidence…) is hostile input and goes through [`esc`]; every path segment built from it goes
//! through [`seg`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::locate::{Located, locate};
use crate::reconcile::Rules;
use crate::store::{DeviceRow, EvidenceRow, ExceptionRow, LatestReading, SyncRow};

/// Escapes text for HTML element content and quoted attribute values.
#[must_use]
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one URL path segment (everything but RFC 3986 unreserved characters).
#[must_use]
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The URL path segment standing for "no site known" (a real site name is never empty).
pub const NO_SITE: &str = "~";

/// Link to a device page.
#[must_use]
pub fn device_href(key: &str) -> String {
    format!("/devices/{}", seg(key))
}

/// Link to a rack elevation.
#[must_use]
pub fn rack_href(site: &str, rack: &str) -> String {
    let site = if site.is_empty() { NO_SITE } else { site };
    format!("/racks/{}/{}", seg(site), seg(rack))
}

/// Power colour bands: (upper bound exclusive in W, colour, legend text).
pub const BANDS: &[(f64, &str, &str)] = &[
    (150.0, "#2e7d32", "under 150 W"),
    (300.0, "#7cb342", "150 – 300 W"),
    (500.0, "#f9a825", "300 – 500 W"),
    (800.0, "#ef6c00", "500 – 800 W"),
    (f64::INFINITY, "#c62828", "800 W and more"),
];

/// Colour of a device without a power reading.
pub const NO_READING: &str = "#9e9e9e";

/// The fill colour for a measured power.
#[must_use]
pub fn power_colour(watts: Option<f64>) -> &'static str {
    match watts {
        Some(w) if w.is_finite() && w >= 0.0 => BANDS
            .iter()
            .find(|(max, _, _)| w < *max)
            .map_or(NO_READING, |b| b.1),
        _ => NO_READING,
    }
}

/// Watts for display: whole watts.
#[must_use]
pub fn watts(w: Option<f64>) -> String {
    w.map_or_else(|| "no power reading".into(), |w| format!("{w:.0} W"))
}

/// A device placed (or not) by the location engine, as the UI shows it.
#[derive(Debug, Clone)]
pub struct Placed<'a> {
    pub device: &'a DeviceRow,
    pub site: String,
    pub room: String,
    pub rack: String,
    /// Lowest U the device occupies.
    pub u: Option<u32>,
    /// Height in U (reported, else 1).
    pub height: u32,
    /// Device-level power.
    pub watts: Option<f64>,
    /// Inlet readings (a device with any is shown as a PDU).
    pub inlets: Vec<&'a LatestReading>,
}

/// A rack with what the store places in it.
#[derive(Debug, Clone)]
pub struct RackView<'a> {
    pub site: String,
    pub room: String,
    pub name: String,
    pub height: u32,
    /// Whether the site map lists the rack (else only devices name it).
    pub in_site_map: bool,
    pub devices: Vec<Placed<'a>>,
}

impl RackView<'_> {
    /// Sum of device-level power of the rack's devices, PDUs excluded (their inlets carry the
    /// same load again).
    #[must_use]
    pub fn total_watts(&self) -> f64 {
        self.devices
            .iter()
            .filter(|p| p.inlets.is_empty())
            .filter_map(|p| p.watts)
            // Not `.sum()`: the empty f64 sum is -0.0, which prints as "-0 W".
            .fold(0.0, |a, w| a + w)
    }
}

/// Everything the UI knows about where devices are.
#[derive(Debug, Clone, Default)]
pub struct Inventory<'a> {
    pub racks: Vec<RackView<'a>>,
    /// Devices without a decided location, with the reason.
    pub unlocated: Vec<(&'a DeviceRow, String)>,
}

fn norm(s: &str) -> String {
    s.trim().to_ascii_uppercase()
}

/// A device's evidence as the location engine sees it: stored evidence plus the site map's.
#[must_use]
pub fn evidence(d: &DeviceRow, rules: &Rules) -> Vec<EvidenceRow> {
    let mut e = d.locations.clone();
    e.extend(rules.site_map.evidence_for_serial(&d.serial));
    e
}

/// The engine's decision and the site it implies (evidence, else agent, else default site).
#[must_use]
pub fn decide(d: &DeviceRow, rules: &Rules) -> (Located, String) {
    let located = locate(&evidence(d, rules), &d.asset_tag, &rules.patterns);
    let site = match &located {
        Located::At(e) => [
            e.site.as_str(),
            d.agent_site.as_str(),
            rules.default_site.as_str(),
        ]
        .into_iter()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_owned(),
        _ => String::new(),
    };
    (located, site)
}

/// Places every device and lists every rack (the site map's and the ones devices name).
#[must_use]
pub fn inventory<'a>(
    devices: &'a [DeviceRow],
    readings: &'a [LatestReading],
    heights: &HashMap<String, u32>,
    rules: &Rules,
) -> Inventory<'a> {
    let mut racks: Vec<RackView<'a>> = rules
        .site_map
        .racks()
        .iter()
        .map(|r| RackView {
            site: r.site.clone(),
            room: r.room.clone(),
            name: r.name.clone(),
            height: if r.height == 0 { 42 } else { r.height },
            in_site_map: true,
            devices: Vec::new(),
        })
        .collect();
    let mut unlocated = Vec::new();
    for d in devices {
        let (located, site) = decide(d, rules);
        let ev = match located {
            Located::At(ev) => ev,
            Located::Unknown => {
                unlocated.push((d, "no location evidence names a rack".to_owned()));
                continue;
            }
            Located::Conflict { detail } => {
                unlocated.push((d, format!("location conflict: {detail}")));
                continue;
            }
        };
        let idx = match racks
            .iter()
            .position(|r| norm(&r.site) == norm(&site) && norm(&r.name) == norm(&ev.rack))
        {
            Some(i) => i,
            None => {
                racks.push(RackView {
                    site: site.clone(),
                    room: ev.room.clone(),
                    name: ev.rack.clone(),
                    height: 42,
                    in_site_map: false,
                    devices: Vec::new(),
                });
                racks.len() - 1
            }
        };
        let rack = &mut racks[idx];
        if rack.room.is_empty() && !ev.room.is_empty() {
            rack.room.clone_from(&ev.room);
        }
        let inlets = readings
            .iter()
            // Redfish rack PDUs report their inlet as per-line (PHASE) readings, SNMP PDUs per INLET.
            .filter(|r| {
                r.device_key == d.device_key
                    && matches!(
                        r.component_kind.as_str(),
                        "COMPONENT_KIND_INLET" | "COMPONENT_KIND_PHASE"
                    )
            })
            .collect();
        rack.devices.push(Placed {
            device: d,
            site,
            room: rack.room.clone(),
            rack: rack.name.clone(),
            u: ev.u_position,
            height: heights.get(&d.device_key).copied().unwrap_or(1).max(1),
            watts: d.power_watts,
            inlets,
        });
    }
    racks.sort_by(|a, b| {
        (norm(&a.site), norm(&a.room), norm(&a.name)).cmp(&(norm(&b.site), norm(&b.room), norm(&b.name)))
    });
    Inventory { racks, unlocated }
}

/// The HTML page frame. `live` pages refresh their `<main>` when the collector commits a batch.
#[must_use]
pub fn page(title: &str, body: &str, live: bool, logged_in: bool) -> String {
    let logout = if logged_in {
        r#"<form method="post" action="/logout" class="inline"><button type="submit">Log out</button></form>"#
    } else {
        ""
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · groundtruth</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head><body>
<header><a href="/" class="brand">groundtruth</a> <nav><a href="/">Racks</a> <a href="/exceptions">Exceptions</a> <a href="/health">Health</a></nav> <span id="live-status" class="muted"></span> {logout}</header>
<main id="live" data-live="{live}">
{body}
</main>
</body></html>
"#,
        title = esc(title),
        live = u8::from(live),
    )
}

/// `/`: sites → rooms → racks, and the devices no rack could be decided for.
#[must_use]
pub fn index(inv: &Inventory<'_>) -> String {
    let mut b = String::from("<h1>Sites</h1>\n");
    if inv.racks.is_empty() {
        b.push_str(
            "<p class=\"muted\">No racks yet: the site map lists none and no device has been located.</p>\n",
        );
    }
    let mut tree: BTreeMap<String, BTreeMap<String, Vec<&RackView<'_>>>> = BTreeMap::new();
    for r in &inv.racks {
        tree.entry(r.site.clone())
            .or_default()
            .entry(r.room.clone())
            .or_default()
            .push(r);
    }
    for (site, rooms) in &tree {
        let site_name = if site.is_empty() { "(no site)" } else { site };
        let _ = writeln!(b, "<section class=\"site\"><h2>Site {}</h2>", esc(site_name));
        for (room, racks) in rooms {
            let room_name = if room.is_empty() { "(no room)" } else { room };
            let _ = writeln!(
                b,
                "<h3>Room {}</h3>\n<table class=\"racks\"><thead><tr><th>Rack</th><th>Height</th><th>Devices</th><th>Power</th></tr></thead><tbody>",
                esc(room_name)
            );
            for r in racks {
                let _ = writeln!(
                    b,
                    "<tr><td><a href=\"{}\">{}</a>{}</td><td>{}U</td><td>{}</td><td>{:.0} W</td></tr>",
                    esc(&rack_href(&r.site, &r.name)),
                    esc(&r.name),
                    if r.in_site_map {
                        ""
                    } else {
                        " <span class=\"muted\">(not in the site map)</span>"
                    },
                    r.height,
                    r.devices.len(),
                    r.total_watts()
                );
            }
            b.push_str("</tbody></table>\n");
        }
        b.push_str("</section>\n");
    }
    if !inv.unlocated.is_empty() {
        b.push_str("<h2>Devices without a location</h2>\n<ul class=\"unlocated\">\n");
        for (d, why) in &inv.unlocated {
            let _ = writeln!(
                b,
                "<li><a href=\"{}\">{}</a> {} — {}</li>",
                esc(&device_href(&d.device_key)),
                esc(&label(d)),
                esc(&d.model),
                esc(why)
            );
        }
        b.push_str("</ul>\n");
    }
    b
}

/// The name a device is shown by: hostname, else serial, else its key.
#[must_use]
pub fn label(d: &DeviceRow) -> String {
    [d.hostname.as_str(), d.serial.as_str(), d.device_key.as_str()]
        .into_iter()
        .find(|s| !s.trim().is_empty())
        .unwrap_or_default()
        .to_owned()
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Pixel height of one U in the elevation.
pub const U_PX: u32 = 24;
const TOP: u32 = 8;
const LEFT: u32 = 44;
const WIDTH: u32 = 560;

/// SVG y of the top edge of U `u` in a rack of `height` U (U1 at the bottom).
#[must_use]
pub fn u_top(height: u32, u: u32) -> u32 {
    TOP + height.saturating_sub(u) * U_PX
}

/// Whether a placed device lies within U1..=height.
fn fits(p: &Placed<'_>, height: u32) -> bool {
    p.u.is_some_and(|u| u >= 1 && u + p.height - 1 <= height)
}

/// The rack elevation as inline SVG: U1..height, each device over its U range, coloured by power.
#[must_use]
pub fn elevation(r: &RackView<'_>) -> String {
    let h = r.height;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg class=\"elevation\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"Rack {name} elevation, {h}U\">",
        w = WIDTH,
        ht = TOP * 2 + h * U_PX,
        name = esc(&r.name)
    );
    for u in 1..=h {
        let y = u_top(h, u);
        let _ = writeln!(
            s,
            "<g class=\"slot\" data-u=\"{u}\"><rect x=\"{LEFT}\" y=\"{y}\" width=\"{}\" height=\"{U_PX}\" class=\"slot\"/><text x=\"{}\" y=\"{}\" class=\"ulabel\" text-anchor=\"end\">U{u}</text></g>",
            WIDTH - LEFT - 4,
            LEFT - 6,
            y + U_PX / 2 + 4
        );
    }
    // Devices that do not fit (U0, or reaching above the top) are listed beside the drawing.
    let mut placed: Vec<&Placed<'_>> = r.devices.iter().filter(|p| fits(p, h)).collect();
    placed.sort_by_key(|p| p.u);
    for p in placed {
        let Some(u) = p.u else { continue };
        let top_u = u + p.height - 1;
        let y = u_top(h, top_u);
        let rows = p.height;
        let d = p.device;
        let text = format!(
            "U{u}{} {} · {} · {}",
            if p.height > 1 {
                format!("–{top_u}")
            } else {
                String::new()
            },
            truncate(&label(d), 28),
            truncate(if d.model.is_empty() { "model ?" } else { &d.model }, 28),
            watts(p.watts)
        );
        let _ = writeln!(
            s,
            "<a href=\"{href}\"><g class=\"device\" data-key=\"{key}\" data-serial=\"{serial}\" data-u=\"{u}\" data-u-height=\"{height}\" data-watts=\"{w}\"><title>{title}</title><rect x=\"{x}\" y=\"{y}\" width=\"{dw}\" height=\"{dh}\" rx=\"3\" fill=\"{fill}\" class=\"dev\"/><text x=\"{tx}\" y=\"{ty}\" class=\"dlabel\">{text}</text></g></a>",
            href = esc(&device_href(&d.device_key)),
            key = esc(&d.device_key),
            serial = esc(&d.serial),
            height = p.height,
            w = p.watts.map(|w| format!("{w:.0}")).unwrap_or_default(),
            title = esc(&format!(
                "{} {} {} — {}",
                d.vendor,
                d.model,
                d.serial,
                watts(p.watts)
            )),
            x = LEFT + 2,
            y = y + 1,
            dw = WIDTH - LEFT - 8,
            dh = rows * U_PX - 2,
            fill = power_colour(p.watts),
            tx = LEFT + 10,
            ty = y + U_PX / 2 + 5,
            text = esc(&text),
        );
    }
    s.push_str("</svg>\n");
    s
}

fn legend() -> String {
    let mut s = String::from("<ul class=\"legend\">");
    for (_, colour, text) in BANDS {
        let _ = write!(
            s,
            "<li><span class=\"swatch\" style=\"background:{colour}\"></span>{}</li>",
            esc(text)
        );
    }
    let _ = write!(
        s,
        "<li><span class=\"swatch\" style=\"background:{NO_READING}\"></span>no power reading</li></ul>"
    );
    s
}

/// `/racks/<site>/<rack>`.
#[must_use]
pub fn rack_page(r: &RackView<'_>) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>Rack {}</h1>\n<p class=\"crumbs\">Site {} · Room {} · {}U{}</p>",
        esc(&r.name),
        esc(if r.site.is_empty() { "(none)" } else { &r.site }),
        esc(if r.room.is_empty() { "(none)" } else { &r.room }),
        r.height,
        if r.in_site_map {
            ""
        } else {
            " · not in the site map (height assumed)"
        }
    );
    let _ = writeln!(
        b,
        "<p class=\"total\">Rack total: <strong id=\"rack-total\">{:.0} W</strong> <span class=\"muted\">(sum of device power, PDUs excluded; {} device(s))</span></p>",
        r.total_watts(),
        r.devices.len()
    );
    b.push_str("<div class=\"rackwrap\">\n");
    b.push_str(&elevation(r));
    b.push_str("<div class=\"side\">\n");
    b.push_str(&legend());
    let pdus: Vec<&Placed<'_>> = r.devices.iter().filter(|p| !p.inlets.is_empty()).collect();
    if !pdus.is_empty() {
        b.push_str("<h2>PDU inlets</h2>\n<table class=\"inlets\"><thead><tr><th>PDU</th><th>Inlet</th><th>Metric</th><th>Value</th></tr></thead><tbody>\n");
        for p in pdus {
            for i in &p.inlets {
                let _ = writeln!(
                    b,
                    "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{} {}</td></tr>",
                    esc(&device_href(&p.device.device_key)),
                    esc(&label(p.device)),
                    esc(if i.component_label.is_empty() {
                        "inlet"
                    } else {
                        &i.component_label
                    }),
                    esc(&i.metric),
                    i.value,
                    esc(&i.unit)
                );
            }
        }
        b.push_str("</tbody></table>\n");
    }
    let unplaced: Vec<&Placed<'_>> = r.devices.iter().filter(|p| p.u.is_none()).collect();
    if !unplaced.is_empty() {
        b.push_str("<h2>In this rack without a U (0U or unknown)</h2>\n<ul>\n");
        for p in unplaced {
            let _ = writeln!(
                b,
                "<li><a href=\"{}\">{}</a> {} — {}</li>",
                esc(&device_href(&p.device.device_key)),
                esc(&label(p.device)),
                esc(&p.device.model),
                watts(p.watts)
            );
        }
        b.push_str("</ul>\n");
    }
    let outside: Vec<&Placed<'_>> = r
        .devices
        .iter()
        .filter(|p| p.u.is_some() && !fits(p, r.height))
        .collect();
    if !outside.is_empty() {
        b.push_str("<h2>Outside the rack's height</h2>\n<ul>\n");
        for p in outside {
            let _ = writeln!(
                b,
                "<li><a href=\"{}\">{}</a> at U{}</li>",
                esc(&device_href(&p.device.device_key)),
                esc(&label(p.device)),
                p.u.unwrap_or_default()
            );
        }
        b.push_str("</ul>\n");
    }
    b.push_str("</div></div>\n");
    b
}

/// A small inline SVG line chart of (RFC 3339 time, value) points over the `window` before `now`.
#[must_use]
pub fn power_chart(points: &[(String, f64)], now: SystemTime, window: Duration) -> String {
    const W: f64 = 480.0;
    const H: f64 = 120.0;
    const PAD: f64 = 6.0;
    let start = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(_, v)| v.is_finite())
        .filter_map(|(t, v)| {
            let t = humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok()?;
            let x = t.duration_since(start).ok()?.as_secs_f64() / window.as_secs_f64();
            Some((x.clamp(0.0, 1.0), *v))
        })
        .collect();
    if pts.is_empty() {
        return "<p class=\"muted\" id=\"power-chart\">No power readings in the last 24 h.</p>".to_owned();
    }
    // Power is shown from 0 W, so a flat line reads as "steady", not as "at the bottom".
    let (lo, hi) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
        (l.min(p.1), h.max(p.1))
    });
    let (axis_lo, axis_hi) = (lo.min(0.0), if hi > 0.0 { hi * 1.1 } else { 1.0 });
    let span = axis_hi - axis_lo;
    let xy: Vec<(f64, f64)> = pts
        .iter()
        .map(|(x, v)| {
            (
                PAD + x * (W - 2.0 * PAD),
                H - PAD - (v - axis_lo) / span * (H - 2.0 * PAD),
            )
        })
        .collect();
    let coords: Vec<String> = xy.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let dots: String = if xy.len() <= 120 {
        xy.iter()
            .map(|(x, y)| format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"#1565c0\"/>"))
            .collect()
    } else {
        String::new()
    };
    let last = pts.last().map_or(0.0, |p| p.1);
    format!(
        "<figure id=\"power-chart\"><svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"power, last 24 h\"><rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" class=\"chartbg\"/><text x=\"4\" y=\"12\" class=\"axis\">{axis_hi:.0} W</text><text x=\"4\" y=\"{ybot}\" class=\"axis\">{axis_lo:.0} W · 24 h ago</text><text x=\"{xnow}\" y=\"{ybot}\" class=\"axis\" text-anchor=\"end\">now</text><polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"2\" points=\"{}\"/>{dots}</svg><figcaption>{} reading(s) in the last 24 h · min {lo:.0} W · max {hi:.0} W · last {last:.0} W</figcaption></figure>",
        coords.join(" "),
        pts.len(),
        ybot = H - 2.0,
        xnow = W - 4.0,
    )
}

fn short_source(s: &str) -> String {
    s.trim_start_matches("LOCATION_SOURCE_")
        .to_ascii_lowercase()
        .replace('_', " ")
}

fn opt_u(u: Option<u32>) -> String {
    u.map_or_else(|| "?".into(), |u| u.to_string())
}

/// Everything the device page shows besides the device row.
#[derive(Debug, Clone, Default)]
pub struct DeviceExtras<'a> {
    pub readings: Vec<&'a LatestReading>,
    pub history: Vec<(String, f64)>,
    pub sync: Option<SyncRow>,
    pub exceptions: Vec<&'a ExceptionRow>,
    pub cmdb_configured: bool,
}

/// `/devices/<key>`.
#[must_use]
pub fn device_page(d: &DeviceRow, rules: &Rules, x: &DeviceExtras<'_>, now: SystemTime) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>Device {}</h1>\n<p class=\"crumbs\">{} {}</p>",
        esc(&label(d)),
        esc(&d.vendor),
        esc(&d.model)
    );
    b.push_str("<h2>Identity</h2>\n<table class=\"kv\" id=\"identity\"><tbody>\n");
    let macs: Vec<String> = d
        .macs
        .iter()
        .map(|(a, i, r)| {
            format!(
                "{a}{}{}",
                if i.is_empty() {
                    String::new()
                } else {
                    format!(" ({i})")
                },
                if r.contains("MANAGEMENT") { " [BMC]" } else { "" }
            )
        })
        .collect();
    for (k, v) in [
        ("Key", d.device_key.as_str()),
        ("Serial", &d.serial),
        ("Vendor", &d.vendor),
        ("Model", &d.model),
        ("Part number", &d.part_number),
        ("Asset tag", &d.asset_tag),
        ("Hostname", &d.hostname),
        ("Protocol", &d.protocol),
        ("Endpoint", &d.endpoint_key),
        ("Agent", &d.agent_id),
        ("Agent site", &d.agent_site),
        ("Last poll", &d.last_outcome),
        ("Last seen", &d.last_seen),
        ("MACs", &macs.join(", ")),
    ] {
        let _ = writeln!(b, "<tr><th>{k}</th><td>{}</td></tr>", esc(v));
    }
    let _ = writeln!(
        b,
        "<tr><th>Power</th><td id=\"device-power\">{}</td></tr>\n</tbody></table>",
        watts(d.power_watts)
    );

    b.push_str("<h2>Location</h2>\n");
    let (located, site) = decide(d, rules);
    match &located {
        Located::At(e) => {
            let _ = writeln!(
                b,
                "<p id=\"chosen-location\" class=\"ok\">Chosen: site {} · rack <a href=\"{}\">{}</a> · U{} — from {} ({})</p>",
                esc(if site.is_empty() { "(none)" } else { &site }),
                esc(&rack_href(&site, &e.rack)),
                esc(&e.rack),
                opt_u(e.u_position),
                esc(&short_source(&e.source)),
                esc(&e.raw)
            );
        }
        Located::Unknown => {
            b.push_str("<p id=\"chosen-location\" class=\"warn\">Unknown: no evidence names a rack.</p>\n")
        }
        Located::Conflict { detail } => {
            let _ = writeln!(
                b,
                "<p id=\"chosen-location\" class=\"bad\">Conflict, nothing guessed: {}</p>",
                esc(detail)
            );
        }
    }
    let ev = evidence(d, rules);
    if ev.is_empty() && d.asset_tag.is_empty() {
        b.push_str("<p class=\"muted\">No location evidence.</p>\n");
    } else {
        b.push_str("<table id=\"evidence\"><thead><tr><th>Source</th><th>Site</th><th>Room</th><th>Row</th><th>Rack</th><th>U</th><th>Confidence</th><th>Raw</th></tr></thead><tbody>\n");
        for e in &ev {
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td><code>{}</code></td></tr>",
                esc(&short_source(&e.source)),
                esc(&e.site),
                esc(&e.room),
                esc(&e.row),
                esc(&e.rack),
                opt_u(e.u_position),
                e.confidence,
                esc(&e.raw)
            );
        }
        if !d.asset_tag.is_empty() && !ev.iter().any(|e| e.source == "LOCATION_SOURCE_ASSET_TAG") {
            let _ = writeln!(
                b,
                "<tr><td>asset tag</td><td colspan=\"6\" class=\"muted\">parsed with the location patterns</td><td><code>{}</code></td></tr>",
                esc(&d.asset_tag)
            );
        }
        b.push_str("</tbody></table>\n");
    }

    b.push_str("<h2>Power, last 24 h</h2>\n");
    b.push_str(&power_chart(&x.history, now, Duration::from_secs(24 * 3600)));
    if !x.readings.is_empty() {
        b.push_str("\n<h2>Latest readings</h2>\n<table id=\"readings\"><thead><tr><th>Component</th><th>Metric</th><th>Value</th><th>Observed</th></tr></thead><tbody>\n");
        for r in &x.readings {
            let comp = if r.component_kind.is_empty() {
                "device".to_owned()
            } else {
                format!(
                    "{} {} {}",
                    r.component_kind
                        .trim_start_matches("COMPONENT_KIND_")
                        .to_ascii_lowercase(),
                    r.component_index,
                    r.component_label
                )
            };
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td></tr>",
                esc(comp.trim()),
                esc(&r.metric),
                r.value,
                esc(&r.unit),
                esc(&r.observed_at)
            );
        }
        b.push_str("</tbody></table>\n");
    }

    b.push_str("<h2>CMDB sync</h2>\n<p id=\"cmdb-sync\">");
    match &x.sync {
        Some(s) => {
            let _ = write!(
                b,
                "Last sync {}: {} — {} change(s).",
                esc(&s.last_sync),
                esc(&s.result),
                s.changes
            );
        }
        None if x.cmdb_configured => b.push_str("Not synced yet."),
        None => b.push_str("Not synced: this collector has no [netbox] section."),
    }
    b.push_str("</p>\n");
    if !x.exceptions.is_empty() {
        b.push_str("<h2>Open exceptions</h2>\n<ul>\n");
        for e in &x.exceptions {
            let _ = writeln!(
                b,
                "<li><a href=\"/exceptions#exception-{}\">{}</a>: {}</li>",
                e.id,
                esc(&e.kind),
                esc(&e.detail)
            );
        }
        b.push_str("</ul>\n");
    }
    b
}

/// `/exceptions`, with a resolve form per row.
#[must_use]
pub fn exceptions_page(list: &[ExceptionRow], notice: Option<&str>) -> String {
    let mut b = String::from("<h1>Open exceptions</h1>\n");
    if let Some(n) = notice {
        let _ = writeln!(b, "<p class=\"notice\">{}</p>", esc(n));
    }
    b.push_str("<p class=\"muted\">What the collector refused to guess. Resolving closes the exception; the next pass raises it again if its cause is still there. Ignoring also stops raising this kind for this device. Pinning states where the device is; it beats every other location source. Every action is recorded with your name (<code>groundtruth-collector exceptions … audit</code>).</p>\n");
    if list.is_empty() {
        b.push_str("<p id=\"no-exceptions\">No open exceptions.</p>\n");
        return b;
    }
    b.push_str("<table id=\"exceptions\"><thead><tr><th>#</th><th>Device</th><th>Kind</th><th>Detail</th><th>First seen</th><th>Last seen</th><th></th></tr></thead><tbody>\n");
    for e in list {
        let _ = writeln!(
            b,
            "<tr id=\"exception-{id}\" data-kind=\"{kind}\"><td>{id}</td><td><a href=\"{href}\">{key}</a></td><td>{kind}</td><td>{detail}</td><td>{first}</td><td>{last}</td><td>\
             <form method=\"post\" action=\"/exceptions/{id}/resolve\" class=\"resolve\"><input name=\"by\" placeholder=\"your name\" maxlength=\"64\" aria-label=\"resolved by\"> \
             <input name=\"note\" placeholder=\"note\" maxlength=\"200\" aria-label=\"note\"> \
             <button type=\"submit\">Resolve</button> <button type=\"submit\" formaction=\"/exceptions/{id}/ignore\" title=\"resolve and stop raising this kind for this device\">Ignore</button></form>{pin}</td></tr>",
            pin = if matches!(e.kind.as_str(), "location_conflict" | "no_location") {
                format!(
                    "<form method=\"post\" action=\"/exceptions/{}/pin\" class=\"pin\"><input name=\"by\" placeholder=\"your name\" maxlength=\"64\" aria-label=\"pinned by\"> \
                     <input name=\"site\" placeholder=\"site\" required maxlength=\"64\" aria-label=\"site\"> <input name=\"rack\" placeholder=\"rack\" required maxlength=\"64\" aria-label=\"rack\"> \
                     <input name=\"u\" placeholder=\"U\" inputmode=\"numeric\" maxlength=\"3\" aria-label=\"U\"> <button type=\"submit\" title=\"the device is where you say: beats every other source\">Pin location</button></form>",
                    e.id
                )
            } else {
                String::new()
            },
            id = e.id,
            href = esc(&device_href(&e.device_key)),
            key = esc(&e.device_key),
            kind = esc(&e.kind),
            detail = esc(&e.detail),
            first = esc(&e.first_seen),
            last = esc(&e.last_seen),
        );
    }
    b.push_str("</tbody></table>\n");
    b
}

/// The login form (`next` is the page to return to; already validated as a local path).
#[must_use]
pub fn login_page(next: &str, error: Option<&str>) -> String {
    let mut b = String::from("<h1>Log in</h1>\n");
    if let Some(e) = error {
        let _ = writeln!(b, "<p class=\"bad\" id=\"login-error\">{}</p>", esc(e));
    }
    let _ = writeln!(
        b,
        "<form method=\"post\" action=\"/login\" id=\"login\"><label>API token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required autofocus></label><input type=\"hidden\" name=\"next\" value=\"{}\"> <button type=\"submit\">Log in</button></form>\n<p class=\"muted\">The collector's <code>collector.api_token</code>. It is kept in an HttpOnly cookie for this site only.</p>",
        esc(next)
    );
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(key: &str, serial: &str, rack: &str, u: Option<u32>, w: Option<f64>) -> DeviceRow {
        DeviceRow {
            device_key: key.into(),
            serial: serial.into(),
            model: "PowerEdge R640".into(),
            agent_site: "DC1".into(),
            power_watts: w,
            locations: vec![EvidenceRow {
                source: "LOCATION_SOURCE_REDFISH_PLACEMENT".into(),
                rack: rack.into(),
                u_position: u,
                confidence: 0.9,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn escaping_covers_markup_quotes_and_path_segments() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(seg("serial:A/B c?#"), "serial%3AA%2FB%20c%3F%23");
        assert_eq!(rack_href("", "R 1"), "/racks/~/R%201");
    }

    #[test]
    fn hostile_device_text_is_escaped_on_every_page() {
        let evil = "<img src=x onerror=alert(1)>";
        let mut d = dev("serial:EVIL", evil, "R1", Some(3), Some(10.0));
        d.model = evil.into();
        d.hostname = evil.into();
        d.locations[0].raw = evil.into();
        d.locations[0].rack = format!("R1{evil}");
        let devices = vec![d];
        let rules = Rules::builtin("DC1");
        let inv = inventory(&devices, &[], &HashMap::new(), &rules);
        let x = ExceptionRow {
            id: 1,
            device_key: evil.into(),
            kind: evil.into(),
            detail: evil.into(),
            first_seen: String::new(),
            last_seen: String::new(),
        };
        let pages = [
            index(&inv),
            rack_page(&inv.racks[0]),
            device_page(&devices[0], &rules, &DeviceExtras::default(), SystemTime::now()),
            exceptions_page(std::slice::from_ref(&x), Some(evil)),
            login_page(evil, Some(evil)),
            page(evil, "", true, true),
        ];
        for p in &pages {
            assert!(!p.contains("<img"), "{p}");
            assert!(p.contains("&lt;img src=x onerror=alert(1)&gt;"), "{p}");
        }
    }

    #[test]
    fn devices_are_drawn_over_their_u_range() {
        let devices = vec![
            dev("serial:A", "A", "R07", Some(12), Some(344.0)),
            dev("serial:B", "B", "R07", Some(20), None),
        ];
        let heights = HashMap::from([("serial:B".to_owned(), 2)]);
        let inv = inventory(&devices, &[], &heights, &Rules::builtin("DC1"));
        assert_eq!(inv.racks.len(), 1);
        let r = &inv.racks[0];
        assert_eq!((r.site.as_str(), r.name.as_str(), r.height), ("DC1", "R07", 42));
        let svg = elevation(r);
        // U12 of 42: top edge at TOP + 30 * U_PX, one U tall.
        let a = svg.lines().find(|l| l.contains("data-serial=\"A\"")).unwrap();
        assert!(a.contains("data-u=\"12\" data-u-height=\"1\""), "{a}");
        assert!(
            a.contains(&format!(
                "y=\"{}\" width=\"{}\" height=\"{}\"",
                u_top(42, 12) + 1,
                WIDTH - LEFT - 8,
                U_PX - 2
            )),
            "{a}"
        );
        assert!(a.contains("344 W"), "{a}");
        // B is 2U at U20: it spans U20–U21, so its top edge is U21's.
        let b = svg.lines().find(|l| l.contains("data-serial=\"B\"")).unwrap();
        assert!(b.contains(&format!("y=\"{}\"", u_top(42, 21) + 1)), "{b}");
        assert!(b.contains(&format!("height=\"{}\"", 2 * U_PX - 2)), "{b}");
        assert!(b.contains("U20–21"), "{b}");
        assert_eq!(u_top(42, 42), TOP);
        assert_eq!(u_top(42, 1), TOP + 41 * U_PX);
        assert_eq!(svg.matches("class=\"slot\" data-u=").count(), 42);
        assert!((r.total_watts() - 344.0).abs() < f64::EPSILON);
        // A 4U device at U41 of 42 does not fit: listed, not drawn over the top.
        let devices = vec![dev("serial:C", "C", "R07", Some(41), None)];
        let heights = HashMap::from([("serial:C".to_owned(), 4)]);
        let inv = inventory(&devices, &[], &heights, &Rules::builtin("DC1"));
        assert!(!elevation(&inv.racks[0]).contains("data-serial=\"C\""));
        assert!(rack_page(&inv.racks[0]).contains("Outside the rack's height"));
    }

    #[test]
    fn colours_follow_the_power_bands() {
        assert_eq!(power_colour(None), NO_READING);
        assert_eq!(power_colour(Some(f64::NAN)), NO_READING);
        assert_eq!(power_colour(Some(0.0)), BANDS[0].1);
        assert_eq!(power_colour(Some(149.9)), BANDS[0].1);
        assert_eq!(power_colour(Some(150.0)), BANDS[1].1);
        assert_eq!(power_colour(Some(344.0)), BANDS[2].1);
        assert_eq!(power_colour(Some(799.0)), BANDS[3].1);
        assert_eq!(power_colour(Some(5000.0)), BANDS[4].1);
        let devices = vec![dev("serial:A", "A", "R07", Some(12), Some(344.0))];
        let inv = inventory(&devices, &[], &HashMap::new(), &Rules::builtin("DC1"));
        let page = rack_page(&inv.racks[0]);
        assert!(page.contains(&format!("fill=\"{}\"", BANDS[2].1)));
        for (_, colour, _) in BANDS {
            assert!(
                page.contains(&format!("background:{colour}")),
                "legend lacks {colour}"
            );
        }
    }

    #[test]
    fn site_map_racks_pdus_and_unlocated_devices() {
        let map = crate::sitemap::SiteMap::parse(
            "[[rack]]\nsite = \"DC1\"\nroom = \"H1\"\nname = \"R07\"\nheight = 48\n[[rack]]\nsite = \"DC1\"\nname = \"EMPTY\"\n[[device]]\nserial = \"PDU1\"\nsite = \"DC1\"\nrack = \"R07\"\n",
            "test",
        )
        .unwrap();
        let mut rules = Rules::builtin("DC1");
        rules.site_map = map;
        let mut pdu = dev("serial:PDU1", "PDU1", "", None, Some(900.0));
        pdu.locations.clear();
        let mut lost = dev("serial:LOST", "LOST", "", None, None);
        lost.locations.clear();
        let devices = vec![dev("serial:A", "A", "r07", Some(12), Some(344.0)), pdu, lost];
        let readings = vec![LatestReading {
            device_key: "serial:PDU1".into(),
            metric: "current".into(),
            unit: "A".into(),
            component_kind: "COMPONENT_KIND_INLET".into(),
            component_index: 1,
            component_label: "Inlet <1>".into(),
            value: 3.5,
            observed_at: String::new(),
        }];
        let inv = inventory(&devices, &readings, &HashMap::new(), &rules);
        assert_eq!(inv.racks.len(), 2);
        let r07 = inv.racks.iter().find(|r| r.name == "R07").unwrap();
        assert_eq!((r07.height, r07.room.as_str(), r07.devices.len()), (48, "H1", 2));
        // The PDU's own power is not added again to the rack total.
        assert!((r07.total_watts() - 344.0).abs() < f64::EPSILON);
        let page = rack_page(r07);
        assert!(
            page.contains("PDU inlets") && page.contains("Inlet &lt;1&gt;"),
            "{page}"
        );
        assert!(page.contains("without a U"), "{page}");
        assert_eq!(inv.unlocated.len(), 1);
        let idx = index(&inv);
        assert!(
            idx.contains("Room H1") && idx.contains("/racks/DC1/EMPTY"),
            "{idx}"
        );
        assert!(idx.contains("Devices without a location"), "{idx}");
    }

    #[test]
    fn chart_scales_points_into_the_window() {
        let now = SystemTime::now();
        let at = |h: u64| humantime::format_rfc3339_millis(now - Duration::from_secs(h * 3600)).to_string();
        let svg = power_chart(
            &[(at(12), 100.0), (at(1), 300.0)],
            now,
            Duration::from_secs(24 * 3600),
        );
        assert!(svg.contains("<polyline"), "{svg}");
        assert!(svg.contains("min 100 W · max 300 W · last 300 W"), "{svg}");
        // 12 h ago is mid-window; the axis runs from 0 W to 110 % of the maximum.
        assert!(svg.contains("points=\"240.0,81.3 "), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(power_chart(&[], now, Duration::from_secs(60)).contains("No power readings"));
    }
}
