#!/usr/bin/env python3
"""Register maps for groundtruth's Modbus test peers, as a pymodbus 3.16 simulator JSON file.

The server is pymodbus' own `pymodbus.simulator` (ModbusSimulatorContext); this script only
writes the data it serves. Two devices:

* ``gt_rack_ups``  - the "test-rack-ups" layout (identity strings in holding registers 0-31,
  float32 measurements from 100, energy/uptime uint32 at 120/122, status word at 124),
  with our own identity: GT-TESTLAB / GT-UPS-3000 / GTU3K0000001 / firmware 01.02.03.
* ``gt_sdm630``    - an Eastron SDM630-style 3-phase meter: measurements are float32 input
  registers (FC04) at Eastron's published addresses, set-up values float32 holding
  registers, serial number uint32 in holding register 0xFC00 (= 31415926).

Conventions: 0-based wire addresses; 32-bit values big-endian word and byte order (ABCD);
strings ASCII, 2 characters per register, first character in the high byte, space padded.

Usage:
    gen_registers.py RUN_DIR [--ups-port N] [--meter-port N] [--static]  > registers.json
    gen_registers.py --markdown                                          > table (README)
--static replaces the "random" actions by their fixed nominal values.
"""
import argparse
import json
import sys

SPACE = 0x10000  # every table spans the full 16-bit address space


class Field:
    def __init__(self, table, addr, kind, name, value, unit="", rand=None, action=None, regs=None):
        self.table, self.addr, self.kind, self.name = table, addr, kind, name
        self.value, self.unit, self.rand, self.action = value, unit, rand, action
        self.regs = regs or {"uint16": 1, "uint32": 2, "float32": 2}[kind]


