//! IPMI over LAN against OpenIPMI ipmi_sim (issue #7).
