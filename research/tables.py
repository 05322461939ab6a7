"""The evidence tables: every method beside its controls (mean +- std over seeds, paired differences), and the
paper's class-removal figures (6 and 8) with their controls. benchmarks/evidence.py, real_mnist.py, photos.py and
reproduce.py print them."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from hf_fcr.demo.compare import METHOD_ORDER


def mean_std(values: list[float], scale: float = 100.0) -> str:
    """``mean ± std`` of ``values`` times ``scale`` (percent by default), one decimal."""
    values = [scale * v for v in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f}"


def method_table(runs: list[dict], title: str) -> str:
    """Every method's test worst-group and average accuracy (mean +- std over ``runs``, the seeds' results.json),
    the paired per-seed difference FCR - method, the diagnosis, auto's choices and the inferred attribute's
    agreement with the truth."""
    lines = [
        f"### {title} ({len(runs)} seeds: {', '.join(str(r['seed']) for r in runs)})\n",
        "| method | worst-group % | average % | FCR - method, worst group (paired, points) |",
        "|---|---|---|---|",
    ]
    for method in METHOD_ORDER:
        m = [r["methods"][method] for r in runs]
        diff = [r["methods"]["fcr"]["worst_group"] - x["worst_group"] for r, x in zip(runs, m)]
        paired = "-" if method == "fcr" else mean_std(diff)
        worst, average = mean_std([x["worst_group"] for x in m]), mean_std([x["average"] for x in m])
        lines.append(f"| {method} | {worst} | {average} | {paired} |")
    d = [r["diagnosis"] for r in runs]
    autos = ", ".join(f"seed {r['seed']}: {r['methods']['auto']['choice']['method']}" for r in runs)
    ari = [r["methods"]["fcr_inferred_attribute"]["agreement_ari"] for r in runs]
    inferred = [
        r["methods"]["fcr_inferred_attribute"]["worst_group"] - r["methods"]["fcr_random_attribute"]["worst_group"]
        for r in runs
    ]
    carried = sum(x["one_weight"] for x in d)
    lines += [
        "",
        f"- Diagnosis (validation): one weight carries the cue on {carried} of {len(d)} seeds; FCR gain "
        f"{mean_std([x['fcr_gain'] for x in d])} points vs random attributes "
        f"{mean_std([max(x['random_gains']) for x in d])} "
        f"(best draw); M' accuracy {mean_std([x['fictitious_accuracy'] for x in d])} %, from its top feature alone "
        f"{mean_std([x['top_accuracy']['top1'] for x in d])} %; top-10 logit share "
        f"{mean_std([x['logit_share']['top10'] for x in d])} %.",
        f"- Verdict (seed {runs[0]['seed']}): {d[0]['verdict']}",
        f"- auto chose: {autos}.",
        *auto_refit_lines(runs),
        *cold_fit_lines(runs),
        *probe_lines(runs),
        "- Inferred attribute (per-class KMeans): agreement with the truth (adjusted Rand index) "
        f"{mean_std(ari, 1.0)}; "
        f"FCR with it minus FCR with random attributes, worst group (paired): {mean_std(inferred)} points.",
    ]
    return "\n".join(lines) + "\n"


# the row of each head-level method auto can choose: what that method gives alone on all of validation (tuned again)
ALONE = {"dfr": "dfr", "class_balanced": "dfr_class_balanced"}


def auto_refit_lines(runs: list[dict]) -> list[str]:
    """auto refits its head-level choice on all of validation with the C validated on half of it; before, it tuned C
    again, which gave exactly the chosen method's own row. The paired difference (auto - that row) over the seeds
    where auto chose a head-level fix."""
    pairs = [
        (r["methods"]["auto"], r["methods"][ALONE[r["methods"]["auto"]["choice"]["method"]]])
        for r in runs
        if r["methods"]["auto"]["choice"]["method"] in ALONE
    ]
    if not pairs:
        return []
    same_c = sum(a["choice"].get("C") == alone["choice"].get("C") for a, alone in pairs)
    return [
        f"- auto's refit with the C its half of validation chose, against the chosen method tuned again on all of "
        f"validation (auto before this release), {len(pairs)} seeds: worst group "
        f"{mean_std([a['worst_group'] - alone['worst_group'] for a, alone in pairs])} points, average "
        f"{mean_std([a['average'] - alone['average'] for a, alone in pairs])} points (paired); the same C on "
        f"{same_c} of {len(pairs)}."
    ]


def cold_fit_lines(runs: list[dict]) -> list[str]:
    """The batched solver's head fits against scikit-learn's, one at a time, run in the same process on the same
    features: at scikit-learn's default tolerance (``methods["cold_fits"]``) and at 1e-8 (``methods["exact_fits"]``,
    the exact optimum), which scikit-learn's default fits are also set against. Auto's choices, and each method's
    test worst group within half a point, paired per seed."""
    lines = []
    for ours, control, what in (
        (None, "cold_fits", "Batched head fits against scikit-learn's at its default tolerance"),
        (None, "exact_fits", "Batched head fits against the exact optimum (scikit-learn at 1e-8)"),
        ("cold_fits", "exact_fits", "scikit-learn's fits at its default tolerance against the exact optimum"),
    ):
        paired, mine, theirs = _pairs(runs, ours, control)
        if not paired:
            continue
        choices = [(a["auto"]["choice"], b["auto"]["choice"]) for a, b in zip(mine, theirs)]
        same_method = sum(a["method"] == b["method"] for a, b in choices)
        same_c = sum(a == b for a, b in choices)
        cells, close = [], 0
        for method in ("dfr", "dfr_class_balanced", "auto"):
            diffs = [a[method]["worst_group"] - b[method]["worst_group"] for a, b in zip(mine, theirs)]
            close += sum(abs(d) <= 0.005 + 1e-9 for d in diffs)
            average = [a[method]["average"] - b[method]["average"] for a, b in zip(mine, theirs)]
            cells.append(f"{method} {mean_std(diffs)} / {mean_std(average)}")
        lines.append(
            f"- {what} ({len(paired)} seeds, paired, same process): auto's method the same on {same_method} of "
            f"{len(paired)}, its C too on {same_c}; test worst group within half a point on {close} of "
            f"{3 * len(paired)} fits; difference, test worst group / average in points: " + "; ".join(cells) + "."
        )
    return lines


def probe_lines(runs: list[dict]) -> list[str]:
    """FCR with the library's M' against FCR with M' fit by scikit-learn in the same process on the same features,
    at its default tolerance (``methods["default_probe"]``) and at 1e-10 (``methods["exact_probe"]``, the exact
    optimum), which the default fit is also set against: the same edits (class, input) and test worst group, paired
    per seed."""
    lines = []
    for ours, control, what in (
        (None, "default_probe", "FCR's M' against scikit-learn's at its default tolerance"),
        (None, "exact_probe", "FCR's M' against the exact optimum (scikit-learn at 1e-10)"),
        ("default_probe", "exact_probe", "scikit-learn's M' at its default tolerance against the exact optimum"),
    ):
        paired, mine, theirs = _pairs(runs, ours, control)
        if not paired:
            continue
        mine, theirs = [m["fcr"] for m in mine], [t["fcr"] for t in theirs]
        same = sum(_edits(a) == _edits(b) for a, b in zip(mine, theirs))
        diffs = [a["worst_group"] - b["worst_group"] for a, b in zip(mine, theirs)]
        lines.append(
            f"- {what} ({len(paired)} seeds, paired, same process): the same edits on {same} of {len(paired)}; "
            f"difference in test worst group {mean_std(diffs)} points."
        )
    return lines


def _pairs(runs: list[dict], ours: str | None, control: str) -> tuple[list[dict], list[dict], list[dict]]:
    """The runs that have ``control`` (and ``ours``), with, for each, the library's rows (``ours``: a control's rows
    instead) and the control's."""
    paired = [r for r in runs if control in r["methods"] and (ours is None or ours in r["methods"])]
    mine = [r["methods"] if ours is None else r["methods"][ours] for r in paired]
    return paired, mine, [r["methods"][control] for r in paired]


