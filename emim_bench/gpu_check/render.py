"""The gpu-check report as Markdown (``gpu_check.md``; the JSON holds the same numbers)."""

from __future__ import annotations

from typing import Any

from emim_bench.bench.render import LABELS


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f} MiB"


def _num(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def render_markdown(result: dict[str, Any]) -> str:
    """The whole report: what ran where, the per-method training table, the benchmark's
    headline and the DDP check."""
    env = result["environment"]
    dev = env["device"]
    cuda = result["mode"] == "cuda"
    title = f"GPU check: {dev.get('gpu')}" if cuda else "GPU check: CPU rehearsal (--cpu)"
    budget = result["budget_s"]
    within = "within" if result["duration_s"] <= budget else "**over**"
    git = env["git"]
    tree = "" if git["dirty"] is None else f" (working tree {'dirty' if git['dirty'] else 'clean'})"
    lines = [
        f"# {title}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"- result: **{result['status']}**",
        f"- created (UTC): {result['created_utc']}; wall time {result['duration_s']:.0f} s, "
        f"{within} the {budget / 60:.0f}-minute budget",
        f"- device: {dev['kind']}"
        + (f" -- {dev['gpu']} (CUDA {dev['cuda']})" if cuda else "")
        + f"; {dev['cpu_count']} CPUs ({dev['cpu']})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"- git commit: {git['commit'] or 'none'}{tree}",
    ]
    if not cuda:
        lines += [
            "",
            "A rehearsal of the GPU check's code path at toy sizes on the CPU (64 images, batch "
            "16, 64-64-32 projectors, the ImageNet stem): its numbers test the machinery, they "
            "say nothing about GPU speed.",
        ]
    lines += ["", *_training_section(result), "", *_bench_section(result)]
    lines += ["", *_ddp_section(result.get("ddp") or {})]
    return "\n".join(lines) + "\n"


def _training_section(result: dict[str, Any]) -> list[str]:
    rows = result["training"]
    done = [r for r in rows if r["status"] == "done"]
    lines = [
        "## Training: 2 epochs per method",
        "",
        "Each method trained with `emim-bench pretrain "
        + " ".join(result["training_overrides"])
        + " method=M` (evaluation included), in a scratch runs folder. Images/s and the loader "
        "share are over the steps of the last epoch after its first: the device is "
        "synchronised at the start and the end of each step and nowhere else, a step's time "
        "runs from start to end, and the loader share is the time from one step's end to the "
        "next one's start (the next batch, its copy to the device, Lightning's per-step work) "
        "over the sum of both. Peak GPU memory is torch's peak allocation over the run; the "
        "whole-run images/s is results.json's (validation included).",
    ]
    if done:
        settings = done[0]["settings"]
        lines += [
            "",
            f"Trainer settings (resolved): precision {settings['precision']}, channels_last "
            f"{settings['channels_last']}, cudnn_benchmark {settings['cudnn_benchmark']}, "
            f"pin_memory {settings['pin_memory']}, persistent_workers "
            f"{settings['persistent_workers']}, num_workers {settings['num_workers']}, "
            f"finite_check_every {settings['finite_check_every']}.",
        ]
    body = [
        [
            LABELS.get(r["method"], r["method"]),
            _num(r.get("images_per_s")),
            _num(r.get("loader_share"), ".3f"),
            _mib(r.get("peak_gpu_memory_bytes")),
            _mib(r.get("peak_rss_bytes")),
            r.get("steps_timed", "-"),
            _num(r.get("run_images_per_s")),
            _num(r.get("wall_s"), ".0f"),
            _num(r.get("knn_acc1")),
            r["status"] + (f": {r['reason']}" if r.get("reason") else ""),
        ]
        for r in rows
    ]
    header = [
        "method",
        "images/s",
        "loader share",
        "peak GPU memory",
        "peak RSS",
        "steps timed",
        "whole-run images/s",
        "run s",
        "kNN acc@1 (2 epochs)",
        "status",
    ]
    return [*lines, "", *_table(header, body)]


def _bench_section(result: dict[str, Any]) -> list[str]:
    bench = result.get("bench") or {}
    lines = ["## Speed benchmark", ""]
    if bench.get("status") != "done":
        return [*lines, f"Not run: {bench.get('reason', 'unknown')}."]
    lines.append(
        f"`emim-bench bench` on this device, in the trainer's settings for it: "
        f"[{bench['markdown']}]({bench['markdown']}) (and `.json`). Training step, "
        "images/s per method:"
    )
    lines += [
        "",
        *_table(
            ["method", "images/s"],
            [[LABELS.get(m, m), _num(v)] for m, v in bench["step_images_per_s"].items()],
        ),
    ]
    lines.append("")
    for target in bench["targets"]:
        lines.append(
            f"- {target['target']}: {_num(target['ratio'], '.3f')} "
            f"(>= {target['threshold']:.2f}: {target['status']})"
        )
    return lines


def _ddp_section(ddp: dict[str, Any]) -> list[str]:
    lines = ["## DDP: EMIM's loss at step 0, 2 processes against 1", ""]
    if ddp.get("status") == "skipped":
        return [*lines, f"Skipped: {ddp['reason']}."]
    if ddp.get("loss_per_process") is None:
        return [*lines, f"**{ddp.get('status')}**: {ddp.get('reason')}."]
    return [
        *lines,
        f"Two {ddp['backend']} processes of {ddp['batch_per_process']} images each against one "
        f"process of {2 * ddp['batch_per_process']} (the same weights and images; BatchNorm in "
        "eval mode, float32 without TF32): EMIM's loss "
        f"{ddp['loss_one_process']:.6f} nats in one process, "
        + ", ".join(f"{x:.6f}" for x in ddp["loss_per_process"])
        + f" in the two; largest difference {ddp['loss_difference']:.2e} (tolerance "
        f"{ddp['loss_tolerance']:.0e} x max(1, |loss|)); gradients differ by at most "
        f"{ddp['grad_difference']:.2e} of the largest gradient (tolerance "
        f"{ddp['grad_tolerance']:.0e}): **{ddp['status']}**"
        + (f" ({ddp['reason']})" if ddp.get("reason") else "")
        + ".",
    ]
