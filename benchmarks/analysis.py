"""From raw records to derived figures: floors, loss checks, rnn_jax-vs-peer ratios.

The reference of every loss check is rnn_jax's ``default`` variant of the same
workload (W5: ``vmap``; MEM: the same T). Every other framework and variant ran
the same function on the same weights and data, so their losses must agree to
:data:`LOSS_RTOL`.
"""

from __future__ import annotations

from typing import Optional

LOSS_RTOL = 1e-5
TIMED = ("W1", "W2", "W3", "W4", "W5")


def merge_rounds(records: list) -> list:
    """One record per (workload, framework, variant, T) from the records of several rounds
    (``--rounds``): the timed calls of all rounds pooled, their statistics recomputed; the
    first call and loss of the first round. A measurement that failed in any round stays
    failed. Records without ``times_s`` (memory, compile, MM, LIN) pass through unchanged."""
    import statistics

    merged, order = {}, []
    for rec in records:
        key = (rec.get("workload"), rec.get("framework"), rec.get("variant"), (rec.get("config") or {}).get("time"))
        if "times_s" not in rec and rec.get("status") == "ok":
            order.append(rec)
            continue
        if key not in merged:
            merged[key] = dict(rec, rounds=1)
            order.append(merged[key])
            continue
        into = merged[key]
        into["rounds"] += 1
        if into.get("status") != "ok":
            continue
        if rec.get("status") != "ok":
            rounds = into["rounds"]
            into.clear()
            into.update(rec, rounds=rounds)
            continue
        faults = into["minflt_per_call"] * into["repeats"] + rec["minflt_per_call"] * rec["repeats"]
        times = into["times_s"] + rec["times_s"]
        into.update(times_s=times, repeats=len(times), median_s=statistics.median(times), min_s=min(times),
                    max_s=max(times), mean_s=statistics.fmean(times), minflt_per_call=faults / len(times))
    return order


def matmul_rate(records: list) -> Optional[float]:
    for rec in records:
        if rec.get("workload") == "MM" and rec.get("status") == "ok":
            return rec["flops_per_s"]
    return None


def add_floors(records: list, rate: Optional[float]) -> None:
    """``floor_s`` = the record's matrix FLOPs at the device's matrix-product rate; ``x_floor`` = median / floor."""
    if not rate:
        return
    for rec in records:
        if rec.get("status") == "ok" and rec.get("flops") and rec.get("median_s") and rec.get("workload") != "MM":
            rec["floor_s"] = rec["flops"] / rate
            rec["x_floor"] = rec["median_s"] / rec["floor_s"]


def _reference_key(rec: dict) -> tuple:
    time = (rec.get("config") or {}).get("time") if rec["workload"] == "MEM" else None
    return rec["workload"], time


def _is_reference(rec: dict) -> bool:
    if rec.get("framework") != "rnn_jax" or rec.get("status") != "ok":
        return False
    return rec.get("variant") == ("vmap" if rec["workload"] == "W5" else "default")


def loss_checks(records: list, rtol: float = LOSS_RTOL) -> list:
    """Compare every loss with rnn_jax's on the same workload; annotate records with ``loss_rel_diff``.

    LIN records carry their own check (sequential against parallel scan).
    """
    refs = {_reference_key(r): r for r in records if _is_reference(r) and r.get("loss") is not None}
    checks = []
    for rec in records:
        if rec.get("status") != "ok":
            continue
        if rec["workload"] == "LIN":
            if rec.get("agrees") is not None and rec["config"]["pass"] == "forward":
                checks.append(
                    {
                        "workload": "LIN",
                        "what": f"{rec['config']['method']} vs scan, T={rec['config']['time']}, width={rec['config']['width']}",
                        "rel_diff": max(rec["rel_err_h"], rec["rel_err_grad_x"]),
                        "tolerance": 1e-5,
                        "ok": rec["agrees"],
                    }
                )
            continue
        ref = refs.get(_reference_key(rec))
        if ref is None or rec.get("loss") is None or rec is ref:
            continue
        rel = abs(rec["loss"] - ref["loss"]) / max(abs(ref["loss"]), 1e-30)
        rec["loss_rel_diff"] = rel
        checks.append(
            {
                "workload": rec["workload"] + (f" T={ref['config']['time']}" if rec["workload"] == "MEM" else ""),
                "what": f"{rec['framework']} {rec['variant']} vs rnn_jax {ref['variant']}",
                "loss": rec["loss"],
                "reference_loss": ref["loss"],
                "rel_diff": rel,
                "tolerance": rtol,
                "ok": bool(rel <= rtol),
            }
        )
    return checks


def _label(rec: dict) -> str:
    return f"{rec['framework']} ({rec['variant']})"


def summary(records: list) -> list:
    """Per timed workload: rnn_jax's default and best variant against the best peer.

    Peers are the other frameworks (plain JAX included); for W5 the subject is the
    vmapped step and the peers are the Python loops (jitted rnn_jax step; PyTorch).
    """
    rows = []
    for workload in TIMED:
        ok = [r for r in records if r["workload"] == workload and r.get("status") == "ok" and r.get("median_s")]
        if not ok:
            continue
        if workload == "W5":
            ours = [r for r in ok if r["framework"] == "rnn_jax" and r["variant"] == "vmap"]
            peers = [r for r in ok if not (r["framework"] == "rnn_jax" and r["variant"] == "vmap")]
        else:
            ours = [r for r in ok if r["framework"] == "rnn_jax"]
            peers = [r for r in ok if r["framework"] != "rnn_jax"]
        default = next((r for r in ours if _is_reference(r)), None)
        best = min(ours, key=lambda r: r["median_s"], default=None)
        peer = min(peers, key=lambda r: r["median_s"], default=None)
        row = {"workload": workload, "config": (default or best or peer).get("config")}
        if default:
            row["rnn_jax_default_s"] = default["median_s"]
            row["floor_s"] = default.get("floor_s")
        if best:
            row["rnn_jax_best_s"], row["rnn_jax_best_variant"] = best["median_s"], best["variant"]
        if peer:
            row["best_peer_s"], row["best_peer"] = peer["median_s"], _label(peer)
        if default and peer:
            row["ratio_default_to_best_peer"] = default["median_s"] / peer["median_s"]
        if best and peer:
            row["ratio_best_to_best_peer"] = best["median_s"] / peer["median_s"]
        per_framework = {}
        for r in peers:
            key = r["framework"] if workload != "W5" else _label(r)
            if key not in per_framework or r["median_s"] < per_framework[key]["median_s"]:
                per_framework[key] = r
        if default:
            row["ratio_default_to_each_peer"] = {k: default["median_s"] / r["median_s"] for k, r in sorted(per_framework.items())}
        rows.append(row)
    return rows
