"""Turning the benchmark's raw numbers into a Markdown report (and wrk glue)."""

from __future__ import annotations

import json
import os
from typing import Any

SATURATED = 85.0  # % of one core above which a process counts as the bottleneck
BOUNDED_GROWTH_MB = 100.0


# ------------------------------------------------------------------ wrk

WRK_DONE = r'''
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
'''


def wrk_script(workdir: str, target: str, origin_port: int, proxy_port: int) -> tuple[str, str]:
    """Lua script and URL for wrk.  Through the proxy wrk must send an absolute-form
    request-target, which it does when wrk.path is a full URL; Host names the origin.
    For target "reverse", ``proxy_port`` is the reverse proxy's and requests are origin-form."""
    path = os.path.join(workdir, f"wrk-{target}.lua")
    origin = f"127.0.0.1:{origin_port}"
    with open(path, "w") as f:
        if target == "proxy":
            f.write(f'wrk.path = "http://{origin}/1k"\nwrk.headers["Host"] = "{origin}"\n')
        f.write(WRK_DONE)
    if target == "proxy":
        url = f"http://127.0.0.1:{proxy_port}/"
    elif target == "reverse":
        url = f"http://127.0.0.1:{proxy_port}/1k"
    else:
        url = f"http://{origin}/1k"
    return path, url


def parse_wrk(out: str) -> dict[str, Any] | None:
    for line in out.splitlines():
        if line.startswith("BENCHJSON "):
            j = json.loads(line[len("BENCHJSON "):])
            window = j["duration_us"] / 1e6
            kinds = {k[4:]: v for k, v in j.items() if k.startswith("err_") and v}
            return {"tool": "wrk", "window_s": round(window, 3), "requests": j["requests"],
                    "rps": round(j["requests"] / window, 1), "errors": sum(kinds.values()), "error_kinds": kinds,
                    "p50_ms": j["p50_us"] / 1000, "p90_ms": j["p90_us"] / 1000, "p99_ms": j["p99_us"] / 1000,
                    "max_ms": j["max_us"] / 1000, "mean_ms": round(j["mean_us"] / 1000, 3)}
    return None


# ------------------------------------------------------------------ judging

def core_usage(r: dict[str, Any], cpus: dict[str, Any]) -> dict[int, dict[str, float]]:
    """Per pinned CPU: whole-core busy %, the part our processes used, steal %."""
    out: dict[int, dict[str, float]] = {}
    for proc in ("loadgen", "origin", "proxy"):
        placed = cpus.get("load" if proc == "loadgen" else proc)
        if not placed or f"cpu{placed[0]}_busy_pct" not in r:
            continue
        core = out.setdefault(placed[0], {"busy": r[f"cpu{placed[0]}_busy_pct"],
                                          "steal": r.get(f"cpu{placed[0]}_steal_pct", 0.0), "ours": 0.0})
        core["ours"] += r.get(f"{proc}_cpu_pct") or 0.0
    return out


def keepalive_limit(r: dict[str, Any], cpus: dict[str, Any]) -> str:
    """Which process, or which CPU, ran out first during a keep-alive run (or none did)."""
    proxy = r.get("proxy_cpu_pct")
    load = r.get("loadgen_cpu_pct") or 0.0
    origin = r.get("origin_cpu_pct") or 0.0
    if proxy is not None and proxy >= SATURATED:
        return f"proxy CPU-bound ({proxy:.0f}%)"
    if load >= SATURATED:
        return f"load generator CPU-bound ({load:.0f}%)"
    if origin >= SATURATED:
        return f"origin CPU-bound ({origin:.0f}%)"
    for cpu, u in sorted(core_usage(r, cpus).items()):
        if u["busy"] >= SATURATED:
            return (f"CPU {cpu} saturated ({u['busy']:.0f}% busy: {u['ours']:.0f}% ours, "
                    f"{max(0.0, u['busy'] - u['ours']):.0f}% other processes)")
    if not cpus.get("proxy"):
        return "no process saturated a core (not pinned: processes shared the CPUs)"
    return "no core saturated (latency-bound)"


def interference(r: dict[str, Any], cpus: dict[str, Any]) -> list[str]:
    """Other processes or the hypervisor taking a pinned CPU during a run."""
    notes = []
    for cpu, u in sorted(core_usage(r, cpus).items()):
        foreign = u["busy"] - u["ours"]
        if foreign >= 10:
            notes.append(f"other processes used about {foreign:.0f}% of CPU {cpu}")
        if u["steal"] >= 5:
            notes.append(f"the hypervisor stole {u['steal']:.0f}% of CPU {cpu}")
    return notes


