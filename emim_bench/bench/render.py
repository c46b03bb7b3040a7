"""The benchmark's ratio tables, targets and markdown, and its result files."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emim_bench.bench.loss import LOSS_METHODS, emim_auto_form
from emim_bench.bench.step import step_method_kwargs
from emim_bench.bench.timing import BUSY_CPUS, busy

LABELS = {
    "emim": "EMIM",
    "emim_primal": "EMIM primal",
    "emim_dual": "EMIM dual",
    "barlow_twins": "Barlow Twins",
    "vicreg": "VICReg",
    "simclr": "SimCLR",
    "byol": "BYOL",
}
# Targets, as speed ratios EMIM / Barlow Twins (higher = EMIM faster), EMIM in the form auto
# picks: its loss at most 2x Barlow Twins' in every cell of the loss table, and no slower
# where D >= 1024; its training step at least 0.95x Barlow Twins' images/s.
LOSS_TARGET_WIDE_D = 1024
LOSS_TARGET_NARROW = 0.5  # cells with D < LOSS_TARGET_WIDE_D
LOSS_TARGET_WIDE = 1.0  # cells with D >= LOSS_TARGET_WIDE_D
STEP_TARGET = 0.95


def _target(name: str, ratio: float | None, threshold: float, detail: str) -> dict[str, Any]:
    """One target row: PASS when ``ratio >= threshold``, MISS (with by how much) otherwise."""
    if ratio is None:
        status = "NOT MEASURED"
    elif ratio >= threshold:
        status = "PASS"
    else:
        status = f"MISS by {100 * (1 - ratio / threshold):.1f}%"
    return {
        "target": name,
        "ratio": ratio,
        "threshold": threshold,
        "status": status,
        "detail": detail,
    }


def _worst_cell_target(vs_barlow: list[dict[str, Any]], wide: bool) -> dict[str, Any]:
    """The loss target over the cells with D >= 1024 (``wide``) or D < 1024: the smallest
    ratio t_barlow / t_emim (EMIM in the form auto picks) among them against its threshold."""
    cells = [e for e in vs_barlow if (e["d"] >= LOSS_TARGET_WIDE_D) == wide and e["auto"]]
    worst = min(cells, key=lambda e: e["auto"], default=None)
    where = f"D >= {LOSS_TARGET_WIDE_D}" if wide else f"D < {LOSS_TARGET_WIDE_D}"
    detail = "t_barlow / t_emim, EMIM in the form auto picks; slowest cell"
    if worst is not None:
        detail += f": N={worst['n']}, D={worst['d']} ({worst['auto_form']})"
    return _target(
        f"loss speed EMIM / Barlow Twins, every cell with {where}",
        None if worst is None else worst["auto"],
        LOSS_TARGET_WIDE if wide else LOSS_TARGET_NARROW,
        detail,
    )


def ratio_tables(
    loss_rows: list[dict[str, Any]], step_rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Ratio tables and targets from measured timings (a pure function).

    Args:
        loss_rows: rows of :func:`bench_loss` (``method``, ``n``, ``d``, ``median_s``).
        step_rows: rows of :func:`bench_steps` (``method``, ``images_per_s``).

    Returns:
        ``loss_vs_fastest``: per (N, D) cell, each method's time / the cell's
        fastest time (1.0 = fastest); ``loss_emim_vs_barlow``: per cell, the
        speed ratio ``t_barlow / t_emim`` of each EMIM form and of the form
        ``auto`` picks (> 1: EMIM faster); ``step_vs_fastest``: each method's
        images/s / the fastest's; ``step_emim_vs_barlow``: EMIM's images/s /
        Barlow Twins'; ``targets``: the loss targets (the slowest cell with
        D < 1024 against 0.5, the slowest with D >= 1024 against 1.0) and the
        step target, each with its ratio and PASS/MISS.
    """
    cells: dict[tuple[int, int], dict[str, float]] = {}
    for row in loss_rows:
        cells.setdefault((row["n"], row["d"]), {})[row["method"]] = row["median_s"]
    loss_vs_fastest, loss_emim_vs_barlow = [], []
    for (n, d), t in sorted(cells.items()):
        fastest = min(t.values())
        loss_vs_fastest.append({"n": n, "d": d, **{m: s / fastest for m, s in t.items()}})
        if "barlow_twins" in t:
            entry = {"n": n, "d": d, "auto_form": emim_auto_form(n, d)}
            for form in ("primal", "dual"):
                if f"emim_{form}" in t:
                    entry[form] = t["barlow_twins"] / t[f"emim_{form}"]
            entry["auto"] = entry.get(entry["auto_form"])
            loss_emim_vs_barlow.append(entry)

    ips = {row["method"]: row["images_per_s"] for row in step_rows}
    step_vs_fastest = {m: v / max(ips.values()) for m, v in ips.items()} if ips else {}
    step_ratio = (
        ips["emim"] / ips["barlow_twins"] if {"emim", "barlow_twins"} <= ips.keys() else None
    )

    targets = [
        _worst_cell_target(loss_emim_vs_barlow, wide=False),
        _worst_cell_target(loss_emim_vs_barlow, wide=True),
        _target(
            "training step images/s EMIM / Barlow Twins",
            step_ratio,
            STEP_TARGET,
            "same ResNet-18 backbone and 2048-2048-2048 projector",
        ),
    ]
    return {
        "loss_vs_fastest": loss_vs_fastest,
        "loss_emim_vs_barlow": loss_emim_vs_barlow,
        "step_vs_fastest": step_vs_fastest,
        "step_emim_vs_barlow": step_ratio,
        "targets": targets,
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def render_tables(result: dict[str, Any]) -> str:
    """The targets and the ratio tables of ``result`` as Markdown (also printed by the CLI)."""
    ratios = result["ratios"]
    lines = ["## Targets (speed ratios, higher = EMIM faster)", ""]
    lines += _table(
        ["target", "ratio", "threshold", "result", "how"],
        [
            (
                t["target"],
                _fmt(t["ratio"], ".3f"),
                f">= {t['threshold']:.2f}",
                t["status"],
                t["detail"],
            )
            for t in ratios["targets"]
        ],
    )
    if ratios["loss_emim_vs_barlow"]:
        lines += [
            "",
            "## Loss: EMIM / Barlow Twins speed (t_barlow / t_emim; > 1 = EMIM faster)",
            "",
        ]
        lines += _table(
            ["N", "D", "EMIM primal", "EMIM dual", "auto form", "EMIM auto"],
            [
                (
                    e["n"],
                    e["d"],
                    _fmt(e.get("primal")),
                    _fmt(e.get("dual")),
                    e["auto_form"],
                    _fmt(e["auto"]),
                )
                for e in ratios["loss_emim_vs_barlow"]
            ],
        )
    if ratios["loss_vs_fastest"]:
        methods = [m for m in LOSS_METHODS if m in ratios["loss_vs_fastest"][0]]
        lines += ["", "## Loss: time / fastest time in the cell (1.00 = fastest)", ""]
        lines += _table(
            ["N", "D", *(LABELS[m] for m in methods)],
            [
                (e["n"], e["d"], *(_fmt(e.get(m)) for m in methods))
                for e in ratios["loss_vs_fastest"]
            ],
        )
    if ratios["step_vs_fastest"]:
        lines += ["", "## Training step: images/s / fastest images/s", ""]
        lines += _table(
            ["method", "ratio to fastest"],
            [(LABELS[m], _fmt(v)) for m, v in ratios["step_vs_fastest"].items()],
        )
        lines += ["", f"EMIM / Barlow Twins images/s: {_fmt(ratios['step_emim_vs_barlow'], '.3f')}"]
    if result.get("log_volume"):
        lines += ["", *_log_volume_table(result["log_volume"])]
    return "\n".join(lines)


def _log_volume_table(rows: list[dict[str, Any]]) -> list[str]:
    """What Lightning's CSV log writes over a 1000-epoch CIFAR run, per logging interval."""
    first = rows[0]
    return [
        f"## Lightning CSV log of a {first['epochs']}-epoch CIFAR run "
        f"({first['steps_per_epoch']} steps per epoch)",
        "",
        "Simulated (emim_bench/bench/logs.py): the logger rewrites metrics.csv whole every 100 "
        "steps, so what it writes grows with the square of the run's length.",
        "",
        *_table(
            ["log_every_n_steps", "rows", "final file", "written over the run"],
            [
                (
                    r["log_every_n_steps"],
                    r["rows"],
                    f"{r['final_file_bytes'] / 2**20:.1f} MiB",
                    f"{r['bytes_written'] / 2**30:.2f} GiB",
                )
                for r in rows
            ],
        ),
    ]


def _flag(row: dict[str, Any]) -> str:
    """ "*" when other processes used more than ``BUSY_CPUS`` while ``row`` was timed."""
    return "*" if busy(row.get("other_cpus")) else ""


def _loss_time_table(rows: list[dict[str, Any]]) -> list[str]:
    """Median milliseconds per forward + backward, one row per (N, D), one column per loss."""
    cells: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["n"], row["d"]), {})[row["method"]] = row
    methods = [m for m in LOSS_METHODS if any(m in c for c in cells.values())]
    body = [
        (
            n,
            d,
            *(
                f"{1e3 * c[m]['median_s']:.2f} ({c[m]['repeats']}){_flag(c[m])}" if m in c else "-"
                for m in methods
            ),
        )
        for (n, d), c in sorted(cells.items())
    ]
    return _table(["N", "D", *(LABELS[m] for m in methods)], body)


