#!/bin/sh
# ipmi_sim "lan_config_program" responder: keeps the LAN parameters that `lan print 1`
# shows in a small state file (one "name:value" line each).
#   lanparm.sh STATE get NAME...          -> prints "NAME:value" per NAME
#   lanparm.sh STATE set NAME VALUE...    -> stores the values
#   lanparm.sh STATE check NAME VALUE...  -> accepts anything
# (protocol: OpenIPMI lanserv/extcmd.c). The state file is written by ipmi/start.sh.
state="$1"; op="$2"; shift 2
case "$op" in
    get)
        for name in "$@"; do
            line="$(grep "^$name:" "$state" | tail -n 1)"
            [ -n "$line" ] || { echo "unknown parameter $name"; exit 1; }
            echo "$line"
        done ;;
    set)
        while [ $# -ge 2 ]; do
            grep -v "^$1:" "$state" > "$state.new"; echo "$1:$2" >> "$state.new"; mv "$state.new" "$state"
            shift 2
        done ;;
    check) ;;
    *) echo "unsupported operation $op"; exit 1 ;;
esac
