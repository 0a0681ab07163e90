"""Table 6 of the GSAM paper next to ours: the ViT-B/32 ablation inside GSAM's own recipe (App. C.2), constant ρ
or the decayed ρ_t, each with and without the ascent step. It is the paper's like-for-like comparison of GSAM with
SAM (Table 1's SAM rows are Chen et al. 2021's). The paper's numbers are data in gsam/evaluation/tables.py; the
runs are configs/experiment/vit_b32_table6_<arm>.yaml (scripts/sweep.py sweep=table6)."""
from __future__ import annotations

from gsam.evaluation.tables import TABLE6_ARMS, TABLE6_MODEL, TABLE6_PAPER, TABLE6_TITLES

# Table 1's ViT-B/32 rows that are runs of a Table 6 arm (the same config: the SAM row's constant rho, Table 4's
# GSAM row); the vanilla row is ours at 300 epochs, where Table 6's vanilla is Table 5's 600
TABLE1_ARMS = {"vanilla": "vanilla", "sam": "const_rho", "gsam": "decayed_rho_ascent"}
# the ascent's gain at each schedule, and the schedule's without the ascent: what Table 6 is about
CONTRASTS = (("ascent at constant ρ", "const_rho_ascent", "const_rho"),
             ("ascent at decayed ρ_t", "decayed_rho_ascent", "decayed_rho"),
             ("decayed ρ_t against constant ρ, no ascent", "decayed_rho", "const_rho"))


def table6_arm(run: dict) -> str | None:
    """The arm a run of configs/experiment/vit_b32_table6_<arm>.yaml is (from results.json's name), else None."""
    prefix = f"{TABLE6_MODEL}_table6_"
    name = str(run.get("name", ""))
    arm = name[len(prefix):] if name.startswith(prefix) else None
    return arm if run.get("model") == TABLE6_MODEL and arm in TABLE6_ARMS else None


def table6_rows(table6_runs: list[dict], other_runs: list[dict]) -> list[dict]:
    """One row per arm that has a run, in Table 6's order, the paper's ImageNet top-1 beside ours (a row of
    gsam.evaluation.table1.rows' shape, method ``table6:<arm>``). An arm without a run of its own takes Table 1's
    ViT-B/32 run of the same config (TABLE1_ARMS)."""
    ours = {table6_arm(r): r for r in table6_runs}
    for r in other_runs:
        arm = TABLE1_ARMS.get(r.get("method")) if r.get("model") == TABLE6_MODEL else None
        if arm is not None:
            ours.setdefault(arm, r)
    out = []
    for arm in ("vanilla", *TABLE6_ARMS):
        if arm not in ours:
            continue
        run, paper = ours[arm], TABLE6_PAPER[arm]
        top1 = run.get("imagenet")
        row = {"model": TABLE6_MODEL, "method": f"table6:{arm}", "name": run.get("name", ""), "table1": False,
               "imagenet": {"ours": top1, "paper": paper, "diff": None if top1 is None else top1 - paper}}
        out.append(row)
    return out


def _fmt(x, signed=False):
    return "—" if x is None else (f"{x:+.1f}" if signed else f"{x:.1f}")


def table6_markdown(rows: list[dict]) -> str:
    """Table 6's layout: each arm, its run, ours / the paper's ImageNet top-1 (ours − paper), and the contrasts
    the table is about, the paper's and ours."""
    lines = ["Table 6 (ViT-B/32 in GSAM's recipe, App. C.2):", "",
             "| Table 6 arm | run | ImageNet: ours / paper (ours − paper) |", "|---|---|---|"]
    by_arm = {r["method"].split(":", 1)[1]: r for r in rows}
    for arm, r in by_arm.items():
        c = r["imagenet"]
        lines.append(f"| {TABLE6_TITLES[arm]} | {r['name']} | {_fmt(c['ours'])} / {_fmt(c['paper'])} "
                     f"({_fmt(c['diff'], True)}) |")
    lines += ["", "| contrast | ours | paper |", "|---|---|---|"]
    for title, a, b in CONTRASTS:
        ours = [by_arm.get(x, {}).get("imagenet", {}).get("ours") for x in (a, b)]
        diff = ours[0] - ours[1] if None not in ours else None
        lines.append(f"| {title} | {_fmt(diff, True)} | {TABLE6_PAPER[a] - TABLE6_PAPER[b]:+.1f} |")
    lines += ["", "Top-1 %, one run per arm. Table 6's vanilla is Table 5's "
              "600-epoch run; ours is the Table 1 recipe's 300 epochs. Both constant-ρ arms run at the SAM row's ρ "
              "(Table 6 does not print its constant ρ; configs/method/sam.yaml)."]
    return "\n".join(lines) + "\n"
