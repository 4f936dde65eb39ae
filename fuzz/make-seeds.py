#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/ from scratch: small inputs we build ourselves
(no third-party captures). Rerun after changing it; the files are committed so the corpus replay
test (tests/it/fuzz_replay.rs) runs them on stable."""
import os, struct, zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# ---------- SNMP (BER) ----------
def tlv(tag, body):
    n = len(body)
    if n < 0x80:
        ln = bytes([n])
    elif n < 0x100:
        ln = bytes([0x81, n])
    else:
        ln = bytes([0x82, n >> 8, n & 0xFF])
    return bytes([tag]) + ln + body

def ber_int(v, tag=0x02):
    b = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True)
    return tlv(tag, b)

def ber_uint(v, tag):
    b = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return tlv(tag, b)

def oid(s):
    arcs = [int(x) for x in s.strip(".").split(".")]
    out = bytes([40 * arcs[0] + arcs[1]])
    for a in arcs[2:]:
        enc = [a & 0x7F]
        a >>= 7
        while a:
            enc.insert(0, 0x80 | (a & 0x7F))
            a >>= 7
        out += bytes(enc)
    return tlv(0x06, out)

def varbind(o, value):
    return tlv(0x30, oid(o) + value)

def message(version, community, pdu_tag, request_id, vbs, err=0, idx=0):
    pdu = tlv(pdu_tag, ber_int(request_id) + ber_int(err) + ber_int(idx) + tlv(0x30, b"".join(vbs)))
    return tlv(0x30, ber_int(version) + tlv(0x04, community) + pdu)

sys_vbs = [
    varbind("1.3.6.1.2.1.1.1.0", tlv(0x04, b"Linux rack-pdu 5.10 groundtruth seed")),
    varbind("1.3.6.1.2.1.1.2.0", oid("1.3.6.1.4.1.318.1.3.4.5")),
    varbind("1.3.6.1.2.1.1.3.0", ber_uint(123456, 0x43)),
    varbind("1.3.6.1.2.1.1.6.0", tlv(0x04, b"DC1 Room 1 Row B Rack R07 U12")),
]
put("snmp_message", "v2c-response-system", message(1, b"public", 0xA2, 42, sys_vbs))
put("snmp_message", "v1-response", message(0, b"public", 0xA2, 7, sys_vbs[:2]))
put("snmp_message", "v2c-counters", message(1, b"public", 0xA2, 43, [
    varbind("1.3.6.1.2.1.2.2.1.10.1", ber_uint(4000000000, 0x41)),
    varbind("1.3.6.1.2.1.31.1.1.1.6.1", ber_uint(2**63 + 5, 0x46)),
    varbind("1.3.6.1.2.1.4.20.1.1.10.0.0.1", tlv(0x40, bytes([10, 0, 0, 1]))),
    varbind("1.3.6.1.2.1.2.2.1.6.1", tlv(0x04, bytes([0, 0x1B, 0x21, 1, 2, 3]))),
    varbind("1.3.6.1.2.1.99.1.0", tlv(0x80, b"")),
    varbind("1.3.6.1.2.1.99.2.0", tlv(0x82, b"")),
]))
put("snmp_message", "v2c-getbulk-request", message(1, b"public", 0xA5, 44, [varbind("1.3.6.1.2.1.2.2.1.2", tlv(0x05, b""))], 0, 25))
put("snmp_message", "v2c-error-status", message(1, b"public", 0xA2, 45, sys_vbs[:1], 5, 1))
# SNMPv3 with an empty security parameters block (discovery) and a report.
msg_global = tlv(0x30, ber_int(1) + ber_int(65507) + tlv(0x04, b"\x04") + ber_int(3))
usm = tlv(0x04, tlv(0x30, tlv(0x04, b"") + ber_int(0) + ber_int(0) + tlv(0x04, b"") + tlv(0x04, b"") + tlv(0x04, b"")))
scoped = tlv(0x30, tlv(0x04, b"") + tlv(0x04, b"") + tlv(0xA0, ber_int(1) + ber_int(0) + ber_int(0) + tlv(0x30, b"")))
put("snmp_message", "v3-discovery", tlv(0x30, ber_int(3) + msg_global + usm + scoped))
report = tlv(0x30, tlv(0x04, b"\x80\x00\x1f\x88\x80seed") + tlv(0x04, b"") + tlv(0xA8, ber_int(1) + ber_int(0) + ber_int(0) + tlv(0x30, varbind("1.3.6.1.6.3.15.1.1.4.0", ber_uint(1, 0x41)))))
usm2 = tlv(0x04, tlv(0x30, tlv(0x04, b"\x80\x00\x1f\x88\x80seed") + ber_int(5) + ber_int(1234) + tlv(0x04, b"") + tlv(0x04, b"") + tlv(0x04, b"")))
put("snmp_message", "v3-report", tlv(0x30, ber_int(3) + msg_global + usm2 + report))

# ---------- IPMI ----------
def cks(b):
    return (-sum(b)) & 0xFF

def ipmi_response(netfn, cmd, data, cc=0, seq=1):
    h = bytes([0x81, (netfn << 2)])
    body = bytes([0x20, seq << 2, cmd, cc]) + data
    return h + bytes([cks(h)]) + body + bytes([cks(body)])

RMCP = bytes([0x06, 0x00, 0xFF, 0x07])
def v15(msg, auth_type=0, sid=0, seq=0, code=b""):
    return RMCP + bytes([auth_type]) + struct.pack("<II", seq, sid) + code + bytes([len(msg)]) + msg

def v2(payload_type, payload, sid=0, seq=0, trailer=b""):
    return RMCP + bytes([0x06, payload_type]) + struct.pack("<IIH", sid, seq, len(payload)) + payload + trailer

put("ipmi_rmcp", "v15-auth-caps", v15(ipmi_response(0x07, 0x38, bytes([0x01, 0x80 | 0x14, 0x04, 0x03, 0, 0, 0, 0]))))
put("ipmi_rmcp", "v15-device-id", v15(ipmi_response(0x07, 0x01, bytes([0x20, 0x81, 0x02, 0x05, 0x02, 0xBF, 0x57, 0x01, 0x00, 0x34, 0x12])), auth_type=2, sid=0x11223344, seq=3, code=b"\xAA" * 16))
open_rsp = bytes([0, 0, 4, 0]) + struct.pack("<II", 0xA0A1A2A3, 0x0B0C0D0E) + bytes([0, 0, 0, 8, 1, 0, 0, 0, 1, 0, 0, 8, 1, 0, 0, 0, 2, 0, 0, 8, 1, 0, 0, 0])
put("ipmi_rmcp", "v2-open-session-rsp", v2(0x11, open_rsp))
put("ipmi_rmcp", "v2-rakp2", v2(0x13, bytes([0, 0, 0, 0]) + struct.pack("<I", 0xA0A1A2A3) + bytes(range(16)) + bytes(range(16, 32)) + b"\x5A" * 20))
put("ipmi_rmcp", "v2-rakp4", v2(0x15, bytes([0, 0, 0, 0]) + struct.pack("<I", 0xA0A1A2A3) + b"\x33" * 12))
put("ipmi_rmcp", "v2-authenticated-ipmi", v2(0x40, ipmi_response(0x07, 0x37, bytes(range(16))), sid=0x0B0C0D0E, seq=5, trailer=b"\xFF\xFF\x02\x07" + b"\x77" * 12))
put("ipmi_rmcp", "v2-encrypted", v2(0xC0, bytes(range(48)), sid=0x0B0C0D0E, seq=6, trailer=b"\xFF\xFF\x02\x07" + b"\x77" * 16))
put("ipmi_rmcp", "asf-ping-pong", bytes([0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x40, 0x00, 0x00, 0x10]) + bytes(16))

def fru_area(fixed, fields):
    b = bytearray([0x01, 0x00]) + bytes(fixed)
    for f in fields:
        b += bytes([0xC0 | len(f)]) + f.encode()
    b.append(0xC1)
    while (len(b) + 1) % 8:
        b.append(0)
    b[1] = (len(b) + 1) // 8
    b.append(cks(b))
    return bytes(b)

def fru_image(areas, multi=b""):
    off = 1
    offs = []
    for a in areas:
        offs.append(off if a else 0)
        off += len(a) // 8
    mr = off if multi else 0
    hdr = bytes([0x01, 0x00] + offs + [mr, 0x00])
    hdr += bytes([cks(hdr)])
    return hdr + b"".join(areas) + multi

m = (14_838_605).to_bytes(4, "little")
ch = fru_area([0x17], ["GTCH-1U-PN-01", "GTCH0000001"])
bd = fru_area([0x19, m[0], m[1], m[2]], ["Groundtruth Labs", "GT-MB1000", "GTBRD000001", "GTBRD-PN-01", ""])
pr = fru_area([0x19], ["Groundtruth Labs", "GT-R1000", "GTR1K-PN-01", "A1", "GTSRV0000001", "ASSET-0042", ""])
psu = bytes([0x00, 0x82, 24]) + bytes([0, 0]) + bytes(24)
psu = psu[:3] + bytes([cks(psu[5:]), 0]) + psu[5:]
psu = psu[:4] + bytes([cks(psu[:4])]) + psu[5:]
put("ipmi_fru", "server-full", fru_image([ch, bd, pr]))
put("ipmi_fru", "board-only", fru_image([b"", bd, b""]))
put("ipmi_fru", "with-multirecord", fru_image([ch, b"", pr], psu))
put("ipmi_fru", "bcd-and-6bit", fru_image([b"", b"", bytes([1, 2, 0x19, 0x86, 0x12, 0x34, 0x56, 0x80 | 0x43, 0x21, 0x43, 0x65, 0xC1, 0, 0, 0, 0])]))

def sdr_full(num, name, unit, mm, r_exp, units1=0, event=0x01, linear=0):
    body = bytes([0x20, 0x00, num, 0x07, 0x01, 0x7F, 0x44, 0x02, event, 0x00, 0x30, 0x00, 0x30, 0x3F, 0x00, units1, unit, 0x00, linear])
    body += bytes([mm & 0xFF, ((mm >> 8) & 3) << 6, 0, 0, 0, (r_exp << 4) & 0xF0])
    body += bytes([0, 0, 0, 0, 0xFF, 0]) + bytes([225, 220, 216, 175, 180, 184]) + bytes(5)
    body += bytes([0xC0 | len(name)]) + name.encode()
    return bytes([num, 0x00, 0x51, 0x01, len(body)]) + body + bytes([201, 0xC0, 0x00])

put("ipmi_sdr", "full-12v", sdr_full(7, "12V", 4, 6, 0x0E))
put("ipmi_sdr", "full-fan", sdr_full(4, "FAN1", 18, 60, 0))
put("ipmi_sdr", "full-temp-2s", sdr_full(1, "Inlet Temp", 1, 1, 0, units1=0x80))
put("ipmi_sdr", "full-log", sdr_full(2, "PSU1 Power", 6, 2, 0, linear=1))
put("ipmi_sdr", "full-discrete", sdr_full(9, "PSU1 Status", 0, 1, 0, event=0x6F))
compact = bytes([0x20, 0x00, 0x30, 0x0A, 0x01, 0x7F, 0x40, 0x08, 0x6F]) + bytes(6) + bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) + bytes([0xC0 | 8]) + b"PS1 Stat"
put("ipmi_sdr", "compact", bytes([0x30, 0x00, 0x51, 0x02, len(compact)]) + compact + b"\x01\xC0")
fru_loc = bytes([0x20, 0x00, 0x03, 0x80, 0x00, 0x00, 0x00, 0x0A, 0x01, 0x00, 0xC0 | 4]) + b"PSU1"
put("ipmi_sdr", "fru-locator", bytes([0x40, 0x00, 0x51, 0x11, len(fru_loc)]) + fru_loc)
mc_loc = bytes([0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0 | 3]) + b"BMC"
put("ipmi_sdr", "mc-locator", bytes([0x41, 0x00, 0x51, 0x12, len(mc_loc)]) + mc_loc)

# ---------- Modbus ----------
def words(*ws):
    return b"".join(struct.pack(">H", w & 0xFFFF) for w in ws)
f32 = struct.unpack(">HH", struct.pack(">f", 230.5))
f64 = struct.unpack(">HHHH", struct.pack(">d", 49.98))
put("modbus_decode", "float32-abcd", bytes([0x07]) + words(*f32, *f32))
put("modbus_decode", "float32-cdab", bytes([0x17]) + words(f32[1], f32[0]))
put("modbus_decode", "float64-le", bytes([0x38]) + words(*reversed(f64)))
put("modbus_decode", "int32", bytes([0x03]) + words(0xFFFF, 0xFFFE, 0x0000, 0x0010))
put("modbus_decode", "uint64", bytes([0x06]) + words(0, 0, 1, 2))
put("modbus_decode", "string8", bytes([0x0C]) + b"GTSN0001PM3200\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
put("modbus_decode", "nan", bytes([0x07]) + words(0x7FC0, 0x0000))
put("modbus_decode", "bools", bytes([0x00]) + words(1, 0, 1, 1))
# Our own register maps (agent/profiles/modbus) as map-file seeds.
PROFILES = os.path.join(os.path.dirname(ROOT), "..", "agent", "profiles", "modbus")
for name in ("test-rack-ups.toml", "sdm630.toml"):
    with open(os.path.join(PROFILES, name), "rb") as f:
        put("modbus_map", name, f.read())

# ---------- Redfish JSON ----------
put("redfish_json", "chassis.json", '''{"@odata.id":"/redfish/v1/Chassis/1","Id":"1","Name":"Chassis","ChassisType":"RackMount",
"Manufacturer":"Groundtruth Labs","Model":"GT-R1000","SerialNumber":"GTSRV0000001","PartNumber":"P1","AssetTag":null,
"Location":{"Placement":{"Rack":"R07","RackOffset":12,"RackOffsetUnits":"EIA_310","Row":"B"},
"PostalAddress":{"Room":"1","Building":"DC1"}},"Power":{"@odata.id":"/redfish/v1/Chassis/1/Power"},
"Links":{"ComputerSystems":[{"@odata.id":"/redfish/v1/Systems/1"}],"ContainedBy":[{"@odata.id":"/redfish/v1/Chassis/Rack"}],"ManagedBy":"/redfish/v1/Managers/1"}}''')
put("redfish_json", "power.json", '''{"@odata.id":"/redfish/v1/Chassis/1/Power","PowerControl":[{"MemberId":"0","PowerConsumedWatts":"412","PowerCapacityWatts":800}],
"PowerSupplies":[{"MemberId":"0","Name":"PSU1","SerialNumber":"PSU0001","Model":"X","PowerOutputWatts":200.5,"LastPowerOutputWatts":null,"Status":{"State":"Enabled","Health":"OK"}},
{"MemberId":"1","Name":"PSU2","SerialNumber":null,"PowerOutputWatts":"NaN"}]}''')
put("redfish_json", "root.json", '''{"@odata.id":"/redfish/v1/","RedfishVersion":"1.6.0","UUID":"85f1c6f4-0000-4000-8000-000000000001",
"Chassis":{"@odata.id":"/redfish/v1/Chassis"},"Systems":{"@odata.id":"/redfish/v1/Systems"},"Managers":{"@odata.id":"/redfish/v1/Managers"}}''')
put("redfish_json", "collection.json", '''{"@odata.id":"/redfish/v1/Chassis","Members@odata.count":2,"Members":[{"@odata.id":"/redfish/v1/Chassis/1"},"/redfish/v1/Chassis/2"],"Members@odata.nextLink":"/redfish/v1/Chassis?skip=2"}''')
put("redfish_json", "system.json", '''{"@odata.id":"/redfish/v1/Systems/1","Manufacturer":"Groundtruth Labs","Model":"GT-R1000","SerialNumber":"GTSRV0000001","UUID":"85F1C6F4-0000-4000-8000-000000000001","BiosVersion":"1.2.3","PowerState":"On","HostName":"srv1","EthernetInterfaces":{"@odata.id":"/redfish/v1/Systems/1/EthernetInterfaces"}}''')
put("redfish_json", "manager.json", '''{"@odata.id":"/redfish/v1/Managers/1","FirmwareVersion":"2.81","Model":"BMC","EthernetInterfaces":{"@odata.id":"/redfish/v1/Managers/1/EthernetInterfaces"}}''')
put("redfish_json", "nic.json", '''{"@odata.id":"/redfish/v1/Managers/1/EthernetInterfaces/1","MACAddress":"00-1B-21-01-02-03","PermanentMACAddress":"00:1b:21:01:02:03","IPv4Addresses":[{"Address":"10.0.0.5","Gateway":null}],"HostName":null}''')
put("redfish_json", "error.json", '''{"error":{"code":"Base.1.0.GeneralError","message":"internal error","@Message.ExtendedInfo":[]}}''')

# ---------- spool records ----------
def rec(kind, epoch, seq, payload):
    body = bytes([kind]) + struct.pack("<QQ", epoch, seq) + payload
    return struct.pack("<II", len(body), zlib.crc32(body)) + body
put("spool_record", "three-records", rec(1, 1, 1, b"\x08\x01") + rec(2, 1, 2, b"hello") + rec(2, 1, 3, b""))
put("spool_record", "torn-tail", rec(2, 7, 9, b"x" * 40)[:-3])
put("spool_record", "bad-crc", rec(2, 7, 10, b"y" * 8)[:-1] + b"z")

# ---------- target URLs ----------
for i, u in enumerate([
    "snmp://10.0.0.1", "snmp+v1://10.0.0.1:1161?community_index=2", "snmpv3://admin@10.0.0.2?auth=sha256&priv=aes128&max_repetitions=50",
    "redfish://[fe80::1%25eth0]:8443/", "redfish+http://bmc.example:8000?insecure", "modbus+tcp://10.0.0.3:502?unit=3&map=sdm630",
    "modbus+rtu:///dev/ttyUSB0?baud=9600&parity=even&unit=7&map=/etc/groundtruth/m.toml", "ipmi://admin@10.0.0.4:623?cipher=17&privilege=user",
    "ipmi://10.0.0.4?v15=md5", "snmp://user:pass@host:99999",
]):
    put("target_url", f"url-{i}", u)

# ---------- protobuf Batch ----------
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(0x80 | b)
        else:
            out.append(b)
            return bytes(out)
def field(num, wt, data):
    key = varint((num << 3) | wt)
    if wt == 0:
        return key + varint(data)
    if wt == 1:
        return key + struct.pack("<d", data)
    return key + varint(len(data)) + data
def s(num, text):
    return field(num, 2, text.encode())
ts = field(1, 0, 1_790_000_000) + field(2, 0, 5)
agent = s(1, "fuzz-agent") + s(2, "DC1") + s(3, "0.1.0") + s(4, "edge1")
ident = s(1, "Groundtruth Labs") + s(2, "GT-R1000") + s(3, "GTSRV0000001")
reading = s(1, "power") + s(2, "W") + field(3, 1, 412.0) + field(4, 2, ts)
loc = field(1, 0, 2) + s(2, "R07") + s(3, "DC1 R07 U12")
status = field(1, 0, 1)
report = field(1, 2, ident) + field(2, 2, reading) + field(3, 2, loc) + field(5, 2, status) + field(6, 2, ts) + field(7, 0, 120)
batch = field(1, 0, 1) + field(2, 2, agent) + field(3, 0, 1) + field(4, 0, 1) + field(5, 2, ts) + field(6, 0, 3) + field(7, 2, report)
put("proto_batch", "batch-one-device", batch)
put("proto_batch", "batch-two-devices", batch.replace(field(4, 0, 1), field(4, 0, 2)) + field(7, 2, field(1, 2, s(3, "GTPDU0000009")) + field(5, 2, field(1, 0, 3))))
put("proto_batch", "batch-empty", field(2, 2, agent) + field(3, 0, 1) + field(4, 0, 3))
put("proto_batch", "topic.txt", "groundtruth/agents/DC1/fuzz-agent/telemetry")

# ---------- location text, patterns, site map ----------
for i, t in enumerate(["DC1 / Room H1 / Row A / Rack R07 / U40", "dc1;room=H1;row=A;rack=R07;u=12", "DC1-R07-U12", "DC1 Room 1 Row B Rack R07 U12", "Rack: R07; U: 12", "R07-U12", "dc1.r07.u12", "ASSET-0042",
                       "Building 2/Floor 3/Room 301/Rack A-12/U 40-41", "", "rack 7 unit 1e308", "Ü12 räck ☃"]):
    put("location_text", f"text-{i}", t)
put("location_patterns", "patterns.toml", '''[[pattern]]
name = "site-rack-u"
applies_to = "any"
regex = '(?i)^(?P<site>[A-Z0-9]+)\\s+rack\\s+(?P<rack>[A-Z0-9-]+)\\s+u(?P<u>\\d+)$'
''')
put("site_map", "sitemap.toml", '''[[rack]]
site = "DC1"
name = "R01"
room = "1"
row = "A"
height = 42

[[device]]
serial = "GT0001"
site = "DC1"
rack = "R01"
u = 10

[[port]]
switch = "sw1"
port = "Gi1/0/1"
site = "DC1"
rack = "R01"
u = 10
''')
print("seeds written to", ROOT)
