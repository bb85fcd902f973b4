#!/usr/bin/env bash
# Companion of bench/instances.sh: profiles the measured instances of each cell of a run
# writing into $1 (start it just before the run, same results directory). For each cell,
# $3 s after the tester starts writing (default 6), over $2 s (default 10): CPU per thread
# name of each measured instance (utime + stime of /proc/PID/task/*, in ticks) into
# <cell>.threads0-<i>.txt (before) and .threads1-<i>.txt (after); unless NOPERF=1, also
# perf stat (context switches, syscalls) of each into <cell>.perf-stat-<i>.txt and perf
# record -g of the first into <cell>.perf.data (which slows that instance). Exits when
# the run has written its table, printing (and writing to $1/threads.md) per cell the
# CPU per thread in µs per event.
set -uo pipefail
OUT=$1 SECS=${2:-10} WARM=${3:-6} TICKS=$(getconf CLK_TCK)
seen=""
threads() { for t in /proc/"$1"/task/*; do printf '%s\t%s\n' "$(cat "$t/comm")" "$(awk '{ print $14 + $15 }' "$t/stat")"; done | awk -F'\t' '{ sub(/-[0-9]+$/, "-N", $1); a[$1] += $2 } END { for (k in a) print k "\t" a[k] }' | sort; }
# Per cell: each measured instance's CPU per thread name over the window, in µs per event
# relayed (the cell's events/s × the window), mean over the instances; perf stat's context
# switches and syscalls per event when recorded.
summary() {
    local dir=$OUT secs=$SECS
    echo "| cell | events/s | events/batch | pipeline (Redis read, decode) | hub (merge) | shards (sockets) | other | total | context switches / event | syscalls / event |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for f in "$dir"/*.threads0-0.txt; do
        cell=$(basename "$f" .threads0-0.txt)
        eps=$(jq -r --arg c "$cell" 'select(.instance == null and .cell == $c) | .events_per_s' "$dir/cells.jsonl")
        b=$(jq -r --arg c "$cell" 'select(.instance == null and .cell == $c) | .events_per_batch' "$dir/cells.jsonl")
        n=$(ls "$dir/$cell".threads0-*.txt | wc -l)
        cs=""; sc=""
        if [ -f "$dir/$cell.perf-stat-0.txt" ]; then
            cs=$(cat "$dir/$cell".perf-stat-*.txt | awk -v e="$eps" -v s="$secs" -v n="$n" '/context-switches/ { gsub(",", "", $1); t += $1 } END { printf "%.2f", t / n / (e * s) }')
            sc=$(cat "$dir/$cell".perf-stat-*.txt | awk -v e="$eps" -v s="$secs" -v n="$n" '/sys_enter/ { gsub(",", "", $1); t += $1 } END { printf "%.2f", t / n / (e * s) }')
        fi
        for i in $(seq 0 $((n - 1))); do join -t$'\t' "$dir/$cell.threads0-$i.txt" "$dir/$cell.threads1-$i.txt"; done |
            awk -F'\t' -v t="$TICKS" -v e="$eps" -v s="$secs" -v n="$n" -v cell="$cell" -v b="$b" -v cs="$cs" -v sc="$sc" '
                { d = ($3 - $2) / t * 1e6 / (e * s) / n
                  if ($1 == "tidings-pipelin") p += d; else if ($1 == "tidings-hub") h += d; else if ($1 == "tidings-hub-N") x += d; else o += d }
                END { printf "| %s | %.0f | %.0f | %.1f | %.1f | %.1f | %.1f | %.1f | %s | %s |\n", cell, e, b, p, h, x, o, p + h + x + o, cs ? cs : "–", sc ? sc : "–" }'
    done
}
while true; do
    for log in "$OUT"/*.tester.log; do
        [ -f "$log" ] || continue
        cell=$(basename "$log" .tester.log)
        case " $seen " in *" $cell "*) continue ;; esac
        grep -q "^writing" "$log" || continue
        seen="$seen $cell"
        tester=$(pgrep -f -- "--json $OUT/$cell.json" | head -1)
        urls=$(tr '\0' '\n' </proc/"$tester"/cmdline | grep -A1 -- '--subscribe-urls' | tail -1)
        pids=()
        for url in ${urls//,/ }; do
            port=${url##*:}
            pids+=("$(ss -ltnpH "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)")
        done
        sleep "$WARM"
        i=0
        for pid in "${pids[@]}"; do
            threads "$pid" >"$OUT/$cell.threads0-$i.txt"
            [ -n "${NOPERF:-}" ] || perf stat -e context-switches,raw_syscalls:sys_enter,task-clock -p "$pid" -o "$OUT/$cell.perf-stat-$i.txt" -- sleep "$SECS" &
            i=$((i + 1))
        done
        if [ -n "${NOPERF:-}" ]; then sleep "$SECS"; else perf record -F 499 -g -p "${pids[0]}" -o "$OUT/$cell.perf.data" -- sleep "$SECS" >/dev/null 2>&1; fi
        wait
        i=0
        for pid in "${pids[@]}"; do threads "$pid" >"$OUT/$cell.threads1-$i.txt"; i=$((i + 1)); done
        echo "$cell profiled: ${pids[*]}"
    done
    if [ -f "$OUT/table.md" ]; then summary | tee "$OUT/threads.md"; exit 0; fi
    sleep 0.5
done
