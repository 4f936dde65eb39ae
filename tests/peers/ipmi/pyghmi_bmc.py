#!/usr/bin/env python3
"""pyghmi's fake BMC (a second, independent RMCP+ implementation) on 127.0.0.1 only.

pyghmi's own `fakebmc` CLI binds `::` and has no address option, hence this wrapper. It answers
Get Device ID (zeros, firmware 1.00), Chassis Status (power on) and power control; everything
else (GUID, FRU, SDR, LAN parameters, DCMI) is "invalid command" (C1h). Cipher suite 3 only.

Usage: pyghmi_bmc.py PORT [USER] [PASSWORD]   (needs `pip install pyghmi`)
"""
import sys

import pyghmi.ipmi.bmc as bmc


class GtBmc(bmc.Bmc):
    def get_power_state(self):
        return "on"


if __name__ == "__main__":
    port = int(sys.argv[1])
    user = sys.argv[2] if len(sys.argv) > 2 else "ADMIN"
    password = sys.argv[3] if len(sys.argv) > 3 else "Adm1nPass!"
    GtBmc({user: password}, port, address="127.0.0.1").listen()
