"""Δm: every published value of the CSO paper's Tables 1–4 from its printed metrics, errors,
sign properties, and mean ± std over seeds.

The tables are copied as printed from spec/cso-paper-notes.md §8. Printed metrics are rounded,
so a recomputed Δm can only be expected within the interval that the rounding of its inputs
allows: each printed value v with d decimals stands for [v − ½·10^−d, v + ½·10^−d], and the
relative change (M − B) / B is monotone in M and in B, so its extremes lie at the corners.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskprio.metrics import MeanStd, delta_m, mean_std

# Table 1, NYUD-v2 (MTI-Net + HRNet-18): the counted metrics only (§7: depth rmse, semseg
# mIoU, normals mean; edge is auxiliary).
NYUD_COUNTED = {"rmse": True, "mIoU": False, "mean": True}  # lower is better
TABLE_1 = """
method       rmse   mIoU   mean   dm
Independent  0.667  33.18  20.75  +0.00
GD           0.594  38.67  20.52  +9.53
MGDA         0.603  38.89  20.58  +9.21
PCGrad       0.596  38.61  20.50  +9.40
CAGrad       0.595  38.80  20.38  +9.84
Aligned-MTL  0.592  39.02  20.40  +10.17
Ours         0.565  41.10  19.54  +15.00
"""

# Table 2, PASCAL-Context: semseg mIoU, parts mIoU, saliency mIoU (not maxF), normals mean.
PASCAL_COUNTED = {"semseg_mIoU": False, "parts_mIoU": False, "sal_mIoU": False, "mean": True}
TABLE_2 = """
method       semseg_mIoU  parts_mIoU  sal_mIoU  mean   dm
Independent  60.30        60.56       67.05     14.76  +0.00
GD           62.17        61.15       67.99     14.70  +1.47
MGDA         61.75        61.69       67.32     14.77  +1.15
PCGrad       62.47        61.46       67.86     14.59  +1.86
CAGrad       62.22        61.89       67.46     14.97  +1.14
Aligned-MTL  62.43        62.05       67.94     14.76  +1.83
Ours         63.86        63.05       68.30     14.33  +3.70
"""

# Table 3, Cityscapes (SegNet): all four metrics count.
CITYSCAPES_COUNTED = {"mIoU": False, "pix_acc": False, "abs_err": True, "rel_err": True}
TABLE_3 = """
method             mIoU   pix_acc  abs_err  rel_err  dm
Single-task        74.36  93.22    0.0128   29.98    +0.00
Cross-Stitch       74.05  93.17    0.0162   116.66   -79.04
RotoGrad           73.38  92.97    0.0147   82.31    -47.81
GD                 74.13  93.13    0.0166   116.00   -79.32
GD_w/_Recon        71.17  93.21    0.0136   43.18    -12.63
MGDA               70.74  92.19    0.0130   47.09    -16.22
MGDA_w/_Recon      71.01  92.17    0.0129   33.41    -4.46
GradDrop           74.08  93.08    0.0173   115.79   -80.48
GradDrop_w/_Recon  74.17  93.11    0.0134   41.37    -10.69
PCGrad             73.98  93.08    0.02     114.50   -78.39
PCGrad_w/_Recon    74.18  93.14    0.0136   46.02    -14.92
CAGrad             73.81  93.02    0.0153   88.29    -53.81
CAGrad_w/_Recon    74.22  93.10    0.0130   38.27    -7.38
Ours               74.75  93.39    0.0125   41.60    -10.08
"""

# Table 4, NYUD-v2 ablation; its baseline is Table 1's Independent row.
TABLE_4 = """
method       rmse   mIoU   mean   dm
Phase1_only  0.581  40.36  19.55  +13.44
Phase2_only  0.597  39.23  20.39  +10.32
seq          0.574  40.38  19.56  +13.79
mix          0.565  41.10  19.54  +15.50
"""

# Rows whose printed Δm lies outside what the rounding of their printed metrics allows, with
# the value recomputed from those metrics (two decimals).
MISPRINTS = {
    # Notes §8: −8.93 recomputed. A printed Rel Err of 42.98 instead of 41.60 would give −10.08.
    ("cityscapes", "Ours"): -8.93,
    # Not in the notes: −13.65 recomputed. With mIoU 74.17 instead of 71.17 (one digit) it
    # recomputes to −12.64, within rounding of the printed −12.63: likely a typo in the mIoU.
    ("cityscapes", "GD_w/_Recon"): -13.65,
    # Notes §8: the "mix" row repeats Table 1's Ours metrics, and Table 1 prints +15.00.
    ("nyud_ablation", "mix"): 15.00,
    # Notes §8: recomputes to +10.15.
    ("nyud_ablation", "Phase2_only"): 10.15,
}


def _parse(table: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    header, *lines = table.strip().splitlines()
    columns = header.split()[1:]
    rows = {}
    for line in lines:
        name, *values = line.split()
        rows[name] = dict(zip(columns, values, strict=True))
    return columns, rows


def _floats(row: dict[str, str]) -> dict[str, float]:
    return {name: float(value) for name, value in row.items()}


def _half_unit(printed: str) -> float:
    return float(Decimal(1).scaleb(Decimal(printed).as_tuple().exponent)) / 2


def _rounding_interval(
    method: dict[str, str], baseline: dict[str, str], lower_is_better: dict[str, bool]
) -> tuple[float, float]:
    low = high = 0.0
    for name, is_lower in lower_is_better.items():
        m, b = float(method[name]), float(baseline[name])
        dm_, db = _half_unit(method[name]), _half_unit(baseline[name])
        corners = [
            (m + sm * dm_ - (b + sb * db)) / (b + sb * db) * (-1 if is_lower else 1)
            for sm in (-1, 1)
            for sb in (-1, 1)
        ]
        low += min(corners)
        high += max(corners)
    scale = 100 / len(lower_is_better)
    return low * scale, high * scale


def _cases():
    tables = [
        ("nyud", TABLE_1, NYUD_COUNTED, "Independent", None),
        ("pascal", TABLE_2, PASCAL_COUNTED, "Independent", None),
        ("cityscapes", TABLE_3, CITYSCAPES_COUNTED, "Single-task", None),
        ("nyud_ablation", TABLE_4, NYUD_COUNTED, "Independent", TABLE_1),
    ]
    for table_name, table, counted, baseline_name, baseline_table in tables:
        _, rows = _parse(table)
        baseline = _parse(baseline_table or table)[1][baseline_name]
        for method_name, row in rows.items():
            yield pytest.param(
                table_name, method_name, row, baseline, counted, id=f"{table_name}-{method_name}"
            )


CASES = list(_cases())


@pytest.mark.parametrize(("table", "method_name", "row", "baseline", "counted"), CASES)
def test_published_delta_m_within_rounding(table, method_name, row, baseline, counted):
    metrics = {name: value for name, value in row.items() if name != "dm"}
    printed = float(row["dm"])
    recomputed = delta_m(_floats(metrics), _floats(baseline), counted)
    low, high = _rounding_interval(metrics, baseline, counted)
    assert low <= recomputed <= high
    # The printed Δm is itself rounded to two decimals.
    is_consistent = low - 0.005 <= printed <= high + 0.005
    if (table, method_name) in MISPRINTS:
        assert not is_consistent, "a known misprint now reproduces: update MISPRINTS"
        assert round(recomputed, 2) == MISPRINTS[table, method_name]
    else:
        assert is_consistent, f"recomputed {recomputed:.4f}, printed {printed}, [{low}, {high}]"


@pytest.mark.parametrize(("table", "counted"), [(TABLE_1, NYUD_COUNTED), (TABLE_2, PASCAL_COUNTED)])
def test_tables_1_and_2_reproduce_to_the_printed_digits(table, counted):
    # Closer than the rounding interval: the notes say these reproduce exactly, except
    # Aligned-MTL on NYUD (10.1774 → 10.18 vs 10.17 printed).
    _, rows = _parse(table)
    baseline = _floats(next(iter(rows.values())))
    for name, row in rows.items():
        values = _floats(row)
        recomputed = delta_m(values, baseline, counted)
        tolerance = 0.0075 if name == "Aligned-MTL" else 0.005
        assert abs(recomputed - values["dm"]) <= tolerance, name


def test_cityscapes_pcgrad_abs_err_is_over_rounded():
    # "0.02" passes the rounding test only because two decimals allow 0.015–0.025: the
    # recomputed −84.71 is far from the printed −78.39. Printed with four decimals like the
    # other rows, an Abs Err of 0.0168 reproduces −78.39 within rounding.
    _, rows = _parse(TABLE_3)
    baseline, pcgrad = rows["Single-task"], rows["PCGrad"]
    assert round(delta_m(_floats(pcgrad), _floats(baseline), CITYSCAPES_COUNTED), 2) == -84.71
    low, high = _rounding_interval({**pcgrad, "abs_err": "0.0168"}, baseline, CITYSCAPES_COUNTED)
    assert low <= -78.39 <= high
    assert high - low < 0.6  # ±0.25 where "0.02" allows ±10


def test_collection_form_counts_every_baseline_metric():
    baseline = {"rmse": 0.667, "mIoU": 33.18, "mean": 20.75}
    method = {"rmse": 0.565, "mIoU": 41.10, "mean": 19.54, "not_counted": 1.0}
    by_mapping = delta_m(method, baseline, NYUD_COUNTED)
    assert delta_m(method, baseline, {"rmse", "mean"}) == by_mapping
    assert delta_m(method, baseline, ["rmse", "mean"]) == by_mapping
    # A mapping selects: extra metrics in both dicts are ignored.
    assert delta_m({**method, "PAcc": 70.0}, {**baseline, "PAcc": 65.0}, NYUD_COUNTED) == by_mapping


def test_hand_worked_value():
    # (+10 % on a higher-is-better metric) and (−20 % on a lower-is-better one): (10 + 20) / 2.
    assert delta_m({"acc": 55.0, "err": 0.8}, {"acc": 50.0, "err": 1.0}, {"err"}) == pytest.approx(
        15.0
    )


@pytest.mark.parametrize(
    ("method", "baseline", "lower", "error", "match"),
    [
        (
            {"a": 1.0},
            {"a": 1.0, "b": 2.0},
            {"a": False, "b": True},
            ValueError,
            "`method` has no metric 'b'",
        ),
        (
            {"a": 1.0, "b": 1.0},
            {"a": 1.0},
            {"a": False, "b": True},
            ValueError,
            "`baseline` has no metric 'b'",
        ),
        ({"a": 1.0}, {"a": 1.0}, {"z"}, ValueError, r"names \['z'\], which `baseline` lacks"),
        ({"a": 1.0}, {"a": 0.0}, {"a": True}, ValueError, r"`baseline`\['a'\] is 0.0; Δm divides"),
        ({"a": 1.0}, {"a": -2.0}, {"a": True}, ValueError, "needs it positive"),
        ({"a": math.nan}, {"a": 1.0}, {"a": True}, ValueError, r"`method`\['a'\] must be finite"),
        ({"a": 1.0}, {"a": 1.0}, {}, ValueError, "No metric to count"),
        ({"a": 1.0}, {"a": 1.0}, "a", TypeError, "not the string 'a'"),
    ],
)
def test_errors_name_the_metric_and_the_fix(method, baseline, lower, error, match):
    with pytest.raises(error, match=match):
        delta_m(method, baseline, lower)


NAMES = ["m0", "m1", "m2", "m3"]
positive = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def _setting(draw):
    size = draw(st.integers(min_value=1, max_value=len(NAMES)))
    names = NAMES[:size]
    baseline = {name: draw(positive) for name in names}
    method = {name: draw(positive) for name in names}
    lower = {name: draw(st.booleans()) for name in names}
    return method, baseline, lower


@settings(derandomize=True, deadline=None)
@given(_setting())
def test_baseline_against_itself_is_zero(setting):
    _, baseline, lower = setting
    assert delta_m(baseline, baseline, lower) == 0.0


@settings(derandomize=True, deadline=None)
@given(_setting(), st.floats(min_value=1e-3, max_value=10.0), st.data())
def test_improving_any_metric_raises_delta_m(setting, step, data):
    method, baseline, lower = setting
    name = data.draw(st.sampled_from(sorted(method)))
    improved = dict(method)
    # Improving means down for a lower-is-better metric (staying positive), up otherwise.
    improved[name] = method[name] / (1 + step) if lower[name] else method[name] * (1 + step)
    assert delta_m(improved, baseline, lower) > delta_m(method, baseline, lower)


@settings(derandomize=True, deadline=None)
@given(_setting(), st.floats(min_value=1e-3, max_value=1e3))
def test_scale_of_a_metric_does_not_matter(setting, scale):
    method, baseline, lower = setting
    name = sorted(method)[0]
    scaled_method = {**method, name: method[name] * scale}
    scaled_baseline = {**baseline, name: baseline[name] * scale}
    assert delta_m(scaled_method, scaled_baseline, lower) == pytest.approx(
        delta_m(method, baseline, lower), rel=1e-9, abs=1e-9
    )


def test_mean_std():
    # Sample standard deviation (n − 1) by default; population with ddof=0.
    assert mean_std([1.0, 2.0, 3.0]) == MeanStd(2.0, 1.0, 3)
    assert mean_std([1.0, 2.0, 3.0], ddof=0).std == pytest.approx(math.sqrt(2 / 3))
    assert str(mean_std([9.53, 9.61, 9.45])) == "9.53 ± 0.08"
    single = mean_std([4.0])
    assert single.mean == 4.0 and math.isnan(single.std) and single.num_runs == 1
    with pytest.raises(ValueError, match="`values` is empty"):
        mean_std([])