def device(fields, strict_types, static):
    """Build one `device_list` entry. pymodbus keeps the tables in one cell list, laid out
    coils | discrete inputs | input registers | holding registers (no shared blocks)."""
    base = {"ir": 0, "hr": SPACE}
    by_kind = {"uint16": [], "uint32": [], "float32": [], "string": []}
    for f in fields:
        start = base[f.table] + f.addr
        entry = {"addr": [start, start + f.regs - 1], "value": f.value}
        if f.rand and not static:
            entry["action"] = "random"
            entry["parameters"] = {"minval": f.rand[0], "maxval": f.rand[1]}
        elif f.action:
            entry["action"] = f.action
        by_kind[f.kind].append(entry)
    return {
        "setup": {
            "co size": 0, "di size": 0, "ir size": SPACE, "hr size": SPACE,
            "shared blocks": False,
            # true: a read that starts or ends inside a 32-bit value is refused (exception 2),
            # like a real SDM630
            "type exception": strict_types,
            "defaults": {
                "value": {"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "float64": 0.0, "string": " "},
                "action": {k: None for k in ("bits", "uint16", "uint32", "float32", "float64", "string")},
            },
        },
        # cells not listed stay INVALID: reading them gives exception 2 (illegal address)
        "invalid": [], "write": [], "bits": [], "float64": [], "repeat": [],
        **by_kind,
    }


def text(table, addr, regs, name, s):
    assert len(s) <= 2 * regs, s
    return Field(table, addr, "string", name, s.ljust(2 * regs), regs=regs)


# --------------------------------------------------------------------------- rack UPS
UPS = [
    text("hr", 0, 10, "manufacturer", "GT-TESTLAB"),
    text("hr", 10, 10, "model", "GT-UPS-3000"),
    text("hr", 20, 8, "serial number", "GTU3K0000001"),
    text("hr", 28, 4, "firmware version", "01.02.03"),
    Field("hr", 32, "uint16", "register map version (0x0102 = 1.2)", 0x0102),
    Field("hr", 33, "uint16", "rated apparent power", 3000, "VA"),
    Field("hr", 100, "float32", "input voltage", 229.5, "V", rand=(227.0, 232.0)),
    Field("hr", 102, "float32", "input frequency", 50.0, "Hz", rand=(49.9, 50.1)),
    Field("hr", 104, "float32", "output voltage", 230.0, "V", rand=(229.0, 231.0)),
    Field("hr", 106, "float32", "output current", 5.4, "A", rand=(5.1, 5.7)),
    Field("hr", 108, "float32", "output active power", 1190.0, "W", rand=(1120.0, 1260.0)),
    Field("hr", 110, "float32", "output apparent power", 1240.0, "VA", rand=(1170.0, 1310.0)),
    Field("hr", 112, "float32", "load", 41.0, "%", rand=(38.0, 44.0)),
    Field("hr", 114, "float32", "battery charge", 100.0, "%"),
    Field("hr", 116, "float32", "battery runtime remaining", 21.0, "min", rand=(20.0, 22.0)),
    Field("hr", 118, "float32", "internal temperature", 27.5, "degC", rand=(26.5, 28.5)),
    Field("hr", 120, "uint32", "output energy (+1 on every read)", 9876543, "Wh", action="increment"),
    Field("hr", 122, "uint32", "uptime (seconds since simulator start)", 0, "s", action="uptime"),
    Field("hr", 124, "uint16", "status bits: bit0 on line, bit1 on battery, bit2 bypass", 0x0001),
]

# --------------------------------------------------------------------------- SDM630 meter
def phases(first, name, unit, nominal, spread):
    return [Field("ir", first + 2 * i, "float32", f"L{i + 1} {name}", v, unit,
                  rand=(round(v - spread, 3), round(v + spread, 3)))
            for i, v in enumerate(nominal)]


SDM630 = (
    phases(0x00, "voltage (L-N)", "V", (231.2, 230.6, 229.8), 1.5)
    + phases(0x06, "current", "A", (3.9, 4.4, 3.6), 0.3)
    + phases(0x0C, "active power", "W", (870.0, 985.0, 800.0), 60.0)
    + phases(0x12, "apparent power", "VA", (900.0, 1015.0, 830.0), 60.0)
    + phases(0x18, "reactive power", "VAr", (230.0, 245.0, 215.0), 25.0)
    + phases(0x1E, "power factor", "", (0.97, 0.97, 0.96), 0.01)
    + [
        Field("ir", 0x2A, "float32", "average voltage (L-N)", 230.5, "V", rand=(229.5, 231.5)),
        Field("ir", 0x2E, "float32", "average line current", 3.97, "A", rand=(3.7, 4.2)),
        Field("ir", 0x30, "float32", "sum of line currents", 11.9, "A", rand=(11.2, 12.6)),
        Field("ir", 0x34, "float32", "total system active power", 2655.0, "W", rand=(2500.0, 2800.0)),
        Field("ir", 0x38, "float32", "total system apparent power", 2745.0, "VA", rand=(2590.0, 2900.0)),
        Field("ir", 0x3C, "float32", "total system reactive power", 690.0, "VAr", rand=(620.0, 760.0)),
        Field("ir", 0x3E, "float32", "total system power factor", 0.97, "", rand=(0.96, 0.98)),
        Field("ir", 0x46, "float32", "frequency", 50.0, "Hz", rand=(49.95, 50.05)),
        Field("ir", 0x48, "float32", "import active energy", 123456.7, "kWh"),
        Field("ir", 0x4A, "float32", "export active energy", 0.0, "kWh"),
        Field("ir", 0x4C, "float32", "import reactive energy", 23456.7, "kVArh"),
        Field("ir", 0x4E, "float32", "export reactive energy", 0.0, "kVArh"),
        Field("ir", 0x54, "float32", "total system power demand", 2610.0, "W"),
        Field("ir", 0x56, "float32", "maximum total system power demand", 4120.0, "W"),
    ]
    + [Field("ir", 0xC8 + 2 * i, "float32", f"{a}-{b} voltage", 399.3, "V", rand=(397.0, 401.5))
       for i, (a, b) in enumerate((("L1", "L2"), ("L2", "L3"), ("L3", "L1")))]
    + [
        Field("ir", 0xCE, "float32", "average line-to-line voltage", 399.3, "V", rand=(397.0, 401.5)),
        Field("ir", 0xE0, "float32", "neutral current", 0.42, "A", rand=(0.3, 0.55)),
        Field("ir", 0x156, "float32", "total active energy", 123456.7, "kWh"),
        Field("ir", 0x158, "float32", "total reactive energy", 23456.7, "kVArh"),
    ]
    + [Field("ir", 0x15A + 2 * i, "float32", f"L{i + 1} import active energy", v, "kWh")
       for i, v in enumerate((40512.3, 45871.9, 37072.5))]
    + [
        Field("hr", 0x0A, "float32", "system type (3 = 3 phase 4 wire)", 3.0),
        Field("hr", 0x12, "float32", "network parity/stop (0 = none, 1 stop bit)", 0.0),
        Field("hr", 0x14, "float32", "Modbus node address", 1.0),
        Field("hr", 0x1C, "float32", "baud rate code (2 = 9600)", 2.0),
        Field("hr", 0xFC00, "uint32", "serial number", 31415926),
    ]
)


def identity(vendor, code, model, rev):
    return {"VendorName": vendor, "ProductCode": code, "VendorUrl": "", "ProductName": model,
            "ModelName": model, "MajorMinorRevision": rev}


def config(run_dir, ups_port, meter_port, static):
    ups_id = identity("GT-TESTLAB", "GTUPS3000", "GT-UPS-3000", "01.02")
    meter_id = identity("Eastron", "SDM630", "SDM630-Modbus", "1.0")
    tcp = {"comm": "tcp", "host": "127.0.0.1", "device_id": 1, "ignore_missing_devices": False, "framer": "socket"}
    return {
        "server_list": {
            "ups_tcp": {**tcp, "port": ups_port, "identity": ups_id},
            "meter_tcp": {**tcp, "port": meter_port, "identity": meter_id},
            "meter_rtu": {"comm": "serial", "port": f"{run_dir}/ttySDM630-server", "device_id": 1,
                          "baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1, "timeout": 1,
                          "framer": "rtu", "identity": meter_id},
        },
        "device_list": {
            "gt_rack_ups": device(UPS, strict_types=False, static=static),
            "gt_sdm630": device(SDM630, strict_types=True, static=static),
        },
    }


def markdown():
    out = []
    for title, fields in (("rack UPS (test-rack-ups layout), TCP unit 1", UPS),
                          ("SDM630-style meter, TCP and RTU unit 1", SDM630)):
        out += [f"#### {title}", "", "| table | address | regs | type | name | value | unit |",
                "|---|---|---|---|---|---|---|"]
        for f in sorted(fields, key=lambda f: (f.table, f.addr)):
            val = f.value.rstrip() if isinstance(f.value, str) else f.value
            if f.rand:
                val = f"{val} (random {f.rand[0]}..{f.rand[1]})"
            elif f.action:
                val = f"{val} ({f.action})"
            tbl = "HR (FC03)" if f.table == "hr" else "IR (FC04)"
            out.append(f"| {tbl} | {f.addr} (0x{f.addr:04X}) | {f.regs} | {f.kind} | {f.name} | {val} | {f.unit} |")
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", default="/tmp/gt-peers/modbus")
    ap.add_argument("--ups-port", type=int, default=25020)
    ap.add_argument("--meter-port", type=int, default=25021)
    ap.add_argument("--static", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    if a.markdown:
        print(markdown())
    else:
        json.dump(config(a.run_dir, a.ups_port, a.meter_port, a.static), sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
