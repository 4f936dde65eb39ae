#!/usr/bin/env python3
"""Build the BMC that OpenIPMI's ipmi_sim serves for groundtruth's tests.

Writes into OUT_DIR:
  bmc.emu        ipmi_sim command file (ipmi_sim_cmd(5)): the MC, its FRU 0 bytes, sensors,
                 and the SDR repository as raw records (`main_sdr_add`)
  sensors/*.val  initial sensor readings in real units; ipmi_sim polls these files every
                 2 s, so a test may overwrite one to change a reading

The FRU image and the SDR records are encoded here, byte by byte, following the IPMI
Platform Management FRU Information Storage Definition v1.0 and the IPMI v2.0 SDR formats
(type 01h full sensor, 02h compact sensor, 12h management controller locator).
The identity is made up: manufacturer "Groundtruth Labs", IANA enterprise number 32473
(reserved for documentation, RFC 5612).

Usage: gen_bmc.py OUT_DIR
"""
import datetime
import os
import sys

BMC_ADDR = 0x20
MFG_ID = 32473  # RFC 5612 documentation enterprise number

# ------------------------------------------------------------------------------ FRU


def fru_field(text):
    """Type/length byte (11b = 8-bit ASCII) followed by the bytes."""
    raw = text.encode("ascii")
    if len(raw) > 63:
        raise ValueError(text)
    return bytes([0xC0 | len(raw)]) + raw


def fru_area(fixed, fields):
    """An info area: version 1, length in 8-byte units, fixed bytes, fields, end-of-fields
    marker 0xC1, zero padding and a zero-sum checksum as the last byte."""
    body = bytearray([0x01, 0x00]) + bytes(fixed) + b"".join(fru_field(f) for f in fields) + b"\xC1"
    body += b"\x00" * (-(len(body) + 1) % 8)
    body[1] = (len(body) + 1) // 8
    body.append((-sum(body)) & 0xFF)
    return bytes(body)


