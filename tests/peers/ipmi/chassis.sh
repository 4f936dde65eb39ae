#!/bin/sh
# ipmi_sim "chassis_control" responder: chassis power and boot device in a state file,
# so `chassis status`, `power status|on|off|cycle` and `chassis bootdev` work.
#   chassis.sh STATE get power|boot...   -> "power:1" / "boot:default"
#   chassis.sh STATE set power 0|1 | reset 1 | boot none|pxe|default|... | shutdown 1 | identify ...
state="$1"; op="$2"; shift 2
[ -f "$state" ] || printf 'power:1\nboot:default\n' > "$state"
case "$op" in
    get)
        for name in "$@"; do
            line="$(grep "^$name:" "$state" | tail -n 1)"
            [ -n "$line" ] || { echo "unknown parameter $name"; exit 1; }
            echo "$line"
        done ;;
    set)
        while [ $# -ge 2 ]; do
            case "$1" in
                power|boot)
                    grep -v "^$1:" "$state" > "$state.new"; echo "$1:$2" >> "$state.new"; mv "$state.new" "$state" ;;
                shutdown)
                    grep -v "^power:" "$state" > "$state.new"; echo "power:0" >> "$state.new"; mv "$state.new" "$state" ;;
                *) ;;   # reset, identify: nothing to keep
            esac
            shift 2
        done ;;
    check) ;;
    *) echo "unsupported operation $op"; exit 1 ;;
esac