def render_markdown(result: dict[str, Any]) -> str:
    """The whole report: command, device, versions, settings, timings, ratio tables, targets."""
    env, settings = result["environment"], result["settings"]
    dev = env["device"]
    device = dev.get("gpu") or dev["cpu"]
    git = env["git"]
    lines = [
        f"# Speed benchmark: {dev['kind']}",
        "",
        f"Command: `{result['command']}`"
        + (" (run by `make bench`)" if result["via_make"] else ""),
        "",
        f"- process argv: `{shlex.join(result['argv'])}`",
        f"- created (UTC): {result['created_utc']}; wall time {result['duration_s']:.0f} s",
        f"- device: {dev['kind']} -- {device}; {dev['cpu_count']} CPUs, "
        f"{dev['torch_threads']} torch threads",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"- git commit: {git['commit'] or 'none (no commit yet)'}"
        + (
            ""
            if git["dirty"] is None
            else f" (working tree {'dirty' if git['dirty'] else 'clean'})"
        ),
        "- source sha256: " + ", ".join(f"{k} {v[:12]}" for k, v in env["source_sha256"].items()),
        "- other processes' CPU use during the run (waits for quiet included): "
        f"{_fmt(result.get('other_cpus'))} CPUs "
        f"on average; load average (1/5/15 min) at start {result['load_average_start']}, "
        f"at end {result['load_average_end']}",
        *_busy_warning(result),
        "",
        render_tables(result),
    ]
    if result["loss"]:
        lines += [
            "",
            "## Loss: median ms per forward + backward (timed repeats)",
            "",
            "Random float32 views z1, z2 of shape (N, D) with requires_grad; median after warm-up "
            f"(at least {settings['loss_policy']['min_repeats']} repeats, more while under "
            f"{settings['loss_policy']['budget_s']} s per cell). EMIM eps 1e-2, standardised; "
            "baselines are solo-learn's loss functions with their CIFAR recipes; BYOL's loss is "
            "symmetrised (two pairs). In brackets: timed repeats. Cells timed again because "
            "other processes used the CPUs meanwhile: "
            f"{sum(r.get('attempts', 1) > 1 for r in result['loss'])}; "
            "* marks a cell still disturbed.",
            "",
            *_loss_time_table(result["loss"]),
        ]
    if result["step"]:
        stem = (
            "CIFAR (3x3 conv, no max-pool)"
            if settings["cifar_stem"]
            else "ImageNet (7x7/2 + max-pool)"
        )
        lines += [
            "",
            "## Training step",
            "",
            f"ResNet-18 with the {stem} stem, {settings['image_size']} px, batch "
            f"{settings['batch_size']} source images x 2 views; images/s counts source images "
            "(views/s = 2x). One step = the method's `training_step` + backward + optimizer "
            "step (`budget=cpu`'s Adam; + EMA update for BYOL), outside a Trainer; "
            f"median of {settings['steps']} timed steps "
            f"after {settings['warmup_steps']} warm-up steps, methods interleaved round-robin. "
            "Rounds discarded and run again because other processes used the CPUs meanwhile: "
            f"{result['step'][0].get('discarded_rounds', 0)}; * marks a disturbed row.",
            *_step_device_line(settings.get("step_device")),
            "",
            *_table(
                ["method", "projector (hidden -> out)", "ms / step", "images/s", "views/s"],
                [
                    (
                        LABELS[r["method"]],
                        _projector_label(r["method"]),
                        f"{1e3 * r['median_s']:.1f}",
                        f"{r['images_per_s']:.1f}{_flag(r)}",
                        f"{r['views_per_s']:.1f}",
                    )
                    for r in result["step"]
                ],
            ),
        ]
    return "\n".join(lines) + "\n"