def pick_median(runs: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The run whose ``key`` is the median (lower middle for an even count)."""
    good = sorted((r for r in runs if r.get(key) is not None), key=lambda r: r[key])
    return good[(len(good) - 1) // 2] if good else (runs[0] if runs else None)


def transfer_line(r: dict[str, Any]) -> str:
    s = f"{r['direction']} {r['mode']}: {r['mb_per_s']} MB/s in {r['seconds']} s"
    if "proxy_hwm_mb" in r:
        s += f", proxy RSS {r['proxy_rss_before_mb']} -> peak {r['proxy_hwm_mb']} MB"
    return s + ("" if r["ok"] else f", FAILED: {r['error']}")


# ------------------------------------------------------------------ formatting

def num(x: float | None, unit: str = "") -> str:
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}{unit}"
    if abs(x) >= 10:
        return f"{x:.1f}{unit}"
    return f"{x:.2f}{unit}"


def ratio(p: float | None, d: float | None) -> str:
    return f"{p / d:.2f}×" if p is not None and d else "–"


def table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


# ------------------------------------------------------------------ the report

def render(res: dict[str, Any]) -> str:
    scenarios = res["config"].get("scenarios") or ["keepalive", "bulk"] + (["upload"] if res["upload"] else [])
    lines = ["# interceptkit benchmark", "", header_line(res),
             ("Everything runs on 127.0.0.1. Treat differences under about ±10 % as noise "
              f"(see bench/README.md). Scenarios: {', '.join(scenarios)}."), ""]
    sections = []
    if "keepalive" in scenarios:
        sections.append(keepalive_section(res))
    if "reverse" in scenarios:
        sections.append(reverse_section(res))
    if "websocket" in scenarios:
        sections.append(websocket_section(res))
    if "bulk" in scenarios:
        sections.append(bulk_section(res))
    if res["memory"]:
        sections.append(memory_section(res))
    if "upload" in scenarios:
        sections.append(upload_section(res))
    for i, sec in enumerate(sections, 1):
        sec[0] = sec[0].replace("## ", f"## {i}. ", 1)
        lines += sec
    lines.append(f"Total run time: {res.get('elapsed_s', 0):.1f} s.")
    for note in res["notes"]:
        lines.append(f"Note: {note}.")
    return "\n".join(lines)


def header_line(res: dict[str, Any]) -> str:
    env, cpus = res["env"], res["cpus"]
    ident = f"interceptkit {env.get('interceptkit') or '?'}" + (f" ({env['commit']})" if env.get("commit") else "")
    if cpus.get("proxy"):
        pin = (f"origin + bulk client on CPU {cpus['origin'][0]}, proxy on CPU {cpus['proxy'][0]}, "
               f"load generator on CPU {cpus['load'][0]}")
    else:
        pin = "not pinned (fewer than 2 CPUs or --no-pin): all processes share the CPUs"
    return (f"{ident} · Python {env['python']} · Linux {env['kernel']} · {env['ncpu']} CPUs "
            f"({env.get('cpu') or 'unknown'}) · {pin}.")


def cpu_cell(r: dict[str, Any], with_proxy: bool) -> str:
    keys = ("loadgen_cpu_pct", "origin_cpu_pct") + (("proxy_cpu_pct",) if with_proxy else ())
    return " / ".join(num(r.get(k)) for k in keys) + ("" if with_proxy else " / –")


def compare_notes(d: dict[str, Any], p: dict[str, Any], key: str, hint: str) -> list[str]:
    """Remarks shared by the direct-vs-proxy tables: who the limit was, noise, errors."""
    out = []
    if d[key] < 1.2 * p[key]:
        out.append("**The load generator, not the proxy, is the limit here**: direct is barely above the "
                   f"proxy, so the ratio says little about the proxy ({hint}).")
    elif not d["limit"].startswith("no core"):
        out.append(f"Direct is limited by the client side ({d['limit']}), so the true direct rate is higher and "
                   "the real proxy / direct ratio is at most the one shown.")
    for name, r in (("direct", d), ("proxy", p)):
        if r.get("interference"):
            out.append(f"Noise warning ({name} run): " + "; ".join(r["interference"]) + ".")
    if p["errors"] or d["errors"]:
        out.append(f"Errors: direct {d.get('error_kinds')}, proxy {p.get('error_kinds')}.")
    return out


def http_section(res: dict[str, Any], key: str, title: str, proxy_label: str) -> list[str]:
    cfg, ka = res["config"], res[key]
    d, p = pick_median(ka["direct"], "rps"), pick_median(ka["proxy"], "rps")
    reps = f", median of {cfg['reps']}" if cfg["reps"] > 1 else ""
    title += (f", {cfg['concurrency']} connections, {cfg['duration']:g} s after {cfg['warmup']:g} s warm-up, "
              f"{cfg['tool']} load generator{reps}")
    out = [title, ""]
    if not d or not p:
        return out + ["(not measured)", ""]
    rows = [["requests/s", num(d["rps"]), num(p["rps"]), ratio(p["rps"], d["rps"])],
            ["latency p50 (ms)", num(d["p50_ms"]), num(p["p50_ms"]), ratio(p["p50_ms"], d["p50_ms"])],
            ["latency p99 (ms)", num(d["p99_ms"]), num(p["p99_ms"]), ratio(p["p99_ms"], d["p99_ms"])],
            ["errors", str(d["errors"]), str(p["errors"]), ""],
            ["CPU % of one core: load gen / origin / proxy", cpu_cell(d, False), cpu_cell(p, True), ""],
            ["what ran out first", d["limit"], p["limit"], ""]]
    out += table(["", "direct", proxy_label, "proxy / direct"], rows, "lrrr") + [""]
    out += compare_notes(d, p, "rps", "try `--tool wrk` or a machine with more cores")
    for name, r in (("direct", d), ("proxy", p)):
        if r.get("hit_max_requests"):
            out.append(f"The {name} run stopped at --max-requests ({cfg['max_requests']:,}) after "
                       f"{r['window_s']} s of measurement" + ("; nothing was measured." if not r["requests"] else "."))
    return out + [""]


def keepalive_section(res: dict[str, Any]) -> list[str]:
    return http_section(res, "keepalive", "## Keep-alive plain HTTP: GET /1k (1024-byte body)", "through proxy")


def reverse_section(res: dict[str, Any]) -> list[str]:
    out = http_section(res, "reverse", "## Reverse mode, keep-alive plain HTTP: origin-form GET /1k to a second "
                       "proxy started with `--mode reverse --route /=http://127.0.0.1:<origin>`",
                       "through reverse proxy")
    m = res.get("reverse_memory") or {}
    if "after_rss_mb" in m:
        out.insert(-1, f"Reverse proxy RSS: {num(m.get('idle_rss_mb'))} MB idle, {num(m['after_rss_mb'])} MB after "
                       f"its runs, peak {num(m.get('hwm_mb'))} MB (VmHWM" + (", since the end of its idle reading)."
                                                                               if m.get("hwm_reset") else ")."))
    return out


def websocket_section(res: dict[str, Any]) -> list[str]:
    cfg, ws = res["config"], res["websocket"]
    d, p = pick_median(ws["direct"], "msgs_per_s"), pick_median(ws["proxy"], "msgs_per_s")
    reps = f", median of {cfg['reps']}" if cfg["reps"] > 1 else ""
    title = (f"## WebSocket echo: {cfg['ws_connections']} connections, each sends a {cfg['ws_size']}-byte text "
             f"message and waits for its echo, {cfg['duration']:g} s after {cfg['warmup']:g} s warm-up{reps}")
    out = [title, ""]
    if not d or not p:
        return out + ["(not measured)", ""]
    rows = [["messages/s (echoed)", num(d["msgs_per_s"]), num(p["msgs_per_s"]),
             ratio(p["msgs_per_s"], d["msgs_per_s"])],
            ["round trip p50 (ms)", num(d["p50_ms"]), num(p["p50_ms"]), ratio(p["p50_ms"], d["p50_ms"])],
            ["round trip p99 (ms)", num(d["p99_ms"]), num(p["p99_ms"]), ratio(p["p99_ms"], d["p99_ms"])],
            ["handshake p50 (ms)", num(d.get("handshake_p50_ms")), num(p.get("handshake_p50_ms")), ""],
            ["connections opened / errors", f"{d['handshakes']} / {d['errors']}", f"{p['handshakes']} / {p['errors']}",
             ""],
            ["CPU % of one core: load gen / origin / proxy", cpu_cell(d, False), cpu_cell(p, True), ""],
            ["what ran out first", d["limit"], p["limit"], ""],
            ["proxy RSS before → after, peak (MB)", "",
             (f"{num(p.get('proxy_rss_before_mb'))} → {num(p.get('proxy_rss_after_mb'))}, "
              f"{num(p.get('proxy_hwm_mb'))}"), ""]]
    out += table(["", "direct", "through proxy", "proxy / direct"], rows, "lrrr") + [""]
    out += compare_notes(d, p, "msgs_per_s", "a machine with more cores helps")
    for name, r in (("direct", d), ("proxy", p)):
        if r.get("hit_max_messages"):
            out.append(f"The {name} run stopped at --ws-max-messages ({cfg['ws_max_messages']:,}) after "
                       f"{r['window_s']} s of measurement" + ("; nothing was measured." if not r["messages"] else "."))
    return out + [""]


def bulk_rows(runs: list[dict[str, Any]], direction: str) -> list[list[str]]:
    names = {"direct": "direct", "absolute": "proxy, absolute-form request", "connect": "proxy, CONNECT tunnel"}
    by_mode = {m: pick_median([r for r in runs if r["mode"] == m and r["direction"] == direction], "mb_per_s")
               for m in names}
    direct = by_mode["direct"]
    rows = []
    for mode, name in names.items():
        r = by_mode[mode]
        if r is None:
            continue
        speed = num(r["mb_per_s"]) + ("" if r["ok"] else f" (FAILED: {r['error']})")
        sampled = r.get("proxy_rss_sampled") or {}
        rows.append([name, speed, ratio(r["mb_per_s"], direct["mb_per_s"] if direct and r["ok"] else None),
                     num(r.get("proxy_cpu_pct")), num(r.get("proxy_rss_before_mb")), num(sampled.get("max_mb")),
                     num(r.get("proxy_hwm_mb"))])
    return rows


BULK_HEADER = ["path", "MB/s", "proxy / direct", "proxy CPU %", "proxy RSS before (MB)",
               "proxy RSS during, max sampled (MB)", "proxy peak RSS, VmHWM (MB)"]


def bulk_section(res: dict[str, Any]) -> list[str]:
    mb = res["config"]["bulk_mb"]
    reps = res["config"]["bulk_reps"]
    out = [f"## {mb} MB download (MB = 10^6 bytes; client reads with 1 MiB recv buffers"
           + (f"; median of {reps})" if reps > 1 else ")"), ""]
    if not res["bulk"]:
        return out + ["(not measured)", ""]
    return out + table(BULK_HEADER, bulk_rows(res["bulk"], "download"), "lrrrrrr") + [""]


def memory_section(res: dict[str, Any]) -> list[str]:
    m = res["memory"]
    per_phase = m.get("hwm_reset_per_phase")
    rows = []
    if "idle" in m:
        rows.append(["idle, 1 s after start", num(m["idle"]["rss_mb"]), num(m["idle"]["hwm_mb"])])
    if "after_keepalive" in m:
        rows.append(["after the keep-alive runs", num(m["after_keepalive"]["rss_mb"]),
                     num(m["after_keepalive"]["hwm_mb"]) + ("" if per_phase else " (since start)")])
    if "after_websocket" in m:
        rows.append(["after the WebSocket runs", num(m["after_websocket"]["rss_mb"]),
                     num(m["after_websocket"]["hwm_mb"]) + ("" if per_phase else " (since start)")])
    if "end" in m:
        rows.append(["end of run", num(m["end"]["rss_mb"]), ""])
        rows.append(["**peak over the whole run**", "", f"**{num(m.get('peak_hwm_mb'))}**"])
    out = ["## Forward proxy memory (VmRSS and VmHWM from /proc/PID/status)", ""]
    out += table(["moment", "RSS (MB)", "peak RSS, VmHWM (MB)"], rows, "lrr") + [""]
    out.append("VmHWM is reset (/proc/PID/clear_refs) at the start of each phase, so each row's peak belongs to that "
               "phase." if per_phase else "VmHWM could not be reset here, so each peak counts from the proxy's start.")
    return out + [""]


def upload_section(res: dict[str, Any]) -> list[str]:
    size = res["config"]["upload_bytes"]
    title = (f"## Large transfers: {size:,} bytes ({size / 2**30:g} GiB) of generated data, streamed "
             "(never held in memory by the client or the origin)")
    out = [title, ""]
    rows, verdicts = [], []
    for direction in ("upload", "download"):
        for row in bulk_rows(res["upload"], direction):
            rows.append([f"{direction}: {row[0]}"] + row[1:])
    for r in res["upload"]:
        if r["mode"] == "direct":
            continue
        growth = (r.get("proxy_hwm_mb") or 0) - (r.get("proxy_rss_before_mb") or 0)
        if r.get("rss_guard"):
            verdicts.append(f"{r['direction']} {r['mode']}: NOT bounded, stopped: {r['rss_guard']}")
        elif not r["ok"]:
            verdicts.append(f"{r['direction']} {r['mode']}: failed ({r['error']}), memory verdict not possible")
        else:
            word = "bounded" if growth < BOUNDED_GROWTH_MB else "NOT bounded"
            verdicts.append(f"{r['direction']} {r['mode']}: {word} (peak {growth:+.1f} MB over the RSS before)")
    out += table(BULK_HEADER, rows, "lrrrrrr") + [""]
    out.append("Memory: " + "; ".join(verdicts) + ".")
    return out + [""]
