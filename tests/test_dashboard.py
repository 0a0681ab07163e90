"""The Table 1 dashboard as code (scripts/wandb_dashboard.py): the report builds offline into the spec that saving
would send (wandb's server lookup of the project stubbed), and every key it plots is a key a real training run
gives wandb (a 2-step demo run in process, wandb offline, its calls to wandb recorded), so a key renamed in the
trainer fails here instead of leaving an empty panel."""
import json

import pytest

from gsam.evaluation.table1 import COLUMN_SOURCES
from gsam.evaluation.tables import paper_table1
from gsam.run.experiment import run
from gsam.run.finish import table1_summary
from support import load_script
from support.cli import QUIET

wr_interface = pytest.importorskip("wandb_workspaces.reports.v2.interface")
dashboard = load_script("wandb_dashboard")


@pytest.fixture
def offline(monkeypatch):
    """Runset's project id lookup, the one server call in building a report's spec, answered here."""
    monkeypatch.setattr(wr_interface, "_get_api", lambda: None)
    monkeypatch.setattr(wr_interface, "execute_graphql", lambda api, query, variables: {"project": {"internalId": "x"}})


def spec_of(report) -> dict:
    return report._to_model().model_dump(by_alias=True, exclude_none=True)


def panel_configs(spec: dict) -> list[dict]:
    grids = [b for b in spec["spec"]["blocks"] if b.get("type") == "panel-grid"]
    return [p["config"] for g in grids for p in g["metadata"]["panelBankSectionConfig"]["panels"]]


def test_the_report_builds_offline_with_its_groups_curves_and_columns(offline):
    spec = spec_of(dashboard.build_report("gsam", "someone", group="sweep-1"))
    assert spec["project"]["name"] == "gsam" and spec["project"]["entityName"] == "someone"
    grids = [b for b in spec["spec"]["blocks"] if b.get("type") == "panel-grid"]
    assert len(grids) == 1 + 5  # the curves, then ImageNet, ReaL, V2, R, C
    for grid in grids:
        (runset,) = grid["metadata"]["runSets"]
        assert runset["grouping"] == [{"section": "config", "name": "model.value.short"},
                                      {"section": "config", "name": "sam.value.name"}]
        assert runset["filters"]["filters"] == [{"key": {"section": "run", "name": "group"}, "op": "=",
                                                 "value": "sweep-1", "disabled": False}]
    configs = panel_configs(spec)
    curves = [c["metrics"] for c in configs if c.get("xAxis") == "_step"]
    bars = [c["metrics"] for c in configs if "vertical" in c]
    assert curves == [["train/loss"], ["train/perturbed_loss"], ["train/surrogate_gap"], ["train/rho"], ["train/lr"],
                      ["val/top1"]]
    assert bars == [[f"summary_metrics.table1/{c}"] for c in ("imagenet", "real", "v2", "r", "c")]
    papers = [c["value"] for c in configs if "value" in c]
    assert len(papers) == 5 and f"| vit_b16 | {paper_table1()['vit_b16', 'vanilla']['v2']:.1f} |" in papers[2]


def test_the_dry_run_prints_the_keys_and_saves_nothing(capsys):
    assert dashboard.main(["--project", "gsam", "--entity", "someone", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["history"] == [k for _, k in dashboard.CURVES] and "table1/c" in printed["summary"]


class WandbSpy:
    """What the trainer gives wandb: the history keys of every ``run.log``, the summary keys, the config."""

    def __init__(self, monkeypatch):
        import wandb
        from wandb.sdk import wandb_run, wandb_summary

        self.history, self.summary, self.config = set(), set(), {}
        init, log, update = wandb.init, wandb_run.Run.log, wandb_summary.Summary.update

        def spy_init(*args, **kwargs):
            self.config = kwargs["config"]
            return init(*args, **kwargs)

        def spy_log(run_, data, *args, **kwargs):
            self.history |= set(data)
            return log(run_, data, *args, **kwargs)

        def spy_update(summary, d=None, *args, **kwargs):
            self.summary |= set(d or {})
            return update(summary, d, *args, **kwargs)

        monkeypatch.setattr(wandb, "init", spy_init)
        monkeypatch.setattr(wandb_run.Run, "log", spy_log)
        monkeypatch.setattr(wandb_summary.Summary, "update", spy_update)


def config_has(config: dict, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.slow
def test_every_key_the_dashboard_plots_is_one_a_training_run_logs(compose, demo_root, tmp_path, monkeypatch):
    """2 steps of the demo with wandb offline, val measured: the curves' history keys, the ImageNet column's summary
    key and the grouping config keys are what the trainer gave wandb. The other columns' summary keys are what the
    trainer's summary function (the one it called, table1_summary) writes when every set is measured (the demo's
    files have no ReaL labels, and its V2, R and C stand-ins take 7 s to write)."""
    spy = WandbSpy(monkeypatch)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose("+experiment=demo_gsam", f"data.root={demo_root}", f"output_dir={tmp_path / 'run'}",
                  *[q for q in QUIET if not q.startswith("logger.")], "logger.wandb.mode=offline",
                  "train.max_steps=2", "data.batch_size=64")
    run(cfg)
    every_set = {name: {metric: 50.0 for n, metric in COLUMN_SOURCES.values() if n == name}
                 for name, _ in COLUMN_SOURCES.values()}
    keys = dashboard.plotted_keys()
    assert sorted(set(keys["history"]) - spy.history) == []
    assert "table1/imagenet" in spy.summary
    assert sorted(set(keys["summary"]) - set(table1_summary(every_set))) == []
    assert [k for k in keys["config"] if not config_has(spy.config, k)] == []
    assert spy.config["model"]["short"] == "demo_vit" and spy.config["sam"]["name"] == "gsam"
