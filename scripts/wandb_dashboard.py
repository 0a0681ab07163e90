"""The Table 1 dashboard as code: a W&B report for a project's runs, built with wandb's own report library
(wandb-workspaces; `pip install -e .[dashboard]`).

    python scripts/wandb_dashboard.py --project gsam                       # save the report, print its URL
    python scripts/wandb_dashboard.py --project gsam --entity ME --group sweep-1 --title "Table 1, sweep 1"
    python scripts/wandb_dashboard.py --project gsam --entity ME --dry-run # build it, print what it plots

The report: the runs grouped by model and method (config model.short and sam.name); the training curves the
trainer logs (f, f_p, h = f_p - f, rho_t, lr, and the periodic val top-1); then one row per Table 1 column (ImageNet,
ReaL, V2, R, C): our runs' top-1 from their wandb summary (``table1/<column>``, written by the trainer at the end)
beside the GSAM paper's number for the same model and method. Saving needs a logged-in wandb (`wandb login`) and
the runs synced (`wandb sync <run>/wandb/offline-run-*` for offline runs); nothing is saved with --dry-run.
Every key plotted here is checked against the keys of a real training run (tests/test_dashboard.py), so a key
renamed in the trainer fails that test instead of leaving an empty panel.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsam.evaluation.table1 import COLUMNS, HEADERS, SAM_NOTE  # noqa: E402
from gsam.evaluation.tables import TABLE1_METHODS, TABLE1_MODELS, paper_table1  # noqa: E402

# (panel title, the history key train.py logs: "<kind>/<metric>", gsam/runlog.py RunLogger.log)
CURVES = (("f: the loss at w", "train/loss"), ("f_p: the loss at the perturbed w", "train/perturbed_loss"),
          ("h = f_p - f: the surrogate gap (Eq. 4)", "train/surrogate_gap"), ("rho_t", "train/rho"),
          ("lr", "train/lr"), ("val top-1 (%) during training", "val/top1"))
GROUP_BY = ("model.short", "sam.name")  # config keys: a run's model and method (sam.name none = vanilla)
# Table 1's columns with a paper number; r_masked (ImageNet-R over its 200 classes) has none (docs/data.md)
PAPER_COLUMNS = tuple(c for c in COLUMNS if c != "r_masked")
METHOD_TITLES = {"vanilla": "vanilla", "sam": "SAM †", "gsam": "GSAM", "xsam": "XSAM"}


def summary_key(column: str) -> str:
    """The wandb summary key of a Table 1 column (gsam/run/finish.py table1_summary)."""
    return f"table1/{column}"


def plotted_keys() -> dict[str, list[str]]:
    """Every key the report reads: history (curves), summary (bars) and config (grouping)."""
    return {"history": [key for _, key in CURVES], "summary": [summary_key(c) for c in PAPER_COLUMNS],
            "config": list(GROUP_BY)}


def paper_markdown(column: str) -> str:
    """The GSAM paper's Table 1 numbers of one column, a model per row and a method per column (XSAM is not in
    the paper: its cells are empty)."""
    paper = paper_table1()
    lines = [f"**The paper's {HEADERS[column]} top-1 (%)**", "",
             "| model | " + " | ".join(METHOD_TITLES[m] for m in TABLE1_METHODS) + " |",
             "|---|" + "---|" * len(TABLE1_METHODS)]
    for model in TABLE1_MODELS:
        cells = [paper.get((model, m), {}).get(column) for m in TABLE1_METHODS]
        lines.append(f"| {model} | " + " | ".join("" if v is None else f"{v:.1f}" for v in cells) + " |")
    return "\n".join(lines)


def build_report(project: str, entity: str | None = None, group: str | None = None,
                 title: str = "Table 1: vanilla, SAM, GSAM and XSAM"):
    """The report (wandb_workspaces.reports.v2.Report), built and not saved. ``group``: only the runs of that
    wandb group (logger.wandb.group). ``entity`` None: wandb's default entity, which asks the server."""
    import wandb_workspaces.reports.v2 as wr

    who = {"project": project} if entity is None else {"project": project, "entity": entity}

    def runset(name: str):
        return wr.Runset(**who, name=name, groupby=[f"config.{k}" for k in GROUP_BY],
                         filters=f"Group = '{group}'" if group else "")

    curves = wr.PanelGrid(runsets=[runset("runs by model and method")], panels=[
        wr.LinePlot(title=name, x="Step", y=[key], groupby_aggfunc="mean", groupby_rangefunc="minmax",
                    layout=wr.Layout(w=8, h=6)) for name, key in CURVES])
    blocks = [wr.H1("Training curves"),
              wr.P("Runs grouped by model and method; the mean of a group's seeds, its range shaded."), curves,
              wr.H1("Top-1 per evaluation set, ours beside the paper's"), wr.MarkdownBlock(SAM_NOTE)]
    for column in PAPER_COLUMNS:
        bars = wr.BarPlot(title=f"{HEADERS[column]} top-1 (%), ours", metrics=[wr.SummaryMetric(summary_key(column))],
                          groupby_aggfunc="mean", groupby_rangefunc="minmax", layout=wr.Layout(x=0, w=12, h=10))
        paper = wr.MarkdownPanel(markdown=paper_markdown(column), layout=wr.Layout(x=12, w=12, h=10))
        blocks += [wr.H2(HEADERS[column]), wr.PanelGrid(runsets=[runset(f"{HEADERS[column]}")], panels=[bars, paper])]
    return wr.Report(**who, title=title, blocks=blocks,
                     description="Built by scripts/wandb_dashboard.py from the keys train.py logs.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", required=True, help="the wandb project (logger.wandb.project)")
    ap.add_argument("--entity", help="the wandb entity (default: your default entity)")
    ap.add_argument("--group", help="only the runs of this wandb group (logger.wandb.group)")
    ap.add_argument("--title", default="Table 1: vanilla, SAM, GSAM and XSAM")
    ap.add_argument("--dry-run", action="store_true", help="build the report and print its keys; save nothing")
    args = ap.parse_args(argv)
    try:
        report = build_report(args.project, args.entity, args.group, args.title)
    except ImportError:
        print("scripts/wandb_dashboard.py: needs wandb-workspaces (pip install -e .[dashboard])", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps({"title": report.title, "blocks": len(report.blocks), **plotted_keys()}, indent=2))
        return 0
    report.save()
    print(report.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