def fru_image(chassis, board, product):
    """Common header (8 bytes) + chassis, board and product info areas."""
    mfg_minutes = int((board["date"] - datetime.datetime(1996, 1, 1)).total_seconds() // 60)
    areas = [
        fru_area([chassis["type"]], [chassis["part"], chassis["serial"]]),
        fru_area([0x19] + list(mfg_minutes.to_bytes(3, "little")),  # 0x19 = English
                 [board["manufacturer"], board["name"], board["serial"], board["part"], ""]),
        fru_area([0x19], [product["manufacturer"], product["name"], product["part"], product["version"],
                          product["serial"], product["asset"], ""]),
    ]
    offsets, pos = [], 1  # in 8-byte units; the header itself is unit 0
    for a in areas:
        offsets.append(pos)
        pos += len(a) // 8
    header = bytearray([0x01, 0x00] + offsets + [0x00, 0x00])  # internal, chassis, board, product, multi, pad
    header.append((-sum(header)) & 0xFF)
    return bytes(header) + b"".join(areas)


# Serials may be overridden (tests/peers/ipmi/sim.sh documents the variables), e.g. with a
# placeholder like "To Be Filled By O.E.M." for the collector's merge tests.
FRU0 = fru_image(
    chassis={"type": 0x17, "part": "GTCH-1U-PN-01",  # 0x17 rack mount chassis
             "serial": os.environ.get("GT_BMC_CHASSIS_SERIAL", "GTCH0000001")},
    board={"date": datetime.datetime(2024, 3, 18, 14, 5), "manufacturer": "Groundtruth Labs",
           "name": "GT-MB1000", "serial": os.environ.get("GT_BMC_BOARD_SERIAL", "GTBRD000001"),
           "part": "GTBRD-PN-01"},
    product={"manufacturer": "Groundtruth Labs", "name": "GT-R1000", "part": "GTR1K-PN-01",
             "version": "A1", "serial": os.environ.get("GT_BMC_PRODUCT_SERIAL", "GTPRD000001"),
             "asset": "DC1-R07-U12"},
)

# ------------------------------------------------------------------------------ sensors
# Analog threshold sensors. Reading = raw * M * 10^R. The value files hold real units
# scaled by `scale` (e.g. mV), ipmi_sim divides by `div` to get the raw byte.
#   num name         type  entity inst unit     M   R   value file  value  scale div  thresholds (real units)
ANALOG = [
    (1, "Inlet Temp",   0x01, 0x37, 1, "degC",  1,  0, "inlet_temp",    24,    1,  1, {"unc": 40, "uc": 45, "unr": 50}),
    (2, "CPU Temp",     0x01, 0x03, 1, "degC",  1,  0, "cpu_temp",      48,    1,  1, {"unc": 85, "uc": 95, "unr": 100}),
    (3, "Exhaust Temp", 0x01, 0x07, 1, "degC",  1,  0, "exhaust_temp",  35,    1,  1, {"unc": 60, "uc": 70, "unr": 75}),
    (4, "FAN1",         0x04, 0x1D, 1, "RPM",   60, 0, "fan1_rpm",      6840,  1,  60, {"lnc": 1800, "lc": 1200, "lnr": 600}),
    (5, "FAN2",         0x04, 0x1D, 2, "RPM",   60, 0, "fan2_rpm",      6720,  1,  60, {"lnc": 1800, "lc": 1200, "lnr": 600}),
    (6, "Pwr Consumption", 0x03, 0x13, 1, "W",  4,  0, "power_w",       412,   1,  4, {"unc": 760, "uc": 800, "unr": 840}),
    (7, "12V",          0x02, 0x07, 1, "V",     6, -2, "p12v_mv",       12060, 1000, 60,
     {"unc": 12.96, "uc": 13.2, "unr": 13.5, "lnc": 11.04, "lc": 10.8, "lnr": 10.5}),
]
# Discrete: power supply status (sensor type 08h, sensor-specific reading 6Fh, bit 0 = presence)
PSU_STATUS = [(8, "PS1 Status", 1), (9, "PS2 Status", 2)]

UNIT_CODE = {"degC": 1, "V": 4, "W": 6, "RPM": 18}
THRESH_ORDER = ("lnc", "lc", "lnr", "unc", "uc", "unr")  # bit 0..5 in IPMI masks


def sdr(record_type, body):
    """Header (record id 0 - ipmi_sim assigns ids -, SDR version 51h, type, length) + body."""
    return bytes([0x00, 0x00, 0x51, record_type, len(body)]) + bytes(body)


def id_string(name):
    raw = name.encode("ascii")[:16]
    return bytes([0xC0 | len(raw)]) + raw


def full_sensor(num, name, stype, entity, inst, unit, m, r_exp, thresholds_raw):
    mask = sum(1 << i for i, t in enumerate(THRESH_ORDER) if t in thresholds_raw)
    lower = mask & 0x07
    upper = (mask >> 3) & 0x07
    body = bytearray([
        BMC_ADDR, 0x00, num,             # owner id, owner lun, sensor number
        entity, inst,                    # entity id / instance
        0x7F,                            # init: scanning, events, thresholds, hysteresis, type; enable events+scanning
        0x44,                            # capabilities: auto re-arm, thresholds readable, per-threshold events
        stype, 0x01,                     # sensor type, event/reading type: threshold
        0x00, lower << 4,                # assertion mask / lower threshold reading mask (bits 14:12)
        0x00, upper << 4,                # deassertion mask / upper threshold reading mask (bits 14:12)
        mask, 0x00,                      # readable threshold mask, settable threshold mask (none)
        0x00,                            # units 1: unsigned, no rate, no modifier, not %
        UNIT_CODE[unit], 0x00,           # base unit, modifier unit
        0x00,                            # linear
        m & 0xFF, ((m >> 8) & 0x03) << 6,  # M (10 bits), tolerance 0
        0x00, 0x00,                      # B = 0, accuracy 0
        0x00,                            # accuracy, accuracy exp, direction unspecified
        ((r_exp & 0x0F) << 4) | 0x00,    # R exponent, B exponent
        0x00,                            # no nominal/normal readings
        0x00, 0x00, 0x00,                # nominal, normal max, normal min
        0xFF, 0x00,                      # sensor maximum / minimum reading
    ])
    for t in ("unr", "uc", "unc", "lnr", "lc", "lnc"):
        body.append(thresholds_raw.get(t, 0))
    body += bytes([0x00, 0x00, 0x00, 0x00, 0x00])  # hysteresis +/-, reserved x2, OEM
    body += id_string(name)
    return sdr(0x01, body)


def compact_psu_status(num, name, inst):
    body = bytearray([
        BMC_ADDR, 0x00, num,
        0x0A, inst,                      # entity: power supply
        0x67,                            # init scanning/events/type; events+scanning enabled
        0x40,                            # auto re-arm, no thresholds
        0x08, 0x6F,                      # sensor type power supply, sensor-specific reading
        0x03, 0x00,                      # assertion event mask: presence, failure
        0x03, 0x00,                      # deassertion event mask
        0x0F, 0x00,                      # discrete reading mask: presence, failure, predictive, input lost
        0xC0, 0x00, 0x00,                # units 1: not analog; base unit, modifier unit
        0x00, 0x00,                      # no record sharing
        0x00, 0x00,                      # hysteresis
        0x00, 0x00, 0x00,                # reserved
        0x00,                            # OEM
    ])
    body += id_string(name)
    return sdr(0x02, body)


def mc_locator(name):
    body = bytearray([
        BMC_ADDR, 0x00,                  # device slave address, channel 0
        0x00,                            # power state notification / global initialization
        0x9F,                            # capabilities: chassis, IPMB event receiver, FRU inventory,
                                         #   SEL, SDR repository, sensor device
        0x00, 0x00, 0x00,                # reserved
        0x06, 0x01,                      # entity: system management module, instance 1
        0x00,                            # OEM
    ])
    body += id_string(name)
    return sdr(0x12, body)


def raw_threshold(real, m, r_exp):
    return max(0, min(255, round(real / (m * 10 ** r_exp))))


def build(out_dir):
    os.makedirs(os.path.join(out_dir, "sensors"), exist_ok=True)
    records = [mc_locator("GT-BMC")]
    emu = [
        "# Generated by tests/peers/ipmi/gen_bmc.py (do not edit; rewritten on every start).",
        "mc_setbmc 0x20",
        "# mc_add ipmb dev-id sdrs dev-rev fw-major fw-minor(BCD) dev-support mfg-id product-id",
        f"mc_add 0x20 0x20 no-device-sdrs 0x01 0x01 0x02 0x9f 0x{MFG_ID:06x} 0x1000",
        "sel_enable 0x20 1000 0x0a",
        "",
        f"# FRU 0: chassis / board / product info areas ({len(FRU0)} bytes)",
        f"mc_add_fru_data 0x20 0 {len(FRU0)} data " + " ".join(f"0x{b:02x}" for b in FRU0),
        "",
    ]
    sensors = [
        "# sensor 0: watchdog (event only, used by ipmi_sim's watchdog timer)",
        "sensor_add 0x20 0 0 0x23 0x6f event-only",
        "",
    ]
    for (num, name, stype, ent, inst, unit, m, r_exp, vfile, value, scale, div, th) in ANALOG:
        th_raw = {k: raw_threshold(v, m, r_exp) for k, v in th.items()}
        records.append(full_sensor(num, name, stype, ent, inst, unit, m, r_exp, th_raw))
        path = os.path.join(out_dir, "sensors", f"{vfile}.val")
        with open(path, "w") as fh:
            fh.write(f"{value}\n")
        mask = "".join("1" if t in th else "0" for t in reversed(THRESH_ORDER))
        vals = " ".join(f"0x{th_raw.get(t, 0):02x}" for t in ("unr", "uc", "unc", "lnr", "lc", "lnc"))
        sensors += [
            f"# {name}: {value / scale} {unit} (file holds {'1/' + str(scale) + ' ' if scale != 1 else ''}{unit})",
            f'sensor_add 0x20 0 {num} 0x{stype:02x} 0x01 poll 2000 file "{path}"' + (f" div={div}" if div != 1 else ""),
            # thresholds before the value, or the first reading is flagged against zero thresholds
            f"sensor_set_threshold 0x20 0 {num} readable {mask} {vals}",
            f"sensor_set_value 0x20 0 {num} {round(value / div)} 0",
        ]
    for num, name, inst in PSU_STATUS:
        records.append(compact_psu_status(num, name, inst))
        sensors += [f"# {name}: presence detected",
                f"sensor_add 0x20 0 {num} 0x08 0x6f",
                f"sensor_set_bit_clr_rest 0x20 0 {num} 0 1 0"]
    # SDRs go in before the sensors: ipmi_sim sets a sensor up (scanning, events) from its SDR
    emu += ["# SDR repository (record ids are assigned by ipmi_sim)"]
    for r in records:
        emu.append("main_sdr_add 0x20 " + " ".join(f"0x{b:02x}" for b in r))
    emu += [""] + sensors + ["", "mc_enable 0x20", ""]
    with open(os.path.join(out_dir, "bmc.emu"), "w") as fh:
        fh.write("\n".join(emu))


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else ".")