def _edits(fcr: dict) -> list[list[int]]:
    """FCR's edited weights as ``[class, input]`` pairs: from its edit records, or as the controls store them."""
    if "edits" in fcr and fcr["edits"] and isinstance(fcr["edits"][0], dict):
        return [[e["class_index"], e["col"]] for e in fcr["edits"]]
    return [list(e) for e in fcr.get("edits", [])]


def figure8_table(runs: list[dict], r_values: list[float], title: str) -> str:
    """Figure 8 (sub-class removal): forget / retain per rate, SCA beside grad x act, with the plain argmax
    (Algorithm 2) and with the supporting-sign rule, mean +- std over the seeds; then how often the two selections
    picked different weights."""
    header = "| r | SCA forget | SCA retain | grad x act forget | grad x act retain |"
    lines = [title]
    for rule, suffix in (("plain argmax (Algorithm 2)", ""), ("supporting-sign rule", "_supporting")):
        if "sca" + suffix not in runs[0]["curves"]:
            continue
        lines += ["", f"{rule}:", "", header, "|---|---|---|---|---|"]
        for i, r in enumerate(r_values):
            cells = [
                mean_std([run["curves"][sel + suffix][i][key] for run in runs])
                for sel in ("sca", "grad_x_act")
                for key in ("forget", "retain")
            ]
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
        if "retain_same_class" in runs[0]["curves"]["sca" + suffix][-1]:
            same = [
                mean_std([run["curves"][sel + suffix][-1]["retain_same_class"] for run in runs])
                for sel in ("sca", "grad_x_act")
            ]
            lines.append(
                f"\nAt r = {r_values[-1]}, the other sub-classes of the removed one's own class keep {same[0]} (SCA) "
                f"and {same[1]} (grad x act)."
            )
        if "random" + suffix in runs[0]["curves"]:
            last = [run["curves"]["random" + suffix][-1] for run in runs]
            lines.append(
                f"\nControl, one random weight of the class's row{' (supporting)' if suffix else ''} at r = "
                f"{r_values[-1]}: forget {mean_std([x['forget'] for x in last])}, retain "
                f"{mean_std([x['retain'] for x in last])}, the removed one's class-mates "
                f"{mean_std([x['retain_same_class'] for x in last])}."
            )
        if "weights" in runs[0]:
            sca, gxa = ([run["weights"][sel + suffix] for run in runs] for sel in ("sca", "grad_x_act"))
            differ = [sum(a[v] != b[v] for v in a) for a, b in zip(sca, gxa)]
            lines.append(
                f"\nSCA and grad x act picked different weights for {', '.join(map(str, differ))} of {len(sca[0])} "
                "sub-classes (per seed)."
            )
    return "\n".join(lines) + "\n"