def _step_device_line(device: dict[str, Any] | None) -> list[str]:
    """The trainer settings the training step ran in (none for results made before them)."""
    if not device:
        return []
    memory = "channels-last" if device["channels_last"] else "contiguous (NCHW)"
    return [
        "",
        f"The step runs as the trainer runs it on this device (`emim_bench/run/device.py`): "
        f"precision {device['precision']}"
        + {"16": " (float16 autocast, gradient scaler)", "bf16": " (bfloat16 autocast)"}.get(
            device["precision"], ""
        )
        + f", {memory} memory format, cudnn.benchmark "
        + ("on" if device["cudnn_benchmark"] else "off")
        + ".",
    ]


def _busy_warning(result: dict[str, Any]) -> list[str]:
    """A warning line when timings were disturbed by other processes (marked * in the tables)."""
    disturbed = sum(busy(r.get("other_cpus")) for r in result["loss"] + result["step"])
    if not disturbed:
        return []
    return [
        "",
        f"**Warning:** timings marked * ({disturbed}) ran while other processes used more "
        f"than {BUSY_CPUS} CPUs on average, even after re-timing; they are not reliable.",
    ]


def _projector_label(name: str) -> str:
    p = step_method_kwargs(name, batch_size=2)
    label = f"{p['proj_hidden_dim']} -> {p['proj_output_dim']}"
    return label + (f", predictor {p['pred_hidden_dim']}" if "pred_hidden_dim" in p else "")


def report_stem(device_kind: str, quick: bool, only: str | None) -> str:
    """File stem of a report: the device kind, plus ``-quick``/``-loss``/``-step`` if partial.

    A full run writes ``cpu.json``; a smoke or partial run never overwrites it.
    """
    return device_kind + ("-quick" if quick else "") + (f"-{only}" if only else "")


def write_report(result: dict[str, Any], out_dir: str | Path, stem: str) -> tuple[Path, Path]:
    """Write ``result`` as ``<out_dir>/<stem>.json`` and ``<stem>.md``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(render_markdown(result))
    return json_path, md_path
