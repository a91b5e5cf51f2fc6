"""What more training buys: pooled fluid Dice against the training budget, from bench/quality.py's results.

    python bench/quality_curve.py [--out work/quality] [--dataset real] [--configs improved_strips,...]
                                  [--png docs/quality_budget.png]

Reads every result JSON under ``--out`` (as ``bench/quality.py --table-only`` does, runs made fold by fold joined),
keeps those of ``--configs`` on ``--dataset`` trained without a wall-clock cap, and draws per config the pooled
fluid Dice of each seed (dots) and their mean (a line) against the budget in epochs (an ensemble's: its models'
epochs summed, so it sits at the work it cost), each budget labelled with the mean training minutes per fold and
the machine the runs trained on. Prints the points as a Markdown table.
Exit status 1 when no result matches.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DEFAULT_OUT, REPO, load_results  # noqa: E402


def curve_points(results: list[dict], dataset: str, configs: list[str]) -> dict[str, dict[int, list[dict]]]:
    """Config -> epochs -> the runs (``seed``, ``dice``, ``minutes``, ``machine``) at that budget, uncapped runs of
    ``dataset`` only; an ensemble's epochs are its models' summed."""
    points: dict[str, dict[int, list[dict]]] = {config: defaultdict(list) for config in configs}
    for result in results:
        if (result["dataset"] != dataset or result["config"] not in points or result.get("budget_minutes")
                or result.get("smoke") or "epochs" not in result or result["pooled"]["dice_pooled"] is None):
            continue
        # an ensemble's budget is its models' together (2 models of 15 epochs: 30), as are its minutes
        budget = result["epochs"] * max(1, len(result.get("ensemble_seeds") or []))
        points[result["config"]][budget].append({
            "seed": result["seed"], "dice": result["pooled"]["dice_pooled"],
            "minutes": result["pooled"]["train_minutes_per_fold_mean"], "machine": result.get("machine", "?")})
    return {config: dict(sorted(by_epochs.items())) for config, by_epochs in points.items() if by_epochs}


def draw(points: dict[str, dict[int, list[dict]]], png: Path, title: str) -> None:
    """The curve as a PNG (written to a temporary name, then renamed)."""
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for config, by_epochs in points.items():
        epochs = list(by_epochs)
        means = [sum(run["dice"] for run in runs) / len(runs) for runs in by_epochs.values()]
        line, = axes.plot(epochs, means, marker="o", label=config)
        for budget, runs in by_epochs.items():
            axes.scatter([budget] * len(runs), [run["dice"] for run in runs], color=line.get_color(), s=14,
                         alpha=0.6)
            minutes = sum(run["minutes"] for run in runs) / len(runs)
            axes.annotate(f"{minutes:.0f} min", (budget, max(run["dice"] for run in runs)), fontsize=7,
                          textcoords="offset points", xytext=(0, 6), ha="center", color=line.get_color())
    axes.margins(x=0.08, y=0.15)  # room for the minute labels
    axes.set_xlim(left=0)
    axes.set_xlabel("training per fold (epochs of 50 batches; an ensemble: its models' together)")
    axes.set_ylabel("pooled fluid Dice, both folds")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(png.name + ".tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    tmp.replace(png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / DEFAULT_OUT, help="bench/quality.py's --out")
    parser.add_argument("--dataset", default="real", choices=("real", "synthetic"))
    parser.add_argument("--configs", default="improved_strips", help="comma-separated config names")
    parser.add_argument("--png", type=Path, default=REPO / "docs" / "quality_budget.png")
    args = parser.parse_args(argv)
    results, errors = load_results(args.out)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    configs = [name.strip() for name in args.configs.split(",") if name.strip()]
    points = curve_points(results, args.dataset, configs)
    if not points:
        print(f"error: no uncapped {args.dataset} result of {', '.join(configs)} under {args.out}", file=sys.stderr)
        return 1
    machines = sorted({run["machine"] for by_epochs in points.values() for runs in by_epochs.values()
                       for run in runs})
    draw(points, args.png, f"{args.dataset} set, seeds as dots, their mean as the line; {' / '.join(machines)}")
    print("| config | epochs | seeds | pooled Dice per seed | mean | train min/fold |\n|---|---|---|---|---|---|")
    for config, by_epochs in points.items():
        for budget, runs in by_epochs.items():
            dice = [run["dice"] for run in runs]
            print(f"| {config} | {budget} | {len(runs)} | {' / '.join(f'{d:.3f}' for d in dice)} | "
                  f"{sum(dice) / len(dice):.3f} | {sum(run['minutes'] for run in runs) / len(runs):.1f} |")
    print(f"\n{args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