def figure6_table(runs: list[dict], model: str, sizes: tuple[int, ...]) -> str:
    """Figures 6-7 (class removal): each class alone with 1-3 weights under both candidate rules (forgotten-class
    accuracy, the worst class, the others' change), then ``sizes`` classes at once; mean +- std over the seeds."""
    lines = [
        f"| removal ({model}, {len(runs)} seeds) | candidates | forgotten class acc. % | worst class % | "
        "others' change (points) |",
        "|---|---|---|---|---|",
    ]
    for mode in ("supporting", "all"):
        for n in (1, 2, 3):
            per_seed = [[x for x in r["single"][mode] if x["num_weights"] == n] for r in runs]
            if not per_seed[0]:
                continue
            lines.append(
                f"| one class, {n} weight(s) | {mode} | "
                f"{mean_std([statistics.mean(x['forget'] for x in p) for p in per_seed])} | "
                f"{mean_std([max(x['forget'] for x in p) for p in per_seed])} | "
                f"{mean_std([statistics.mean(x['retain_change'] for x in p) for p in per_seed])} |"
            )
    for k in sizes:
        rows = [next(x for x in r["multi"] if x["num_removed"] == k) for r in runs]
        lines.append(
            f"| {k} classes at once, 1 weight each | supporting | {mean_std([x['removed_accuracy'] for x in rows])} | "
            f"- | {mean_std([x['retained_change'] for x in rows])} |"
        )
    return "\n".join(lines) + "\n"


def removal_controls_table(runs: list[dict]) -> str:
    """One class removed with one weight beside its controls: the output mask, one random supporting weight of the
    row, and what remains (a linear probe on the head's input recognising the class), mean +- std over the seeds of
    the per-class means."""

    def per_seed(key: str, rows_of: Callable[[dict], list[dict]]) -> str:
        return mean_std([statistics.mean(x[key] for x in rows_of(r)) for r in runs])

    def fcr(r: dict) -> list[dict]:
        return [x for x in r["single"]["supporting"] if x["num_weights"] == 1]

    def controls(r: dict) -> list[dict]:
        return r["controls"]

    base = [statistics.mean(r["base_per_class"]) for r in runs]
    retain = [statistics.mean(x["retain"] for x in fcr(r)) for r in runs]
    probe = per_seed("probe_balanced_accuracy", lambda r: r["controls"])
    return (
        "\n".join(
            [
                f"| one class, one parameter ({len(runs)} seeds) | forgotten class acc. % | others' acc. % |",
                "|---|---|---|",
                f"| none (the model) | {mean_std(base)} | {mean_std(base)} |",
                f"| FCR: one weight, SCA, supporting | {per_seed('forget', fcr)} | {mean_std(retain)} |",
                f"| control: one random supporting weight of the row (Eq. 7) | {per_seed('random_forget', controls)} "
                f"| {per_seed('random_retain', controls)} |",
                f"| control: output mask (bias to -inf) | {per_seed('mask_forget', controls)} | "
                f"{per_seed('mask_retain', controls)} |",
                "",
                f"What remains: a linear probe on the head's input recognises the removed class at {probe} balanced "
                "accuracy (50 = chance), before and after the edit alike (the features do not change).",
            ]
        )
        + "\n"
    )
