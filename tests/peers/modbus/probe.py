#!/usr/bin/env python3
"""Health probe for the Modbus peers (pymodbus client, run with the peer venv's python).

    probe.py ups HOST:PORT | meter HOST:PORT | rtu TTY
Prints what it read and exits 0 when the identity registers hold the expected values.
"""
import struct
import sys

from pymodbus.client import ModbusSerialClient, ModbusTcpClient


def regs_to_str(regs):
    return b"".join(struct.pack(">H", r) for r in regs).decode("ascii").strip()


def main():
    kind, target = sys.argv[1], sys.argv[2]
    if kind == "rtu":
        client = ModbusSerialClient(port=target, baudrate=9600, bytesize=8, parity="N", stopbits=1, timeout=2, retries=1)
    else:
        host, port = target.rsplit(":", 1)
        client = ModbusTcpClient(host, port=int(port), timeout=2, retries=1)
    if not client.connect():
        print(f"cannot connect to {target}")
        return 1
    try:
        if kind == "ups":
            rr = client.read_holding_registers(20, count=8, device_id=1)
            if rr.isError():
                print(f"read HR 20..27 failed: {rr}")
                return 1
            serial = regs_to_str(rr.registers)
            print(f"ups serial {serial!r}")
            return 0 if serial == "GTU3K0000001" else 1
        rr = client.read_holding_registers(0xFC00, count=2, device_id=1)
        if rr.isError():
            print(f"read HR 0xFC00 failed: {rr}")
            return 1
        serial = (rr.registers[0] << 16) | rr.registers[1]
        ir = client.read_input_registers(0, count=2, device_id=1)
        volts = struct.unpack(">f", struct.pack(">HH", *ir.registers))[0] if not ir.isError() else None
        print(f"meter serial {serial}, L1 voltage {volts}")
        return 0 if serial == 31415926 and volts else 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
